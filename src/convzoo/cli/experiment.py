"""The experiment subcommand: the lectures' experiments, each training what it needs and writing a report folder."""

from __future__ import annotations

import argparse
import shlex
import textwrap

from convzoo.cli._args import TypedValue, add_command, positive_int


def _cmd_degradation(args: argparse.Namespace) -> int:
    from convzoo.experiments.degradation import run_degradation

    overrides = {key: getattr(args, key) for key in ("lr", "batch_size") if getattr(args, key) is not None}
    result = run_degradation(
        args.depths,
        args.data,
        setting=args.setting,
        epochs=args.epochs,
        recipe=args.recipe,
        recipe_overrides=overrides,
        image_size=args.image_size,
        train_size=args.train_size,
        test_size=args.test_size,
        window=args.window,
        seed=args.seed,
        data_root=args.data_root,
        device=args.device,
        amp=args.amp,
        channels_last=args.channels_last,
        deterministic=args.deterministic,
        progress=False if args.no_progress else None,
        out=args.out,
    )
    if result.stopped:
        print(f"interrupted; to continue, run: {_same_command(args, result.out)}")
        return 130
    print()
    for line in result.findings:
        print(textwrap.fill(line, width=100, subsequent_indent="  "))
    print(f"report: {result.report}")
    return 0


def _same_command(args: argparse.Namespace, out: object) -> str:
    """The command line that continues this experiment: the options given, and the folder it writes."""
    words = ["convzoo", "experiment", "degradation", "--depths", *map(str, args.depths)]
    for key, value in sorted(vars(args).items()):
        if key in ("command", "experiment", "func", "depths", "out") or value is None:
            continue
        flag = "--" + key.replace("_", "-")
        if key == "channels_last":
            words.append(flag if value else "--no-channels-last")
        elif isinstance(value, bool):
            words += [flag] if value else []
        else:
            words += [flag, str(value)]
    return shlex.join([*words, "--out", str(out)])


_DEGRADATION_EXAMPLES = """
convzoo experiment degradation                           # fast: 16x16 digits, 8 epochs, ResNet/plain 20 and 56
convzoo experiment degradation --depths 20 32 --epochs 4 --out runs/degradation-small
convzoo experiment degradation --data ~/data/cifar10 --epochs 30 --train-size 10000
convzoo experiment degradation --data cifar10 --data-root ~/data --depths 20 32 44 56
convzoo experiment degradation --depths 20 32 --epochs 4 --out runs/degradation-small   # again: continue it
"""


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add the ``experiment`` command and its experiments to ``sub``."""
    p = add_command(
        sub,
        "experiment",
        "run an experiment of the lectures and write its report",
        "Run an experiment of the lectures: it trains the networks it needs through the training engine and\n"
        "writes a report folder (report.md with an evidence header, results.csv, chart.png, and the run folder\n"
        "of every training run). `convzoo experiment EXPERIMENT --help` describes one.",
        _DEGRADATION_EXAMPLES,
    )
    actions = p.add_subparsers(dest="experiment", required=True, metavar="EXPERIMENT", help="degradation")
    d = add_command(
        actions,
        "degradation",
        "plain vs residual networks of growing depth (He et al. 2016, Figures 1 and 6)",
        "The degradation experiment: plain networks (ResNets without shortcuts) and residual networks\n"
        "of each depth are trained with one recipe on the same data. The report says, from the recorded training\n"
        "errors (last epoch, and the mean of the last --window epochs), whether the deeper plain network has the\n"
        "higher training error, and whether the residual networks reverse it; when an effect does not show, it\n"
        "says what may hide it. The chart draws every network's training error (thin, dashed) and test error\n"
        "(bold), one colour per network.\n"
        "\n"
        "Settings: fast (default on the embedded digits and shapes: 16x16 images, 8 epochs, recipe resnet-cifar\n"
        "with batch 64, no flips) and full (default on other data, meant for CIFAR-10: the paper's recipe\n"
        "resnet-cifar at 32x32, its schedule compressed into --epochs, 30 by default). Every run uses --seed.\n"
        "\n"
        "Running the same command with the same --out again skips the finished runs, resumes an interrupted one\n"
        "and writes the report; a folder that holds a finished report is refused.",
        _DEGRADATION_EXAMPLES,
    )
    d.add_argument(
        "--depths",
        type=int,
        nargs="+",
        default=[20, 56],
        metavar="DEPTH",
        help="two or more depths of CIFAR networks plain{d} and resnet{d}: 20, 32, 44, 56, 110, 1202 (default: 20 56)",
    )
    d.add_argument(
        "--data",
        default="digits",
        help="digits (default), shapes, cifar10 (with --data-root) or a path: an .npz file, a folder of "
        "train.npz/test.npz, or an image folder",
    )
    d.add_argument("--data-root", help="folder holding a named real data set (default: $CONVZOO_DATA)")
    d.add_argument(
        "--setting",
        choices=["auto", "fast", "full"],
        default="auto",
        help="defaults to start from (auto: fast on digits and shapes, full otherwise)",
    )
    d.add_argument("--epochs", type=positive_int, help="training length of every network (default: the setting's)")
    d.add_argument("--recipe", help="named recipe (see `convzoo recipes`; default: resnet-cifar)")
    d.add_argument(
        "--lr", type=TypedValue(float), help="peak learning rate (default: the recipe's, scaled with --batch-size)"
    )
    d.add_argument("--batch-size", type=positive_int, help="batch size (default: the setting's)")
    d.add_argument("--image-size", type=positive_int, help="image side (default: 16 fast, 32 full)")
    d.add_argument(
        "--train-size", type=positive_int, help="train on a class-balanced subset of this many images (default: all)"
    )
    d.add_argument(
        "--test-size", type=positive_int, help="evaluate on a class-balanced subset of this many test images"
    )
    d.add_argument("--window", type=positive_int, default=3, help="final epochs averaged in the verdict (default: 3)")
    d.add_argument("--seed", type=int, default=0, help="seed of every run and of the subsets (default: 0)")
    d.add_argument("--out", help="experiment folder (default: runs/degradation-TIME); again to continue")
    d.add_argument("--device", default="auto", help="auto (default), cpu or cuda")
    d.add_argument(
        "--amp",
        choices=["auto", "off", "bf16", "fp16"],
        default="auto",
        help="mixed precision of the runs (default auto: the fastest the device runs natively)",
    )
    d.add_argument(
        "--channels-last",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="channels-last memory format (default: whichever is measured faster)",
    )
    d.add_argument("--deterministic", action="store_true", help="deterministic kernels (reproducible, float32)")
    d.add_argument("--no-progress", action="store_true", help="no progress bars")
    d.set_defaults(func=_cmd_degradation)
