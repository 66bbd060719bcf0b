"""Actions of the viz subcommand: activation maximisation and saliency maps."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np

from convzoo.cli._args import positive_int


def _position(text: str) -> tuple[int, int] | None:
    if text in ("centre", "center"):
        return None
    try:
        row, col = (int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be ROW,COL (two integers) or 'centre'; got {text!r}") from None
    if row < 0 or col < 0:
        raise argparse.ArgumentTypeError(f"ROW and COL must be 0 or more; got {text!r}")
    return row, col


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number; got {text!r}") from None
    if value < 0 or not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be 0 or more; got {text!r}")
    return value


def _class_index(text: str, classes: list[str]) -> int:
    """A class given by index or by name."""
    if text.lstrip("-").isdigit():
        return int(text)
    if text in classes:
        return classes.index(text)
    import difflib

    close = difflib.get_close_matches(text, classes, n=3)
    raise KeyError(f"no class named {text!r}" + (f" (did you mean {', '.join(close)}?)" if close else ""))


def _load(args: argparse.Namespace):  # noqa: ANN202 - a convzoo.viz._load.Network
    import torch

    from convzoo.viz._load import load_network

    network = load_network(args.model, weights=args.weights)
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    network.model.to(device)
    return network


def _zoom(size: int, zoom: int | None) -> int:
    """Small images are enlarged (nearest neighbour) so that each pixel is visible: to about 256 pixels by default."""
    return zoom or max(1, math.ceil(256 / size))


def save_png(image: np.ndarray, path: Path, zoom: int = 1) -> None:
    """An image uint8 (H, W, C) as a PNG, each pixel repeated ``zoom`` times in each direction."""
    from PIL import Image

    image = image.repeat(zoom, axis=0).repeat(zoom, axis=1)
    Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(path)


def _save_curve(curve: np.ndarray, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    ax.plot(np.arange(1, len(curve) + 1), curve)
    ax.set_xlabel("step")
    ax.set_ylabel("objective (on the step's transformed image)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)


def _cmd_maximize(args: argparse.Namespace) -> int:
    from convzoo.viz.maximize import MaximizeConfig, Objective, maximize

    if (args.layer is None) == (args.target_class is None):
        raise ValueError("give --layer (with --channel for one channel) or --class, not both and not neither")
    if args.layer is None and (args.channel is not None or args.unit is not False):
        raise ValueError("--channel and --unit go with --layer")
    if args.unit is not False and args.channel is None:
        raise ValueError("--unit needs --channel")
    network = _load(args)
    if args.target_class is not None:
        objective = Objective.logit(_class_index(args.target_class, network.classes))
    elif args.channel is None:
        objective = Objective.whole_layer(args.layer)
    elif args.unit is not False:
        objective = Objective.unit(args.layer, args.channel, args.unit)
    else:
        objective = Objective.channel_mean(args.layer, args.channel)
    config = MaximizeConfig(
        steps=args.steps,
        lr=args.lr,
        seed=args.seed,
        image_size=args.size,
        param=args.param,
        decorrelate=not args.no_decorrelate,
        init=args.init,
        jitter=args.jitter,
        rotate=args.rotate,
        tv_weight=args.tv,
        l2_weight=args.l2,
    )
    result = maximize(network, objective, config)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "maximize-" + objective.describe().replace("@", "-at-").replace(",", "-")
    image_path, curve_path = out / f"{stem}.png", out / f"{stem}-curve.png"
    save_png(result.uint8(), image_path, _zoom(result.image.shape[0], args.zoom))
    name = objective.describe()
    if objective.kind == "class" and objective.target < len(network.classes):
        name += f" ({network.classes[objective.target]})"
    _save_curve(result.curve, curve_path, f"{network.label}: {name}, {args.param}")
    print(f"{name}: objective {result.start:.4g} -> {result.value:.4g} in {args.steps} steps")
    print(f"image: {image_path}")
    print(f"curve: {curve_path}")
    return 0


def _cmd_saliency(args: argparse.Namespace) -> int:
    from convzoo.viz._load import read_image
    from convzoo.viz.saliency import METHODS, attribute

    images = [(Path(p), read_image(p)) for p in args.images]  # every file is checked before the network loads
    network = _load(args)
    target = None if args.target is None else _class_index(args.target, network.classes)
    methods = METHODS if args.method == "all" else (args.method,)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for path, image in images:
        for method in methods:
            (a,) = attribute(
                network,
                image,
                method=method,
                target=target,
                layer=args.layer,
                samples=args.samples,
                noise=args.noise,
                seed=args.seed,
            )
            # An explicit Grad-CAM layer is part of the name, so that maps of several layers sit side by side.
            suffix = f"-{a.layer}" if method == "gradcam" and args.layer else ""
            written = out / f"{path.stem}-{method}{suffix}.png"
            save_png(a.overlay(alpha=args.alpha), written, _zoom(a.map.shape[0], args.zoom))
            about = f" at {a.layer}" if a.layer else ""
            print(
                f"{path.name}: predicted {_name(network, a.predicted)}; {method}{about} for "
                f"{_name(network, a.target)} (p={a.probability:.3f}): {written}"
            )
    return 0


def _name(network, index: int) -> str:  # noqa: ANN001 - a convzoo.viz._load.Network
    return f"{index} ({network.classes[index]})" if index < len(network.classes) else str(index)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", help="for a model name: registered weights, or a file (default: its shipped ones)")
    p.add_argument("--device", default="auto", help="auto (default), cpu or cuda")
    p.add_argument("--out", default="runs/viz", help="folder the PNGs are written to (default: runs/viz)")
    p.add_argument(
        "--zoom", type=positive_int, help="enlarge each pixel this many times in the PNG (default: to about 256 px)"
    )


def add_actions(actions: argparse._SubParsersAction) -> None:
    """Add this module's actions to the viz subcommand."""
    from convzoo.cli._args import add_command

    m = add_command(
        actions,
        "maximize",
        "the image that most excites a unit, a channel, a layer or a class (activation maximisation)",
        "Gradient ascent on an image, from faint noise, to maximise what a network computes: one channel's mean\n"
        "(--layer L --channel C), one unit of it (--unit: at the centre of the map, or --unit ROW,COL), a whole\n"
        "layer's mean squared activation (--layer L alone, 'deep dream'), or a class logit (--class). As in\n"
        'Olah et al., "Feature Visualization" (2017), every step sees the image randomly shifted, rescaled and\n'
        "rotated, and the image is held as a 1/frequency-scaled Fourier spectrum in decorrelated colours; total-\n"
        "variation and L2 penalties are optional. Writes the image and the objective's curve as PNGs.\n"
        "MODEL_OR_CHECKPOINT is a registered model (its registered weights, or random ones with a warning) or a\n"
        "training checkpoint (best.pt, last.pt).",
        """
        convzoo viz maximize resnet20 --layer layer3 --channel 5 --out viz
        convzoo viz maximize resnet20 --layer layer2 --channel 3 --unit --steps 512
        convzoo viz maximize resnet20 --class cat --param pixel --tv 20
        convzoo viz maximize runs/shapes/best.pt --layer layer3 --out viz   # deep dream on a whole layer
        """,
    )
    m.add_argument("model", metavar="MODEL_OR_CHECKPOINT", help="registered model name or training checkpoint")
    m.add_argument(
        "--layer", help="module name, e.g. layer3 or layer2.1.conv1 (`convzoo summary MODEL` lists the layers)"
    )
    m.add_argument("--channel", type=int, help="channel of --layer (without it: the whole layer)")
    m.add_argument(
        "--unit",
        nargs="?",
        const=None,
        default=False,
        type=_position,
        metavar="ROW,COL",
        help="one position of --channel: the centre of the map, or ROW,COL",
    )
    m.add_argument("--class", dest="target_class", metavar="CLASS", help="a class logit: index or name")
    m.add_argument("--steps", type=positive_int, default=256, help="gradient-ascent steps (default: 256)")
    m.add_argument("--lr", type=float, default=0.05, help="Adam's learning rate (default: 0.05)")
    m.add_argument("--seed", type=int, default=0, help="seed of the start and the transforms (default: 0)")
    m.add_argument("--size", type=positive_int, help="image side (default: the network's input size)")
    m.add_argument(
        "--param", choices=["fourier", "pixel"], default="fourier", help="image parameterisation (default: fourier)"
    )
    m.add_argument("--no-decorrelate", action="store_true", help="optimise the colour channels as they are")
    m.add_argument("--init", choices=["noise", "blank"], default="noise", help="the start (default: faint noise)")
    m.add_argument("--jitter", type=int, help="largest random shift per step in pixels (default: side / 16)")
    m.add_argument("--rotate", type=_non_negative, default=5.0, help="largest random rotation in degrees (default: 5)")
    m.add_argument(
        "--tv",
        type=_non_negative,
        default=0.0,
        help="total-variation penalty weight (default: 0, off; 10 to 50 smooths visibly)",
    )
    m.add_argument(
        "--l2",
        type=_non_negative,
        default=0.0,
        help="weight of the penalty on the distance from grey (default: 0, off)",
    )
    _common(m)
    m.set_defaults(func=_cmd_maximize)

    s = add_command(
        actions,
        "saliency",
        "which pixels a prediction rests on: gradients, SmoothGrad, Grad-CAM",
        "Attribution maps, computed with captum, drawn as heat maps over each image:\n"
        "\n"
        "  gradient    the largest absolute gradient of the class score over each pixel's channels\n"
        "  smoothgrad  the same averaged over --samples noisy copies of the image (noise: --noise of its range)\n"
        "  gradcam     the feature maps of --layer (default: the last tap point) weighted by their mean gradient\n"
        "  all         the three\n"
        "\n"
        "For the predicted class, or --target. Each IMAGE gives IMAGE-METHOD.png in --out (IMAGE-gradcam-LAYER.png\n"
        "with --layer).",
        """
        convzoo viz saliency resnet20 cat.png --method gradcam
        convzoo viz saliency resnet20 cat.png dog.png --method all --target cat --out viz
        convzoo viz saliency runs/shapes/best.pt shape.png --method gradcam --layer layer2
        """,
    )
    s.add_argument("model", metavar="MODEL_OR_CHECKPOINT", help="registered model name or training checkpoint")
    s.add_argument("images", nargs="+", metavar="IMAGE", help="image files (PNG, JPEG, ...)")
    s.add_argument(
        "--method", choices=["gradient", "smoothgrad", "gradcam", "all"], default="gradcam", help="(default: gradcam)"
    )
    s.add_argument("--layer", help="Grad-CAM's layer: a module name (default: the last tap point)")
    s.add_argument("--target", help="the class to explain: index or name (default: the predicted class)")
    s.add_argument("--samples", type=positive_int, default=25, help="SmoothGrad's noisy copies (default: 25)")
    s.add_argument("--noise", type=_non_negative, default=0.15, help="SmoothGrad's noise level (default: 0.15)")
    s.add_argument("--seed", type=int, default=0, help="seed of SmoothGrad's noise (default: 0)")
    s.add_argument("--alpha", type=float, default=0.5, help="weight of the heat map over the image (default: 0.5)")
    _common(s)
    s.set_defaults(func=_cmd_saliency)
