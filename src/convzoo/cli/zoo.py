"""Subcommands that look at the zoo: models, summary, rf, compare, info."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from convzoo.cli._args import add_command, parse_input


def _cmd_models(args: argparse.Namespace) -> int:
    import convzoo
    from convzoo.analysis import count_params, model_costs

    task = None if args.task == "all" else args.task
    names = convzoo.list_models(args.pattern or "*", task=task)
    if not names:
        what = f" matches {args.pattern!r}" if args.pattern else ""
        kind = f"{task} " if task else ""
        print(f"no registered {kind}model{what}; try `convzoo models --task all` for the full list", file=sys.stderr)
        return 1
    classifiers = [n for n in names if convzoo.get_model_card(n).task == "classification"]
    costs = model_costs(classifiers)
    rows = []
    for name in names:
        card = convzoo.get_model_card(name)
        # Segmentation and detection networks: parameters only; their mult-adds depend on the image and, for a
        # detector, on how many regions it keeps.
        params, macs = costs[name] if name in costs else (count_params(name), None)
        top1 = card.top1_accuracy() if card.task == "classification" else None
        rows.append((name, params, macs, card.input_size[-1], top1, card.paper.year, card.paper, card.task))
    key = {"name": None, "params": 1, "macs": 2, "year": 5, "top1": 4}[args.sort]
    if key is not None:
        rows.sort(key=lambda r: (r[key] is None, r[key] or 0), reverse=args.reverse)
    elif args.reverse:
        rows.reverse()
    show_task = len({r[-1] for r in rows}) > 1 or rows[0][-1] != "classification"
    task_col = f" {'task':<14}" if show_task else ""
    header = f"{'model':<22}{task_col} {'params':>13} {'mult-adds':>16} {'input':>5} {'top-1*':>6}  {'year':<4}  paper"
    print(header)
    print("-" * len(header))
    for name, params, macs, size, top1, year, paper, kind in rows:
        acc = f"{top1:.1f}" if top1 is not None else "-"
        first_author = paper.authors.split(",")[0].split()[-1]
        task_cell = f" {kind:<14}" if show_task else ""
        mult = f"{macs:>16,}" if macs is not None else f"{'-':>16}"
        print(
            f"{name:<22}{task_cell} {params:>13,} {mult} {size:>5} {acc:>6}  {year:<4}  "
            f"{first_author} et al., {paper.title}"
        )
    note = " *top-1 accuracy reported in the paper on its data set (see `convzoo info NAME`)." if classifiers else ""
    print(f"{len(rows)} models.{note}")
    if task == "classification":
        print("Segmentation and detection networks: `convzoo models --task segmentation`, `--task detection`, `all`.")
    return 0


def _cmd_summary(args: argparse.Namespace) -> int:
    import convzoo

    print(convzoo.summary(args.model, args.input, depth=args.depth).format(args.format))
    return 0


def _cmd_rf(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    import convzoo
    from convzoo.analysis import measure_receptive_field, plot_effective_receptive_field

    card = convzoo.get_model_card(args.model)
    input_size = args.input or card.input_size
    torch.manual_seed(args.seed)
    model = convzoo.create_model(args.model, weights=args.weights)
    field = measure_receptive_field(model, input_size, args.layer, samples=args.samples)
    rf = field.theoretical
    shape = "x".join(map(str, field.output_shape[1:]))
    print(f"{args.model}, layer {field.layer} ({field.layer_type}), output {shape}")
    if rf is None or rf.is_global:
        print("theoretical receptive field: global (every unit sees the whole input)")
    else:
        print(
            f"theoretical receptive field: {rf} pixels, jump {'x'.join(dict.fromkeys(f'{j:g}' for j in rf.jump))}, "
            f"first unit centred at {tuple(float(s) for s in rf.start)}"
        )
    cy, cx = field.centre
    print(f"effective receptive field: centred at ({cy:.1f}, {cx:.1f}), radius (std) {field.radius:.1f} pixels")
    out = Path(args.out or f"{args.model}_{field.layer.replace('.', '_')}_erf.png")
    title = f"{args.model} {field.layer}: effective receptive field"
    plot_effective_receptive_field(field.erf, out, theoretical=rf, centre_unit=field.centre_unit, title=title)
    np.save(out.with_suffix(".npy"), field.erf)
    print(f"wrote {out} and {out.with_suffix('.npy')}")
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    import json

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
    rows = compare_models(names, throughput=not args.no_throughput, timing=timing, progress=not args.no_progress)
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
    print(f"  classes:    {card.num_classes}" + (" (the background included)" if card.task == "detection" else ""))
    if card.task != "classification":
        print(f"  task:       {card.task} (convzoo train trains it with the {card.task} task)")
    for result in card.reported or ():
        print(f"  reported:   {result}")
    if not card.reported:
        print("  reported:   none tabulated by the paper")
    if card.notes:
        print(f"  notes:      {card.notes}")
    for entry in convzoo.list_weights(card.name):
        top1 = f", top-1 {entry.metrics['top1']:.2f}%" if "top1" in entry.metrics else ""
        default = " (default: pretrained=True)" if entry.default else ""
        print(f"  weights:    {entry.name} ({entry.dataset}{top1}){default}")
    if not convzoo.list_weights(card.name):
        print("  weights:    none registered (weights= a file of your own)")
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub,
        "models",
        "list registered models with parameters, multiply-adds and paper",
        "List the registered models: parameters, multiply-adds at the model's own input size, input side, the top-1\n"
        "accuracy its paper reports, year and paper. The counts are measured once on the meta device and kept in\n"
        "$CONVZOO_HOME/model-costs.json until the code changes.",
        """
        convzoo models
        convzoo models 'resnext*' --sort macs --reverse
        convzoo models 'wrn*' --sort top1
        convzoo models --task segmentation
        """,
    )
    p.add_argument("pattern", nargs="?", help="shell-style pattern of names, e.g. 'resnet*' (default: all)")
    p.add_argument(
        "--task",
        choices=["classification", "segmentation", "detection", "all"],
        default="classification",
        help="which networks: the classifiers (default), those built on them for segmentation or detection, or all",
    )
    p.add_argument(
        "--sort", choices=["name", "params", "macs", "year", "top1"], default="name", help="order of the rows"
    )
    p.add_argument("--reverse", action="store_true", help="reverse the order (largest first)")
    p.set_defaults(func=_cmd_models)

    p = add_command(
        sub,
        "summary",
        "per-layer table of output shapes, parameters and multiply-adds",
        "Trace one forward pass on the meta device (no memory used) and print one row per layer: output shape,\n"
        "parameters, multiply-adds, activation memory and receptive field, then the totals.",
        """
        convzoo summary resnet50
        convzoo summary resnet50 --input 3x160x160 --depth 3
        convzoo summary vgg16 --format markdown
        """,
    )
    p.add_argument("model", help="registered model name (see `convzoo models`)")
    p.add_argument(
        "--input",
        type=parse_input,
        default=None,
        help="CxHxW, NxCxHxW, HxW or one side (default: the model's own input size)",
    )
    p.add_argument("--depth", type=int, default=2, help="nesting levels of modules to show (default: 2)")
    p.add_argument("--format", choices=["table", "markdown", "csv", "json"], default="table", help="output format")
    p.set_defaults(func=_cmd_summary)

    p = add_command(
        sub,
        "rf",
        "theoretical and effective receptive field of a layer, with a heat map",
        "Print a layer's theoretical receptive field (size, jump, centre of the first unit) and measure its\n"
        "effective receptive field (Luo et al. 2016): the mean input gradient of a central unit, saved as a heat\n"
        "map (PNG) with the theoretical field outlined, and as an array (.npy).",
        """
        convzoo rf resnet18
        convzoo rf resnet18 --layer layer2 --out charts/resnet18_layer2.png
        convzoo rf vgg16 --weights vgg16.safetensors --samples 32
        """,
    )
    p.add_argument("model", help="registered model name (see `convzoo models`)")
    p.add_argument("--layer", help="qualified module name (default: the last spatial layer)")
    p.add_argument(
        "--input",
        type=parse_input,
        default=None,
        help="CxHxW, NxCxHxW, HxW or one side (default: the model's own input size)",
    )
    p.add_argument("--weights", help="weights file or name (default: random initialisation)")
    p.add_argument("--samples", type=int, default=16, help="random inputs to average the gradient over (default: 16)")
    p.add_argument("--seed", type=int, default=0, help="seed of the weights and the random inputs (default: 0)")
    p.add_argument("--out", help="PNG path (default: MODEL_LAYER_erf.png); the array goes beside it as .npy")
    p.set_defaults(func=_cmd_rf)

    p = add_command(
        sub,
        "compare",
        "table and accuracy-against-compute chart of matching models",
        "Tabulate the matching models' parameters, multiply-adds, reported accuracy and measured speed, and chart\n"
        "accuracy against compute. Writes PATH.json, and PATH.png and PATH.svg when any model reports an accuracy.",
        """
        convzoo compare 'resnet*' --out charts/resnets
        convzoo compare 'densenet*' --no-throughput --sort params
        convzoo compare 'mobilenet*' --device cuda --batch-size 64
        """,
    )
    p.add_argument("pattern", nargs="?", help="shell-style pattern of names, e.g. 'resnet*' (default: all)")
    p.add_argument("--out", default="compare", help="path stem of the chart (.png, .svg) and the data (.json)")
    p.add_argument(
        "--sort", choices=["name", "params", "macs", "top1", "speed"], default="macs", help="order of the rows"
    )
    p.add_argument("--no-throughput", action="store_true", help="skip measuring speed")
    p.add_argument("--no-progress", action="store_true", help="no progress bar while measuring")
    p.add_argument("--device", default="cpu", help="device to time on: cpu (default) or cuda")
    p.add_argument("--batch-size", type=int, default=8, help="images per timed forward pass (default: 8)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (default: PyTorch's choice)")
    p.add_argument("--warmup", type=int, default=2, help="untimed passes before timing (default: 2)")
    p.add_argument("--repeats", type=int, default=5, help="timed passes; the median is reported (default: 5)")
    p.set_defaults(func=_cmd_compare)

    p = add_command(
        sub,
        "info",
        "the model card: paper, input, reported results",
        "Print a model's card: its paper, expected input and normalisation, classes, and the results its paper\n"
        "reports.",
        """
        convzoo info resnet50
        convzoo info wrn28_10
        """,
    )
    p.add_argument("model", help="registered model name (see `convzoo models`)")
    p.set_defaults(func=_cmd_info)
