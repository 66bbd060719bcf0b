"""The viz subcommand: looking inside a network (filters, feature maps, top images, activation maximisation,
saliency, embeddings); each action writes PNGs."""

from __future__ import annotations

import argparse

from convzoo.cli import viz_attribution, viz_inspect
from convzoo.cli._args import add_command


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add the subcommand to ``sub``."""
    p = add_command(
        sub,
        "viz",
        "look inside a network: filters, feature maps, top images, activation maximisation, saliency, embeddings",
        "Visualisations of what a network has learned, for any registered model (its registered weights, or\n"
        "random ones with a warning) and any training checkpoint the engine wrote. Each action writes PNG files\n"
        "and prints where; the library functions in convzoo.viz return the arrays.",
        """
        convzoo viz filters resnet20
        convzoo viz saliency resnet20 image.png --method gradcam --layer layer3
        convzoo viz embed runs/shapes/best.pt --data shapes
        """,
    )
    actions = p.add_subparsers(
        dest="action",
        required=True,
        metavar="ACTION",
        help="filters, maps, top, embed, maximize or saliency (`convzoo viz ACTION --help`)",
    )
    viz_inspect.add_actions(actions)
    viz_attribution.add_actions(actions)
