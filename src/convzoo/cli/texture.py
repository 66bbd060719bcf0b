"""The texture-bias subcommand: the cue-conflict test of Geirhos et al. (2019) on generated or given stimuli."""

from __future__ import annotations

import argparse
import math

from convzoo.cli._args import add_command, positive_int


def _cmd_texture_bias(args: argparse.Namespace) -> int:
    from convzoo.viz.texture import measure_shape_bias, write_shape_bias_report

    result = measure_shape_bias(
        args.model, args.stimuli, weights=args.weights, count=args.count, seed=args.seed, batch_size=args.batch_size
    )
    paths = write_shape_bias_report(result, args.out)
    for name, bias in zip(result.categories, result.per_category, strict=True):
        print(f"{name:>12}: {'-' if math.isnan(bias) else f'{bias:.3f}'}")
    overall = "undefined (no decision for either cue)" if math.isnan(result.overall) else f"{result.overall:.3f}"
    print(f"shape bias: {overall} over {result.count} stimuli ({result.dropped} dropped: same shape and texture)")
    print(f"chart: {paths.chart}\ntable: {paths.markdown}, {paths.csv}")
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add the subcommand to ``sub``."""
    p = add_command(
        sub,
        "texture-bias",
        "measure shape vs texture bias on cue-conflict stimuli (Geirhos et al. 2019)",
        "Shows the network stimuli whose shape says one class and whose texture another, and counts its\n"
        "decisions: shape bias = shape decisions / (shape + texture decisions); decisions for neither class\n"
        "do not count, and stimuli whose shape and texture are one class are dropped.\n"
        "\n"
        "  --stimuli shapes   generated silhouettes of the shapes data set, each filled with the texture of\n"
        "                     another class, for a network trained on the shapes classes (all or some)\n"
        "  --stimuli FOLDER   Geirhos's stimuli, named <shape><n>-<texture><m>.png (airplane1-bicycle2.png),\n"
        "                     for a network with ImageNet's 1000 classes, scored over the 16 categories\n"
        "                     (a category's probability is the mean over its ImageNet classes)\n"
        "\n"
        "MODEL_OR_CHECKPOINT is a training checkpoint (best.pt or last.pt) or a registered model name\n"
        "(with --weights). Writes shape_bias.png (per category, the fraction of shape decisions, and the\n"
        "overall bias), shape_bias.md and shape_bias.csv to --out.",
        """
        convzoo texture-bias runs/shapes/best.pt --stimuli shapes
        convzoo texture-bias resnet50 --weights resnet50.tv_imagenet1k_v1 --stimuli ~/cue-conflict --out bias-r50
        """,
    )
    p.add_argument("model", metavar="MODEL_OR_CHECKPOINT", help="training checkpoint, or registered model name")
    p.add_argument(
        "--stimuli",
        required=True,
        metavar="shapes|FOLDER",
        help="'shapes' (generated), or a folder of cue-conflict images",
    )
    p.add_argument("--weights", help="for a model name: registered weights, or a file (convzoo or torchvision format)")
    p.add_argument(
        "--out", default="texture-bias", metavar="DIR", help="folder for the chart and tables (default: texture-bias)"
    )
    p.add_argument(
        "--count",
        type=positive_int,
        default=1200,
        help="number of generated stimuli for --stimuli shapes (default: 1200)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the generated stimuli (default: 0)")
    p.add_argument("--batch-size", type=positive_int, default=100, help="images per forward pass (default: 100)")
    p.set_defaults(func=_cmd_texture_bias)
