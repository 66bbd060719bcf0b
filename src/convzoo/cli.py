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

    print(convzoo.summary(args.model, args.input, depth=args.depth).format(args.format))
    return 0


def _cmd_rf(args: argparse.Namespace) -> int:
    from pathlib import Path

    import numpy as np
    import torch

    import convzoo
    from convzoo.analysis import effective_receptive_field, plot_effective_receptive_field

    card = convzoo.get_model_card(args.model)
    input_size = args.input or card.input_size
    torch.manual_seed(args.seed)
    model = convzoo.create_model(args.model, weights=args.weights)
    table = convzoo.summary(model, input_size, depth=10**6)
    fields = {r.name: r for r in table.rows}
    layer = args.layer or _last_spatial_layer(table)
    if layer not in fields:
        import difflib

        close = difflib.get_close_matches(layer, list(fields), n=5)
        hint = f"; did you mean {', '.join(close)}?" if close else "; `convzoo summary MODEL --depth 9` lists them"
        raise KeyError(f"{args.model} has no layer named {layer!r}{hint}")
    row = fields[layer]
    rf = row.rf
    print(f"{args.model}, layer {layer} ({row.type}), output {'x'.join(map(str, row.output_shape[1:]))}")
    if rf is None or rf.is_global:
        print("theoretical receptive field: global (every unit sees the whole input)")
    else:
        print(
            f"theoretical receptive field: {rf} pixels, jump {'x'.join(dict.fromkeys(f'{j:g}' for j in rf.jump))}, "
            f"first unit centred at {tuple(float(s) for s in rf.start)}"
        )
    erf = effective_receptive_field(model, layer, input_size, samples=args.samples)
    h, w = row.output_shape[-2:]
    mass = erf / erf.sum()
    ys, xs = np.indices(erf.shape)
    cy, cx = (mass * ys).sum(), (mass * xs).sum()
    spread = np.sqrt((mass * ((ys - cy) ** 2 + (xs - cx) ** 2)).sum())
    print(f"effective receptive field: centred at ({cy:.1f}, {cx:.1f}), radius (std) {spread:.1f} pixels")
    out = Path(args.out or f"{args.model}_{layer.replace('.', '_')}_erf.png")
    plot_effective_receptive_field(
        erf, out, theoretical=rf, centre_unit=(h // 2, w // 2), title=f"{args.model} {layer}: effective receptive field"
    )
    np.save(out.with_suffix(".npy"), erf)
    print(f"wrote {out} and {out.with_suffix('.npy')}")
    return 0


def _last_spatial_layer(table) -> str:
    spatial = [r for r in table.rows if r.output_shape is not None and len(r.output_shape) == 4 and r.depth == 1]
    return spatial[-1].name


def _cmd_compare(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    import torch

    import convzoo
    from convzoo.analysis.compare import (
        Timing,
        compare_models,
        comparison_records,
        comparison_table,
        plot_accuracy_vs_compute,
    )

    names = convzoo.list_models(args.pattern or "*")
    if not names:
        print(f"no registered model matches {args.pattern!r}", file=sys.stderr)
        return 1
    if args.threads:
        torch.set_num_threads(args.threads)
    timing = Timing(args.device, args.batch_size, torch.get_num_threads(), args.warmup, args.repeats)
    rows = compare_models(names, throughput=not args.no_throughput, timing=timing)
    key = {"name": "name", "params": "params", "macs": "macs", "top1": "top1", "speed": "images_per_s"}[args.sort]
    rows.sort(key=lambda r: (getattr(r, key) is None, getattr(r, key) or 0))
    print(comparison_table(rows, timing))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(
        json.dumps({"timing": str(timing), "models": comparison_records(rows)}, indent=1)
    )
    written = [out.with_suffix(".json")]
    if any(r.top1 is not None for r in rows):
        written += plot_accuracy_vs_compute(rows, out)
    print("wrote " + ", ".join(map(str, written)))
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
    p.add_argument("--format", choices=["table", "markdown", "csv", "json"], default="table")
    p.set_defaults(func=_cmd_summary)

    p = sub.add_parser("rf", help="theoretical and effective receptive field of a layer, with a heat map")
    p.add_argument("model")
    p.add_argument("--layer", help="qualified module name (default: the last spatial layer)")
    p.add_argument("--input", type=_parse_input, default=None, help="CxHxW, default: the model's own input size")
    p.add_argument("--weights", help="weights file or name (default: random initialisation)")
    p.add_argument("--samples", type=int, default=16, help="random inputs to average the gradient over")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="PNG path (default: MODEL_LAYER_erf.png); the array goes beside it as .npy")
    p.set_defaults(func=_cmd_rf)

    p = sub.add_parser("compare", help="table and accuracy-against-compute chart of matching models")
    p.add_argument("pattern", nargs="?", help="shell-style pattern, e.g. 'resnet*'")
    p.add_argument("--out", default="compare", help="path stem of the chart (.png, .svg) and the data (.json)")
    p.add_argument("--sort", choices=["name", "params", "macs", "top1", "speed"], default="macs")
    p.add_argument("--no-throughput", action="store_true", help="skip measuring speed")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--threads", type=int, default=0, help="CPU threads (default: PyTorch's choice)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.set_defaults(func=_cmd_compare)

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
