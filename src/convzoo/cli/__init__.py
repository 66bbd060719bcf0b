"""The `convzoo` command. Thin: every subcommand calls the library."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from convzoo.cli import (
    detect,
    distill,
    evaluate,
    experiment,
    export,
    probe,
    segment,
    texture,
    train,
    transfer,
    viz,
    weights,
    zoo,
)

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    from convzoo import __version__

    parser = argparse.ArgumentParser(
        prog="convzoo",
        description="Convolutional networks of the lectures: list, inspect, compare, train and evaluate them.",
        epilog="`convzoo COMMAND --help` describes a command, with examples.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    zoo.add_parsers(sub)
    train.add_parsers(sub)
    evaluate.add_parsers(sub)
    export.add_parsers(sub)
    weights.add_parsers(sub)
    experiment.add_parsers(sub)
    transfer.add_parsers(sub)
    probe.add_parsers(sub)
    distill.add_parsers(sub)
    viz.add_parsers(sub)
    texture.add_parsers(sub)
    segment.add_parsers(sub)
    detect.add_parsers(sub)
    return parser


def _stdout_closed() -> int:
    """The reader of standard output has gone (`convzoo ... | head`): end quietly, as Python's docs recommend.

    Standard output is pointed at devnull so that the interpreter's final flush does not fail again.
    """
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # not a file descriptor (e.g. captured output)
        pass
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        try:
            code = args.func(args)
        except (KeyError, ValueError, TypeError, FileNotFoundError, FileExistsError, ImportError, RuntimeError) as e:
            message = e.args[0] if isinstance(e, KeyError) and e.args else e
            print(f"convzoo: error: {message}", file=sys.stderr)
            code = 2
        sys.stdout.flush()
    except BrokenPipeError:
        return _stdout_closed()
    return code
