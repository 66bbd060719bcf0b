"""The weights subcommand: list the registered weights and show one entry in full."""

from __future__ import annotations

import argparse
import fnmatch

from convzoo.cli._args import add_command


def _where(entry) -> str:  # noqa: ANN001 - a WeightsEntry
    from convzoo.weights import find_local_copy

    if entry.shipped:
        return "in the package"
    if not entry.source.startswith(("http://", "https://")):
        return entry.source
    return (
        f"cached at {path}" if (path := find_local_copy(entry.source, entry.file_name)) else "downloaded on first use"
    )


def _cmd_list(args: argparse.Namespace) -> int:
    from convzoo.pretrained import list_weights

    entries = [
        w
        for w in list_weights()
        if fnmatch.fnmatchcase(w.model, args.pattern) or fnmatch.fnmatchcase(w.name, args.pattern)
    ]
    if args.dataset:
        entries = [w for w in entries if w.dataset.lower().startswith(args.dataset.lower())]
    if not entries:
        raise KeyError(
            f"no registered weights match {args.pattern!r}" + (f" on {args.dataset}" if args.dataset else "")
        )
    width = max(len(w.name) for w in entries)
    print(f"{'name':<{width}}  {'dataset':<11} {'top-1':>6}  {'input':>5}  where")
    for w in sorted(entries, key=lambda w: (w.model, not w.default, w.name)):
        top1 = f"{w.metrics['top1']:.2f}" if "top1" in w.metrics else "-"
        size = w.preprocessing.crop_size if w.preprocessing else "-"
        mark = " (default)" if w.default else ""
        print(f"{w.name:<{width}}  {w.dataset:<11} {top1:>6}  {size:>5}  {_where(w)}{mark}")
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    from convzoo.pretrained import get_weights

    w = get_weights(args.name)
    print(f"{w.name}{' (the default of ' + w.model + ')' if w.default else ''}")
    print(f"  model:         {w.model}" + (f" with {w.model_args}" if w.model_args else ""))
    print(f"  file:          {w.file_name} ({_where(w)})")
    if w.source:
        print(f"  source:        {w.source}")
    print(f"  sha256:        {w.sha256 or 'not known'}")
    print(f"  trained on:    {w.dataset}, {w.num_classes} classes")
    for key, value in w.metrics.items():
        label = {"top1": "top-1", "top5": "top-5"}.get(key, key)
        print(f"  {label + ':':<14} {value:.2f}")
    if w.evaluation:
        print(f"  measured:      {w.evaluation}")
    if w.preprocessing:
        p = w.preprocessing
        resize = f"resize {p.resize_size} ({p.interpolation}), " if p.resize_size else ""
        print(f"  preprocessing: {resize}centre crop {p.crop_size}, mean {list(p.mean)}, std {list(p.std)}")
    if w.recipe:
        print(f"  recipe:        {w.recipe}")
    if w.license:
        print(f"  licence:       {w.license}")
    if w.classes:
        shown = ", ".join(w.classes[:10]) + (f", ... ({len(w.classes)} in all)" if len(w.classes) > 10 else "")
        print(f"  classes:       {shown}")
    if w.description:
        print(f"  about:         {w.description}")
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub,
        "weights",
        "list registered weights, or show one entry",
        "Weights registered by name: those shipped with convzoo (trained on CIFAR-10, loaded offline) and\n"
        "torchvision's ImageNet weights for the networks both share (downloaded once when a network is reachable,\n"
        "or read from torch hub's cache or $CONVZOO_HOME/weights). Each entry states its file's SHA-256, the\n"
        "accuracy it was measured at and how, its preprocessing and its recipe. Load one with\n"
        "create_model(MODEL, weights=NAME), or pretrained=True for a model's default.",
        """
        convzoo weights list
        convzoo weights list 'resnet*' --dataset cifar
        convzoo weights show resnet20.cifar10
        """,
    )
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION", help="list or show")
    listing = actions.add_parser("list", help="list registered weights")
    listing.add_argument("pattern", nargs="?", default="*", help="model or weights name pattern (default: all)")
    listing.add_argument("--dataset", help="only weights trained on this data set (prefix, any case)")
    listing.set_defaults(func=_cmd_list)
    show = actions.add_parser("show", help="show one registered entry in full")
    show.add_argument("name", help="registered weights name (see `convzoo weights list`)")
    show.set_defaults(func=_cmd_show)
