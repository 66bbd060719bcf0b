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


def _parse_value(text: str):
    import ast

    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _train_config(args: argparse.Namespace):
    import dataclasses
    from pathlib import Path

    from convzoo.train import TrainConfig
    from convzoo.train.recipes import Recipe

    settings: dict = {}
    if args.config:
        import yaml

        try:
            loaded = yaml.safe_load(Path(args.config).read_text()) or {}
        except FileNotFoundError:
            raise FileNotFoundError(f"config file {args.config} does not exist") from None
        except yaml.YAMLError as e:
            raise ValueError(f"config file {args.config} is not valid YAML: {e}") from None
        if not isinstance(loaded, dict):
            raise ValueError(f"config file {args.config} must hold a mapping of settings")
        settings.update(loaded)
    config_fields = {f.name for f in dataclasses.fields(TrainConfig)}
    recipe_fields = {f.name for f in dataclasses.fields(Recipe)} - {"name", "source"}
    recipe_overrides = dict(settings.pop("recipe_overrides", {}) or {})
    model_args = dict(settings.pop("model_args", {}) or {})
    for key in list(settings):
        if key in recipe_fields and key not in config_fields:
            recipe_overrides[key] = settings.pop(key)
    unknown = set(settings) - config_fields
    if unknown:
        raise ValueError(
            f"unknown setting(s) {sorted(unknown)} in {args.config}; accepted: training settings "
            f"{sorted(config_fields)} and recipe settings {sorted(recipe_fields)}"
        )
    cli = {
        "model": args.model,
        "data": args.data,
        "data_root": args.data_root,
        "recipe": args.recipe,
        "weights": args.weights,
        "image_size": args.image_size,
        "out": args.out,
        "device": args.device,
        "amp": args.amp,
        "channels_last": args.channels_last,
        "clip_grad": args.clip_grad,
        "ema": args.ema,
        "seed": args.seed,
    }
    settings.update({k: v for k, v in cli.items() if v is not None})
    for flag in ("resume", "compile", "deterministic", "sync_bn", "skip_corrupt", "tensorboard"):
        if getattr(args, flag):
            settings[flag] = True
    if args.no_progress:
        settings["progress"] = False
    for key, value in (
        ("epochs", args.epochs),
        ("iterations", args.iterations),
        ("lr", args.lr),
        ("batch_size", args.batch_size),
        ("weight_decay", args.weight_decay),
    ):
        if value is not None:
            recipe_overrides[key] = value
    for item in args.arch or []:
        if "=" not in item:
            raise ValueError(f"--arch expects KEY=VALUE, e.g. --arch zero_init_residual=True; got {item!r}")
        key, value = item.split("=", 1)
        model_args[key] = _parse_value(value)
    return TrainConfig(**settings, recipe_overrides=recipe_overrides, model_args=model_args)


def _cmd_train(args: argparse.Namespace) -> int:
    from convzoo.train import Trainer

    config = _train_config(args)
    result = Trainer(config).run()
    if result.stopped_early:
        print(f"resume with: convzoo train --out {result.out} --resume (and the same settings)")
        return 130
    print(
        f"done in {result.seconds:.1f} s: test accuracy {result.test_top1:.2f}% (top-5 {result.test_top5:.2f}%), "
        f"best {result.best_top1:.2f}%; run folder {result.out}"
    )
    return 0


def _cmd_recipes(args: argparse.Namespace) -> int:
    from convzoo.train import RECIPES

    for recipe in RECIPES.values():
        print(f"{recipe.name}: {recipe.source}")
        if args.verbose:
            for key, value in recipe.as_dict().items():
                if key not in ("name", "source"):
                    print(f"    {key}: {value}")
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    import torch

    from convzoo.data import Augment, FastLoader, load_dataset
    from convzoo.train import evaluate, load_trained

    model, data = load_trained(args.checkpoint)
    channels, size = data["image_size"][0], data["image_size"][-1]
    name = args.data or data["name"]
    _, test = load_dataset(name, root=args.data_root, image_size=size, in_chans=channels)
    if test.num_classes != len(data["classes"]):
        raise ValueError(
            f"{name} has {test.num_classes} classes but the checkpoint was trained on {len(data['classes'])} "
            f"({', '.join(data['classes'][:10])}{', ...' if len(data['classes']) > 10 else ''})"
        )
    device = torch.device(args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    loader = FastLoader(
        test,
        batch_size=args.batch_size,
        shuffle=False,
        augment=Augment(mean=tuple(data["mean"]), std=tuple(data["std"]), out_size=size),
        device=device,
    )
    result = evaluate(model.to(device), loader, device=device)
    print(
        f"{args.checkpoint}: {name} test set, {int(result['n'])} images: top-1 accuracy {result['top1']:.2f}% "
        f"(error {100 - result['top1']:.2f}%), top-5 accuracy {result['top5']:.2f}%, loss {result['loss']:.4f}"
    )
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    import torch
    import torch.nn.functional as F
    from PIL import Image, UnidentifiedImageError

    from convzoo.train import load_trained

    model, data = load_trained(args.checkpoint)
    channels, size = data["image_size"][0], data["image_size"][-1]
    mean = torch.tensor(data["mean"]).view(-1, 1, 1)
    std = torch.tensor(data["std"]).view(-1, 1, 1)
    classes = data["classes"]
    k = min(args.top_k, len(classes))
    for path in args.images:
        try:
            with Image.open(path) as image:
                image = image.convert("L" if channels == 1 else "RGB")
                pixels = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
                x = pixels.view(image.height, image.width, channels).permute(2, 0, 1).float() / 255
        except FileNotFoundError:
            raise FileNotFoundError(f"image {path} does not exist") from None
        except (UnidentifiedImageError, OSError) as e:
            raise ValueError(f"cannot read image {path}: {e}") from None
        x = F.interpolate(x[None], size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]
        x = ((x - mean) / std)[None]
        with torch.no_grad():
            probs = model(x).softmax(dim=1)[0]
        top = probs.topk(k)
        ranked = ", ".join(f"{classes[i]} {p:.1%}" for p, i in zip(top.values.tolist(), top.indices.tolist()))
        print(f"{path}: {ranked}")
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

    p = sub.add_parser("train", help="train a model (default: ResNet-20 on the embedded digits)")
    p.add_argument("model", nargs="?", default=None, help="registered model name (default: resnet20)")
    p.add_argument("--data", help="digits, shapes, cifar10, cifar100, mnist, fashion-mnist, svhn, stl10, or a path")
    p.add_argument("--data-root", help="folder holding the named data set (default: $CONVZOO_DATA)")
    p.add_argument("--recipe", help="named recipe (see `convzoo recipes`; default: quick)")
    p.add_argument("--config", help="YAML file of settings (training and recipe settings); flags override it")
    p.add_argument("--epochs", type=int)
    p.add_argument("--iterations", type=int, help="training length in steps (overrides epochs)")
    p.add_argument("--lr", type=float, help="peak learning rate (default: the recipe's, scaled with --batch-size)")
    p.add_argument("--batch-size", type=int, help="global batch size")
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--arch", action="append", metavar="KEY=VALUE", help="architecture setting, repeatable")
    p.add_argument("--weights", help="initial weights: file, URL or registered name (fine-tuning)")
    p.add_argument("--image-size", type=int, help="image side (default: the model's input size)")
    p.add_argument("--out", help="run folder (default: runs/MODEL-DATA-TIME)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--device", help="auto (default), cpu or cuda")
    p.add_argument(
        "--amp",
        choices=["auto", "off", "bf16", "fp16"],
        help="mixed precision (default auto: the fastest the device runs natively, measured once and remembered)",
    )
    p.add_argument(
        "--channels-last",
        action=argparse.BooleanOptionalAction,
        help="channels-last memory format (default: whichever is measured faster)",
    )
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--clip-grad", type=float, help="clip the gradient norm to this value")
    p.add_argument("--ema", type=float, help="keep an exponential moving average of weights with this decay")
    p.add_argument("--seed", type=int)
    p.add_argument("--deterministic", action="store_true", help="deterministic kernels only")
    p.add_argument("--sync-bn", action="store_true", help="synchronised batch norm in distributed runs (CUDA only)")
    p.add_argument("--skip-corrupt", action="store_true", help="skip unreadable images (counted) instead of failing")
    p.add_argument("--tensorboard", action="store_true", help="also write TensorBoard logs")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("recipes", help="list the named training recipes and their sources")
    p.add_argument("-v", "--verbose", action="store_true", help="print every setting")
    p.set_defaults(func=_cmd_recipes)

    p = sub.add_parser("eval", help="evaluate a training checkpoint on a test set")
    p.add_argument("checkpoint")
    p.add_argument("--data", help="data set (default: the one it was trained on)")
    p.add_argument("--data-root")
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=int, default=256)
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser("predict", help="classify images with a training checkpoint")
    p.add_argument("checkpoint")
    p.add_argument("images", nargs="+")
    p.add_argument("--top-k", type=int, default=5)
    p.set_defaults(func=_cmd_predict)

    p = sub.add_parser("info", help="the model card: paper, input, reported results")
    p.add_argument("model")
    p.set_defaults(func=_cmd_info)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (KeyError, ValueError, TypeError, FileNotFoundError, FileExistsError, ImportError, RuntimeError) as e:
        message = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"convzoo: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
