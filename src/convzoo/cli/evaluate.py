"""Subcommands that use trained weights (a training checkpoint or a registered entry): eval and predict."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from convzoo.cli._args import add_command, positive_int


def _cmd_eval(args: argparse.Namespace) -> int:
    import torch

    from convzoo.data import Augment, FastLoader, load_dataset
    from convzoo.inference import load_classifier
    from convzoo.registry import get_model_card, list_models
    from convzoo.train import evaluate, load_checkpoint
    from convzoo.train.tasks import task_for

    loaded = load_classifier(args.target, weights=args.weights)
    spec = loaded.preprocessing
    data = loaded.data
    if data is None:  # a model with registered weights: the data set must be named
        if args.data is None:
            raise ValueError(f"name the test set to evaluate {loaded.source} on with --data (e.g. --data cifar10)")
        saved: dict = {}
        trained_on = None
    else:
        saved = load_checkpoint(args.target).get("config", {})
        trained_on = data["name"]
    name = args.data or trained_on
    same_data = name == trained_on
    # Read the test split as the run did: same root, same handling of unreadable files, same seed for generated sets.
    skip_corrupt = args.skip_corrupt if args.skip_corrupt is not None else bool(saved.get("skip_corrupt", False))
    _, test = load_dataset(
        name,
        root=args.data_root or (saved.get("data_root") if same_data else None),
        image_size=spec.crop_size,
        in_chans=spec.channels,
        seed=int(saved.get("seed", 0)) if same_data else 0,
        skip_corrupt=skip_corrupt,
        task=get_model_card(saved["model"]).task if saved.get("model") in list_models(task=None) else None,
    )
    if test.num_classes != len(loaded.classes):
        raise ValueError(
            f"{name} has {test.num_classes} classes but {loaded.source} was trained on {len(loaded.classes)} "
            f"({', '.join(loaded.classes[:10])}{', ...' if len(loaded.classes) > 10 else ''})"
        )
    device = torch.device(args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    # The checkpoint's network says what it does (classification, segmentation, detection): its task measures it.
    task = task_for(saved["model"]) if saved.get("model") in list_models(task=None) else None
    loader = FastLoader(
        test,
        batch_size=args.batch_size,
        shuffle=False,
        augment=Augment(mean=tuple(spec.mean), std=tuple(spec.std), out_size=spec.crop_size),
        device=device,
        extras=task.extras if task is not None else (),
    )
    result = evaluate(loaded.model.to(device), loader, device=device, task=task)
    if "top1" not in result:
        shown = ", ".join(f"{k} {v:.4g}" for k, v in result.items() if isinstance(v, (int, float)) and k != "n")
        print(f"{loaded.source}: {name} test set, {len(test)} images: {shown}")
        return 0
    # Top-5 accuracy is 100% by construction when there are five classes or fewer.
    top5 = f", top-5 accuracy {result['top5']:.2f}%" if test.num_classes > 5 else ""
    print(
        f"{loaded.source}: {name} test set, {int(result['n'])} images: top-1 accuracy {result['top1']:.2f}% "
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
    from PIL import Image, UnidentifiedImageError

    from convzoo.inference import load_classifier

    loaded = load_classifier(args.target, weights=args.weights)
    classes = loaded.classes
    k = min(args.top_k, len(classes))
    paths = _image_paths(args.images)
    if not paths:
        raise FileNotFoundError(f"no image files ({', '.join(args.images)}) to classify")
    skipped = 0
    for path in paths:
        try:
            with Image.open(path) as image:
                probs = loaded.probabilities(image)[0]
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
        "evaluate a training checkpoint, or a model's registered weights, on a test set",
        "Rebuild the network of a training checkpoint (best.pt or last.pt; the weight average when the run kept one),\n"
        "or build a registered model with its weights (--weights; its default entry without), and measure top-1\n"
        "accuracy (and top-5, with more than five classes) and loss on a test split: a checkpoint's read as the run\n"
        "read it, a weights entry's with that entry's normalisation at its input size.",
        """
        convzoo eval runs/shapes/best.pt
        convzoo eval runs/cifar/last.pt --data cifar10 --data-root ~/data/cifar10 --device cuda
        convzoo eval resnet20 --data cifar10            # the shipped resnet20.cifar10 weights
        convzoo eval resnet56 --weights resnet56.cifar10 --data ~/data/cifar10.npz
        """,
    )
    p.add_argument("target", metavar="CHECKPOINT_OR_MODEL", help="a run's best.pt or last.pt, or a registered model")
    p.add_argument("--weights", help="for a model: registered weights name, file or URL (default: its default entry)")
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
        "classify images with a training checkpoint or a model's registered weights",
        "Print the most probable classes of each image, with their probabilities. Images are prepared as the\n"
        "weights expect (resize of the shorter side, centre crop, normalisation: a weights entry's preprocessing,\n"
        "or a run's data statistics). A folder stands for the image files in it, sorted by name. An unreadable\n"
        "file is skipped with its reason; the command then ends with status 2 after the others.",
        """
        convzoo predict runs/shapes/best.pt image.png
        convzoo predict runs/shapes/best.pt photos/ --top-k 3
        convzoo predict resnet20 cat.jpg                                  # the shipped CIFAR-10 weights
        convzoo predict resnet50 --weights resnet50.tv_imagenet1k_v2 photos/
        """,
    )
    p.add_argument("target", metavar="CHECKPOINT_OR_MODEL", help="a run's best.pt or last.pt, or a registered model")
    p.add_argument("--weights", help="for a model: registered weights name, file or URL (default: its default entry)")
    p.add_argument("images", nargs="+", help="image files, or folders of image files")
    p.add_argument(
        "--top-k",
        type=positive_int,
        default=5,
        help="classes to show per image (default: 5, at most the number of classes)",
    )
    p.set_defaults(func=_cmd_predict)
