"""The export subcommand: write a network as ONNX, a saved `torch.export` program or TorchScript, checked."""

from __future__ import annotations

import argparse
from pathlib import Path

from convzoo.cli._args import add_command, parse_input, positive_int

_FORMATS = ("onnx", "pt2", "torchscript")


def _default_out(source: str, format: str) -> Path:
    """MODEL.onnx in the current folder for a model name; beside the checkpoint (best.onnx) for a checkpoint."""
    from convzoo.export import default_suffix

    path = Path(source)
    suffix = default_suffix(format)
    if not path.exists():
        return Path(f"{source}{suffix}")
    out = path.with_suffix(suffix)
    # A checkpoint is a .pt file too: TorchScript from best.pt goes to best-torchscript.pt, not over it.
    return out if out != path else path.with_name(f"{path.stem}-torchscript{suffix}")


def _cmd_export(args: argparse.Namespace) -> int:
    from convzoo.export import export_model

    out = Path(args.out) if args.out else _default_out(args.model, args.format)
    if out.exists() and Path(args.model).exists() and out.resolve() == Path(args.model).resolve():
        raise FileExistsError(f"--out {out} is the checkpoint itself; choose another path")
    result = export_model(
        args.model,
        out,
        format=args.format,
        input_size=args.input_size,
        batch_size=args.batch_size,
        dynamic_batch=not args.static_batch,
        fold_bn=args.fold_bn,
        check=not args.no_check,
    )
    shape = "x".join(str(d) for d in result.input_shape[1:])
    batch = "any batch size" if result.dynamic_batch else f"batch size {result.input_shape[0]}"
    folded = f", {result.folded_batchnorms} batch norms folded" if args.fold_bn else ""
    print(f"wrote {result.path} ({result.format}, {result.model_name}, input {shape}, {batch}{folded})")
    if result.max_abs_diff is None:
        print("not checked (--no-check)")
    else:
        print(
            f"checked: max abs difference to PyTorch {result.max_abs_diff:.3g} (tolerance {result.tolerance:.3g}) "
            f"on a batch of {result.input_shape[0] + 1 if result.dynamic_batch else result.input_shape[0]}"
        )
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub,
        "export",
        "write a network as ONNX, a torch.export program or TorchScript",
        "Export a registered network (random weights) or a training checkpoint (best.pt or last.pt) for deployment,\n"
        "in evaluation mode and with a dynamic batch axis. The file is then loaded back (ONNX with onnxruntime), run\n"
        "on a random batch and compared with PyTorch; the command prints the largest difference. ONNX export needs\n"
        "the optional packages: pip install 'convzoo[export]'.",
        """
        convzoo export resnet50 --format onnx
        convzoo export runs/shapes/best.pt --format onnx --fold-bn --out deploy/shapes.onnx
        convzoo export mobilenet_v1 --format pt2 --input-size 3x160x160
        convzoo export resnet20 --format torchscript --batch-size 8 --static-batch
        """,
    )
    p.add_argument("model", help="registered model name (see `convzoo models`) or a run's best.pt / last.pt")
    p.add_argument("--format", choices=_FORMATS, default="onnx", help="file format (default: onnx)")
    p.add_argument(
        "--out",
        help="file to write (default: MODEL.onnx / .pt2 / .pt here, or beside the checkpoint with its name)",
    )
    p.add_argument(
        "--input-size",
        type=parse_input,
        help="input size CxHxW or HxW (default: the model card's, or the size a checkpoint was trained at)",
    )
    p.add_argument("--batch-size", type=positive_int, default=1, help="batch of the example input (default: 1)")
    p.add_argument(
        "--static-batch",
        action="store_true",
        help="fix the batch size to --batch-size instead of accepting any",
    )
    p.add_argument(
        "--fold-bn",
        action="store_true",
        help="fold each batch norm that directly follows a convolution into that convolution first",
    )
    p.add_argument("--no-check", action="store_true", help="skip running the file and comparing it with PyTorch")
    p.set_defaults(func=_cmd_export)
