"""The segment subcommand: label every pixel of images with a trained segmentation network."""

from __future__ import annotations

import argparse
from pathlib import Path

from convzoo.cli._args import add_command, probability


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add the subcommand to ``sub``."""
    p = add_command(
        sub,
        "segment",
        "label every pixel of images with a trained segmentation network; write coloured overlays",
        "Segments each image with the network of a segmentation training checkpoint (convzoo train with a\n"
        "segmentation model): the image is resized to the network's input size and normalised as in training,\n"
        "and the prediction resized back to the image. Writes OUT/<image name>.segment.png (the image, the\n"
        "classes coloured over it, a legend) and prints the classes found with their share of the pixels.\n"
        "The library function is convzoo.segmentation.predict.segment_image. Train a network first, e.g.\n"
        "convzoo train unet_small --data scenes --image-size 64 --arch width=8 --optimizer adamw --lr 0.005 \\\n"
        "  --weight-decay 0.0001 --label-smoothing 0 --epochs 12 --out runs/unet",
        """
        convzoo segment runs/unet/best.pt photo.png other.jpg --out segments
        convzoo segment runs/unet/best.pt scene.png --alpha 0.7
        """,
    )
    p.add_argument("checkpoint", help="a segmentation training checkpoint (best.pt or last.pt)")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    p.add_argument("--out", default="segments", help="folder of the PNGs (default: %(default)s)")
    p.add_argument(
        "--alpha", type=probability, default=0.5, help="opacity of the colours over the image (default: %(default)s)"
    )
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default: %(default)s)")
    p.set_defaults(func=_cmd_segment)


def _cmd_segment(args: argparse.Namespace) -> int:
    import torch

    from convzoo.segmentation.predict import describe_shares, draw_segmentation, load_segmenter
    from convzoo.viz._load import read_image

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    missing = [image for image in args.images if not Path(image).is_file()]
    if missing:
        raise FileNotFoundError(f"no such image: {', '.join(missing)}")
    segmenter = load_segmenter(args.checkpoint, device=device)
    out = Path(args.out)
    written: set[Path] = set()
    for file in args.images:
        image = read_image(file)[0]
        mask = segmenter.predict(image)
        target = out / f"{Path(file).stem}.segment.png"
        n = 1
        while target in written:  # two inputs of one name in different folders
            n += 1
            target = out / f"{Path(file).stem}-{n}.segment.png"
        written.add(target)
        draw_segmentation(image.permute(1, 2, 0).numpy(), mask, segmenter.classes, target, alpha=args.alpha)
        found = describe_shares(mask, segmenter.classes)
        print(f"{file}: {found or 'no labelled pixels'} -> {target}")
    return 0
