"""The transfer subcommand: move a trained network to another data set by frozen features, fine-tuning, or neither."""

from __future__ import annotations

import argparse

from convzoo.cli._args import add_command, add_recipe_flags, given_recipe_settings, positive_int
from convzoo.cli.train import _classes


def _unfreeze(text: str) -> int | str:
    if text == "all":
        return text
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of stages or 'all'; got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a number of stages (0 or more) or 'all'; got {text!r}")
    return value


def _cmd_transfer(args: argparse.Namespace) -> int:
    from convzoo.transfer import MODES, run_transfer

    modes = MODES if args.mode == "all" else (args.mode,)
    result = run_transfer(
        args.source,
        args.data,
        modes=modes,
        weights=args.weights,
        classes=args.classes,
        train_size=args.train_size,
        data_root=args.data_root,
        recipe=args.recipe,
        linear_epochs=args.linear_epochs,
        unfreeze=args.unfreeze,
        backbone_lr_scale=args.backbone_lr_scale,
        seed=args.seed,
        device=args.device,
        out=args.out,
        progress=False if args.no_progress else None,
        recipe_overrides=given_recipe_settings(args),
        train_settings={"amp": args.amp},
    )
    if result.report is None:
        return 0  # not the main process of a distributed run
    for mode, accuracy in result.accuracy.items():
        print(f"{mode:>9}: test accuracy {accuracy:.2f}% (best epoch {result.best[mode]:.2f}%)")
    print(f"report: {result.report}")
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add the subcommand to ``sub``."""
    p = add_command(
        sub,
        "transfer",
        "move a trained network to another data set (frozen features, fine-tuning, from scratch)",
        "Transfer learning as the lectures tabulate it. SOURCE is a training checkpoint (best.pt or last.pt)\n"
        "or a registered model name with --weights (a registered name, or a file in convzoo's or torchvision's\n"
        "format; default: the model's shipped weights). The target images are resized and converted to the\n"
        "source's input size and channels.\n"
        "\n"
        "  scratch   the same architecture, randomly initialised, trained on the target\n"
        "  linear    the source frozen; its pre-logits features (fc7 for AlexNet, ZFNet, VGG, LeNet) computed\n"
        "            once and cached, then a linear classifier trained on them\n"
        "  finetune  a new output layer; the last --unfreeze stages (or all) trained with the head, the\n"
        "            pretrained layers at --backbone-lr-scale of the head's learning rate\n"
        "  all       the three, and the table: target, from scratch, frozen features + classifier, fine-tuned\n"
        "\n"
        "Every run goes through the training engine (checkpoints, resume, progress). The folder --out holds one\n"
        "run folder per mode and report.md, results.csv and chart.png; running the same command again with the\n"
        "same --out continues unfinished runs.",
        """
        convzoo transfer resnet20 --data digits --mode all                   # shipped CIFAR-10 weights
        convzoo transfer runs/c10-first-half/best.pt --data cifar10 --classes 5-9 --mode all --epochs 15
        convzoo transfer resnet18 --weights resnet18-f37072fd.pth --data ~/flowers --mode finetune --unfreeze 1
        """,
    )
    p.add_argument("source", help="training checkpoint, or registered model name (with --weights)")
    p.add_argument("--data", required=True, help="target data set: a name (digits, shapes, cifar10, ...) or a path")
    p.add_argument("--mode", choices=["linear", "finetune", "scratch", "all"], default="all", help="(default: all)")
    p.add_argument("--weights", help="for a model name: registered weights, or a file (convzoo or torchvision format)")
    p.add_argument(
        "--classes", type=_classes, help="use these target classes alone: indices, ranges or names (5-9, cat,dog)"
    )
    p.add_argument(
        "--train-size",
        type=positive_int,
        help="train on a class-balanced subset of this many target images (a small target data set)",
    )
    p.add_argument("--data-root", help="folder holding the named data set (default: $CONVZOO_DATA)")
    p.add_argument("--recipe", default="quick", help="training recipe of every run (default: quick)")
    p.add_argument("--linear-epochs", type=positive_int, help="epochs of the linear classifier (default: --epochs)")
    p.add_argument(
        "--unfreeze",
        type=_unfreeze,
        default="all",
        help="fine-tune the last this many stages and the head; all (default) trains every layer",
    )
    p.add_argument(
        "--backbone-lr-scale",
        type=float,
        default=0.1,
        help="learning rate of the pretrained layers as a fraction of the head's (default: 0.1)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of every run (default: 0)")
    p.add_argument("--device", default="auto", help="auto (default), cpu or cuda")
    p.add_argument(
        "--amp",
        choices=["auto", "off", "bf16", "fp16"],
        default="auto",
        help="mixed precision of every run (default auto: the fastest the device runs, measured once)",
    )
    p.add_argument("--out", help="experiment folder (default: runs/transfer-TIME)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_recipe_flags(p.add_argument_group("recipe settings of every run (default: the recipe's)"))
    p.set_defaults(func=_cmd_transfer)
