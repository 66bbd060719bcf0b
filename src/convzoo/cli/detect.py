"""The detect subcommand: a trained detector's boxes, classes, scores and masks on image files."""

from __future__ import annotations

import argparse
from pathlib import Path

from convzoo.cli._args import add_command, probability


def _cmd_detect(args: argparse.Namespace) -> int:
    from convzoo.detection.data import read_image
    from convzoo.detection.draw import draw_detections, load_detector, save_png

    detector = load_detector(args.checkpoint, device=args.device)
    out = Path(args.out)
    for name in args.images:
        image = read_image(name)
        found = detector.detect(image)
        keep = found["scores"] >= args.score_threshold
        path = save_png(
            draw_detections(image, found, detector.classes, score_threshold=args.score_threshold),
            out / f"{Path(name).stem}_detections.png",
        )
        print(f"{name}: {int(keep.sum())} detection(s) scoring >= {args.score_threshold:g} -> {path}")
        for box, label, score in zip(
            found["boxes"][keep].tolist(), found["labels"][keep].tolist(), found["scores"][keep].tolist()
        ):
            corners = ", ".join(f"{v:.1f}" for v in box)
            print(f"  {detector.classes[label]:<12} {score:.3f}  [{corners}]")
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add the subcommand to ``sub``."""
    p = add_command(
        sub,
        "detect",
        "detect objects in images with a trained detector; draw them into PNGs",
        "Runs a detector on image files: a detection run's checkpoint (best.pt, last.pt or the run folder; the\n"
        "networks return per-image boxes in evaluation mode) or a saved R-CNN folder (RCNN.save). Each image is\n"
        "resized to the detector's training size and normalised as in training; the boxes are mapped back to the\n"
        "image. Prints every detection scoring at least the threshold and writes IMAGE_detections.png with its\n"
        "boxes, class names, scores and masks.",
        """
        convzoo detect runs/faster_rcnn/best.pt street.jpg
        convzoo detect runs/mask_rcnn scene1.png scene2.png --out drawn --score-threshold 0.3
        convzoo detect rcnn_scenes/ scene.png
        """,
    )
    p.add_argument(
        "checkpoint", metavar="CHECKPOINT", help="a detection run's best.pt/last.pt or folder, or an R-CNN folder"
    )
    p.add_argument("images", metavar="IMAGE", nargs="+", help="image files")
    p.add_argument("--out", default="detections", help="folder of the drawn PNGs (default: detections)")
    p.add_argument(
        "--score-threshold",
        type=probability,
        default=0.5,
        help="print and draw the detections scoring at least this (default: 0.5)",
    )
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    p.set_defaults(func=_cmd_detect)
