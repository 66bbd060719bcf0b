"""The `convzoo` command. Thin: every subcommand calls the library."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def _parse_input(text: str) -> tuple[int, int, int]:
    parts = text.lower().replace(",", "x").split("x")
    try:
        dims = tuple(int(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected CxHxW such as 3x224x224 (or HxW); got {text!r}") from None
    if len(dims) == 2:
        dims = (3, *dims)
    if len(dims) != 3 or min(dims) < 1:
        raise argparse.ArgumentTypeError(f"expected CxHxW such as 3x224x224 (or HxW); got {text!r}")
    return dims  # type: ignore[return-value]


def _cmd_models(args: argparse.Namespace) -> int:
    import torch

    import convzoo

    names = convzoo.list_models(args.pattern or "*")
    if not names:
        print(f"no registered model matches {args.pattern!r}; try `convzoo models` for the full list", file=sys.stderr)
        return 1
    from tqdm import tqdm

    rows = []
    # Costs are measured on the meta device (no memory, no arithmetic), a fraction of a second per model.
    for name in tqdm(names, desc="measuring", unit="model", leave=False, disable=len(names) < 8 or None):
        card = convzoo.get_model_card(name)
        with torch.device("meta"):
            model = convzoo.create_model(name)
        params = convzoo.count_params(model)
        macs = convzoo.count_macs(model, card.input_size, device="meta")
        top1 = card.top1_accuracy()
        rows.append((name, params, macs, card.input_size[-1], top1, card.paper.year, card.paper))
    key = {"name": None, "params": 1, "macs": 2, "year": 5, "top1": 4}[args.sort]
    if key is not None:
        rows.sort(key=lambda r: (r[key] is None, r[key] or 0), reverse=args.reverse)
    elif args.reverse:
        rows.reverse()
    header = f"{'model':<22} {'params':>13} {'mult-adds':>16} {'input':>5} {'top-1*':>6}  {'year':<4}  paper"
    print(header)
    print("-" * len(header))
    for name, params, macs, size, top1, year, paper in rows:
        acc = f"{top1:.1f}" if top1 is not None else "-"
        first_author = paper.authors.split(",")[0].split()[-1]
        print(
            f"{name:<22} {params:>13,} {macs:>16,} {size:>5} {acc:>6}  {year:<4}  {first_author} et al., {paper.title}"
        )
    print(f"{len(rows)} models. *top-1 accuracy reported in the paper on its data set (see `convzoo info NAME`).")
    return 0


def _cmd_summary(args: argparse.Namespace) -> int:
    import convzoo

    print(convzoo.summary(args.model, args.input, depth=args.depth))
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    import convzoo

    card = convzoo.get_model_card(args.model)
    print(f"{card.name} ({card.family} family)")
    print(f"  paper:      {card.paper.cite()}")
    if card.paper.url:
        print(f"  url:        {card.paper.url}")
    print(f"  input:      {'x'.join(map(str, card.input_size))}, mean {card.mean}, std {card.std}")
    print(f"  classes:    {card.num_classes}")
    for result in card.reported or ():
        print(f"  reported:   {result}")
    if not card.reported:
        print("  reported:   none tabulated by the paper")
    if card.notes:
        print(f"  notes:      {card.notes}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="convzoo", description="Convolutional networks of the lectures.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("models", help="list registered models with parameters, multiply-adds and paper")
    p.add_argument("pattern", nargs="?", help="shell-style pattern, e.g. 'resnet*'")
    p.add_argument("--sort", choices=["name", "params", "macs", "year", "top1"], default="name")
    p.add_argument("--reverse", action="store_true", help="largest first")
    p.set_defaults(func=_cmd_models)

    p = sub.add_parser("summary", help="per-layer table of output shapes, parameters and multiply-adds")
    p.add_argument("model")
    p.add_argument("--input", type=_parse_input, default=None, help="CxHxW, default: the model's own input size")
    p.add_argument("--depth", type=int, default=2, help="nesting levels to show")
    p.set_defaults(func=_cmd_summary)

    p = sub.add_parser("info", help="the model card: paper, input, reported results")
    p.add_argument("model")
    p.set_defaults(func=_cmd_info)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (KeyError, ValueError, TypeError, FileNotFoundError) as e:
        message = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"convzoo: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
