"""The distill subcommand: a small network trained normally and distilled from a big one, with the three-row report."""

from __future__ import annotations

import argparse
from typing import Any

from convzoo.cli._args import add_command, add_recipe_flags, given_recipe_settings

# Flags of run settings, by their TrainConfig name; recipe flags are collected apart (see `add_recipe_flags`).
_RUN_SETTINGS = ("data_root", "recipe", "image_size", "seed", "device", "amp", "deterministic", "eval_batch_size")


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    """The `run_distillation` settings of the flags given (recipe flags become ``recipe_overrides``)."""
    given = vars(args)
    settings: dict[str, Any] = {k: given[k] for k in _RUN_SETTINGS if k in given}
    overrides = given_recipe_settings(args)
    if overrides:
        settings["recipe_overrides"] = overrides
    if args.no_progress:
        settings["progress"] = False
    return settings


def _cmd_distill(args: argparse.Namespace) -> int:
    from convzoo.cli.train import _arch_settings
    from convzoo.distill import run_distillation

    student_args = _arch_settings(args.student_arch, args.student) if args.student_arch else {}
    result = run_distillation(
        args.teacher,
        args.student,
        args.data,
        temperature=args.temperature,
        alpha=args.alpha,
        teacher_weights=args.teacher_weights,
        student_args=student_args,
        out=args.out,
        **_settings(args),
    )
    rows = [
        ("small model (normal training)", result.normal_top1),
        ("big model (teacher)", result.teacher_top1),
        ("small model (distillation)", result.distilled_top1),
    ]
    for label, top1 in rows:
        print(f"{label:<30} test accuracy {top1:6.2f}%  error {100 - top1:6.2f}%")
    if result.gain > 0:
        print(f"distillation beat normal training by {result.gain:.2f} points")
    elif result.gain < 0:
        print(f"distillation did not beat normal training: {-result.gain:.2f} points short")
    else:
        print("distillation tied with normal training")
    print(f"report: {result.report}")
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub,
        "distill",
        "distil a big network into a small one and compare with normal training",
        "Knowledge distillation (Hinton et al. 2015). The student is trained twice with the same recipe, epochs and\n"
        "seed: normally, on the labels, and distilled, with the loss\n"
        "\n"
        "    alpha * T^2 * KL(softmax(teacher/T) || softmax(student/T)) + (1 - alpha) * CE(student, labels)\n"
        "\n"
        "alpha weighs the teacher's soft targets and 1 - alpha the hard labels (alpha 0 is normal training, 1 learns\n"
        "from the teacher alone); the T^2 factor is always kept. The teacher is a training checkpoint (best.pt or\n"
        "last.pt) or a registered model with weights, trained on the same data set and classes; it is evaluated on\n"
        "the test set too. Without augmentation in the recipe (no crop, flip or jitter) the teacher's logits are\n"
        "computed once and fed with each batch; otherwise the teacher runs on every augmented batch.\n"
        "\n"
        "The folder (--out) holds report.md (evidence header, the lecture's three-row table: small model trained\n"
        "normally, big model, small model distilled; whether distillation won and by how much), results.csv,\n"
        "chart.png (test error of both students against epochs, the teacher's error as a line) and one engine run\n"
        "folder per student. Rerun the same command on an interrupted folder to continue its runs.",
        """
        convzoo distill --teacher runs/digits/best.pt --student resnet20 --student-arch depth=8 --data digits
        convzoo distill --teacher resnet20 --student resnet20 --student-arch depth=8 --data cifar10 \\
            --data-root ~/data --recipe modern --epochs 30 --out runs/distill-cifar10
        convzoo distill --teacher resnet56 --student resnet20 --data cifar10 --data-root ~/data -T 2 --alpha 0.5
        convzoo distill --teacher runs/r56/best.pt --student resnet20 --data cifar10 --crop-padding 0 --no-flip
        """,
    )
    s = argparse.SUPPRESS
    what = p.add_argument_group("teacher, student and data")
    what.add_argument(
        "--teacher",
        required=True,
        metavar="CHECKPOINT|MODEL",
        help="training checkpoint (best.pt, last.pt) or registered model name with weights",
    )
    what.add_argument(
        "--teacher-weights",
        metavar="NAME|FILE",
        help="for a teacher model name: registered weights name or file (default: the model's default entry)",
    )
    what.add_argument("--student", required=True, metavar="MODEL", help="registered model name of the student")
    what.add_argument(
        "--student-arch",
        action="append",
        metavar="KEY=VALUE",
        help="architecture setting of the student's family, repeatable (e.g. depth=8 makes resnet20 a ResNet-8)",
    )
    what.add_argument(
        "--data", required=True, help="the data set the teacher learned: a name (digits, cifar10, ...) or a path"
    )
    what.add_argument(
        "--data-root",
        default=s,
        metavar="FOLDER",
        help="folder holding the named data set (default: $CONVZOO_DATA, else $CONVZOO_HOME/data)",
    )
    what.add_argument("--image-size", type=int, default=s, metavar="INT", help="image side (default: the teacher's)")
    dist = p.add_argument_group("distillation")
    dist.add_argument(
        "--temperature", "-T", type=float, default=4.0, metavar="T", help="temperature of the soft targets (default 4)"
    )
    dist.add_argument(
        "--alpha",
        type=float,
        default=0.9,
        metavar="A",
        help="weight of the teacher's soft targets in [0, 1]; 1 - alpha weighs the labels (default 0.9)",
    )
    run = p.add_argument_group("run")
    run.add_argument("--out", help="experiment folder (default: runs/distill-TIME)")
    run.add_argument("--recipe", default=s, help="named recipe of both runs (see `convzoo recipes`; default: quick)")
    run.add_argument("--seed", type=int, default=s, help="seed of both runs (default: 0)")
    run.add_argument("--device", default=s, help="auto (default), cpu or cuda")
    run.add_argument("--amp", choices=["auto", "off", "bf16", "fp16"], default=s, help="mixed precision (default auto)")
    run.add_argument("--deterministic", action="store_true", default=s, help="deterministic kernels only")
    run.add_argument("--eval-batch-size", type=int, default=s, help="batch size for evaluation (default: 256)")
    run.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_recipe_flags(p.add_argument_group("recipe settings of both runs (default: the recipe's)"))
    p.set_defaults(func=_cmd_distill)
