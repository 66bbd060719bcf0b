"""Subcommands that use a training checkpoint: eval and predict."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from convzoo.cli._args import add_command, positive_int


def _cmd_eval(args: argparse.Namespace) -> int:
    import torch

    from convzoo.data import Augment, FastLoader, load_dataset
    from convzoo.train import evaluate, load_checkpoint, load_trained

    model, data = load_trained(args.checkpoint)
    saved = load_checkpoint(args.checkpoint).get("config", {})
    channels, size = data["image_size"][0], data["image_size"][-1]
    name = args.data or data["name"]
    same_data = name == data["name"]
    # Read the test split as the run did: same root, same handling of unreadable files, same seed for generated sets.
    skip_corrupt = args.skip_corrupt if args.skip_corrupt is not None else bool(saved.get("skip_corrupt", False))
    _, test = load_dataset(
        name,
        root=args.data_root or (saved.get("data_root") if same_data else None),
        image_size=size,
        in_chans=channels,
        seed=int(saved.get("seed", 0)) if same_data else 0,
        skip_corrupt=skip_corrupt,
    )
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
    # Top-5 accuracy is 100% by construction when there are five classes or fewer.
    top5 = f", top-5 accuracy {result['top5']:.2f}%" if test.num_classes > 5 else ""
    print(
        f"{args.checkpoint}: {name} test set, {int(result['n'])} images: top-1 accuracy {result['top1']:.2f}% "
        f"(error {100 - result['top1']:.2f}%){top5}, loss {result['loss']:.4f}"
    )
    return 0


def _image_paths(inputs: Sequence[str]) -> list[str]:
    """The files to classify: each path as given, and for a folder the image files in it, sorted by name."""
    from convzoo.data.readers import IMAGE_EXTENSIONS

    paths = []
    for text in inputs:
        path = Path(text)
        if path.is_dir():
            paths += sorted(
                str(p)
                for p in path.iterdir()
                if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")
            )
        else:
            paths.append(text)
    return paths


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
    paths = _image_paths(args.images)
    if not paths:
        raise FileNotFoundError(f"no image files ({', '.join(args.images)}) to classify")
    skipped = 0
    for path in paths:
        try:
            with Image.open(path) as image:
                image = image.convert("L" if channels == 1 else "RGB")
                pixels = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
                x = pixels.view(image.height, image.width, channels).permute(2, 0, 1).float() / 255
        except FileNotFoundError:
            reason = "does not exist"
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
            reason = f"cannot read image: {e}"
        else:
            reason = None
        if reason is not None:
            skipped += 1
            print(f"skipped {path}: {reason}", file=sys.stderr)
            continue
        x = F.interpolate(x[None], size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]
        x = ((x - mean) / std)[None]
        with torch.no_grad():
            probs = model(x).softmax(dim=1)[0]
        top = probs.topk(k)
        ranked = ", ".join(f"{classes[i]} {p:.1%}" for p, i in zip(top.values.tolist(), top.indices.tolist()))
        print(f"{path}: {ranked}", flush=True)
    if skipped:
        print(f"convzoo: skipped {skipped} of {len(paths)} images (see above)", file=sys.stderr)
        return 2
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub,
        "eval",
        "evaluate a training checkpoint on a test set",
        "Rebuild the network of a training checkpoint (best.pt or last.pt; the weight average when the run kept one)\n"
        "and measure top-1 accuracy (and top-5, with more than five classes) and loss on a test split, read as the\n"
        "run read it.",
        """
        convzoo eval runs/shapes/best.pt
        convzoo eval runs/cifar/last.pt --data cifar10 --data-root ~/data/cifar10 --device cuda
        """,
    )
    p.add_argument("checkpoint", help="a run's best.pt or last.pt")
    p.add_argument("--data", help="data set (default: the one it was trained on)")
    p.add_argument(
        "--data-root",
        help="folder holding the named data set (default: the run's, else $CONVZOO_DATA or $CONVZOO_HOME/data)",
    )
    p.add_argument("--device", default="auto", help="auto (default), cpu or cuda")
    p.add_argument("--batch-size", type=positive_int, default=256, help="images per batch (default: 256)")
    p.add_argument(
        "--skip-corrupt",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="skip unreadable images (counted) instead of failing (default: as the run was trained)",
    )
    p.set_defaults(func=_cmd_eval)

    p = add_command(
        sub,
        "predict",
        "classify images with a training checkpoint",
        "Print the most probable classes of each image, with their probabilities. A folder stands for the image\n"
        "files in it, sorted by name. An unreadable file is skipped with its reason; the command then ends with\n"
        "status 2 after the others.",
        """
        convzoo predict runs/shapes/best.pt image.png
        convzoo predict runs/shapes/best.pt photos/ --top-k 3
        """,
    )
    p.add_argument("checkpoint", help="a run's best.pt or last.pt")
    p.add_argument("images", nargs="+", help="image files, or folders of image files")
    p.add_argument(
        "--top-k",
        type=positive_int,
        default=5,
        help="classes to show per image (default: 5, at most the number of classes)",
    )
    p.set_defaults(func=_cmd_predict)
