"""Export a network for deployment (ONNX, a saved `torch.export` program, TorchScript) and fold batch norms.

Every export is checked by default: the written file is loaded back, run on a random batch of another size than the
one it was traced with (so the batch axis is shown to be dynamic), and its outputs compared with the PyTorch
model's in evaluation mode. The file is written atomically: a failed export or check leaves nothing behind.

ONNX goes through `torch.onnx.export(..., dynamo=True)`, the exporter built on `torch.export`. The older
TorchScript-based exporter cannot give AlexNet, VGG or NASNet a dynamic batch axis (their adaptive pooling needs a
static input size), while the `torch.export` route handles every registered network. TorchScript is deprecated in
recent PyTorch releases (``torch.jit`` warns on use); it stays for runtimes that still load it, and ``pt2`` is its
successor.
"""

from __future__ import annotations

import copy
import os
import re
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from convzoo._files import write_atomically

__all__ = [
    "FORMATS",
    "ExportError",
    "ExportResult",
    "conv_bn_pairs",
    "default_suffix",
    "export_model",
    "fold_batchnorm",
    "load_exportable",
]

FORMATS = ("onnx", "pt2", "torchscript")
_SUFFIXES = {"onnx": ".onnx", "pt2": ".pt2", "torchscript": ".pt"}
# Outputs may differ by this much times the largest output magnitude (and at least this much): float32 rounding
# grows with the scale of the logits, which in an untrained network with fresh batch-norm statistics can be huge.
DEFAULT_ATOL = 1e-4
_INSTALL_HINT = "pip install 'convzoo[export]'"


class ExportError(RuntimeError):
    """A network could not be exported, or its exported form does not compute what the network computes."""


@dataclass(frozen=True)
class ExportResult:
    """What `export_model` wrote.

    Attributes:
        path: The written file.
        format: ``onnx``, ``pt2`` or ``torchscript``.
        model_name: The network's name.
        input_shape: The (N, C, H, W) shape the network was traced with.
        dynamic_batch: Whether the file accepts any batch size.
        max_abs_diff: Largest absolute difference between the file's and PyTorch's outputs (None: not checked).
        tolerance: The largest difference the check accepted (None: not checked).
        folded_batchnorms: Batch norms folded into the convolution before them.
        seconds: Time taken, check included.
    """

    path: Path
    format: str
    model_name: str
    input_shape: tuple[int, int, int, int]
    dynamic_batch: bool
    max_abs_diff: float | None
    tolerance: float | None
    folded_batchnorms: int
    seconds: float

    def __fspath__(self) -> str:
        return os.fspath(self.path)


def default_suffix(format: str) -> str:
    """The file suffix of an export format: ``.onnx``, ``.pt2`` or ``.pt``."""
    _check_format(format)
    return _SUFFIXES[format]


def _check_format(format: str) -> None:
    if format not in FORMATS:
        raise ValueError(f"unknown export format {format!r}; choose one of {', '.join(FORMATS)}")


def _model_name(model: nn.Module) -> str:
    name = getattr(model, "model_name", None)
    return name if isinstance(name, str) else type(model).__name__


def load_exportable(source: nn.Module | str | os.PathLike[str]) -> tuple[nn.Module, tuple[int, int, int] | None]:
    """The network ``source`` stands for and the input size it expects (None: unknown).

    Args:
        source: A module (used as it is), a registered model name (built with random weights, in evaluation mode)
            or the path of a training checkpoint (a run's ``best.pt`` or ``last.pt``, rebuilt as ``convzoo eval``
            rebuilds it; its input size is the one it was trained at).

    Raises:
        KeyError: A name that is neither registered nor an existing file (the message lists the closest names).
        FileNotFoundError: A path (it has a folder or a file suffix) that does not exist.
        WeightsError: A file that is not a readable convzoo training checkpoint.
    """
    if isinstance(source, nn.Module):
        card = getattr(source, "card", None)
        return source, getattr(card, "input_size", None)
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(
            f"model must be an nn.Module, a registered model name or a training checkpoint; got {type(source).__name__}"
        )
    from convzoo.registry import get_model_card, list_models

    text = os.fspath(source)
    if not isinstance(source, os.PathLike) and text in list_models(task=None):
        from convzoo.factory import create_model

        model = create_model(text)
        return model.eval(), tuple(model.card.input_size)
    path = Path(text)
    if path.exists():
        from convzoo.train import load_trained

        model, data = load_trained(path)
        return model.eval(), tuple(data["image_size"])
    if isinstance(source, os.PathLike) or path.suffix or len(path.parts) > 1:
        raise FileNotFoundError(f"{text} does not exist (expected a registered model name or a training checkpoint)")
    get_model_card(text)  # raises a KeyError naming the closest registered names
    raise KeyError(f"{text!r} is not a registered model")  # pragma: no cover - get_model_card raised


def _input_shape(
    model: nn.Module, input_size: int | str | Sequence[int] | None, known: tuple[int, int, int] | None, batch: int
) -> tuple[int, int, int, int]:
    from convzoo.analysis import model_in_chans, parse_input_size

    if input_size is not None:
        size = parse_input_size(input_size, in_chans=model_in_chans(model))
    elif known is not None:
        size = tuple(known)
    else:
        raise ValueError(
            f"{_model_name(model)}: no input size given and the module has no model card; pass input_size=(C, H, W)"
        )
    return (batch, *size)


def _example(shape: Sequence[int], like: nn.Module, seed: int) -> torch.Tensor:
    weight = next(like.parameters(), None)
    dtype = weight.dtype if weight is not None and weight.is_floating_point() else torch.float32
    device = weight.device if weight is not None else torch.device("cpu")
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=generator, dtype=torch.float32).to(device=device, dtype=dtype)


def _tensors(output: Any) -> list[torch.Tensor]:
    """The tensors of a model output (a tensor, or a list or tuple of them, as a feature extractor returns)."""
    if isinstance(output, torch.Tensor):
        return [output]
    if isinstance(output, (list, tuple)):
        return [t for item in output for t in _tensors(item)]
    raise TypeError(f"cannot compare an output of type {type(output).__name__}")


def _compare(
    name: str, format: str, got: Sequence[Any], want: Sequence[torch.Tensor], atol: float
) -> tuple[float, float]:
    """The largest difference between ``got`` and ``want`` and the tolerance; raises ExportError past it."""
    if len(got) != len(want):
        raise ExportError(f"{name}: the {format} file returns {len(got)} outputs, the network {len(want)}")
    diff, scale = 0.0, 1.0
    for a, b in zip(got, want):
        a = torch.as_tensor(a).to(device=b.device, dtype=b.dtype)
        if a.shape != b.shape:
            raise ExportError(f"{name}: the {format} file returns shape {tuple(a.shape)}, the network {tuple(b.shape)}")
        diff = max(diff, (a.double() - b.double()).abs().max().item() if b.numel() else 0.0)
        scale = max(scale, b.double().abs().max().item() if b.numel() else 0.0)
    tolerance = atol * scale
    if not diff <= tolerance:  # also refuses NaN
        raise ExportError(
            f"{name}: the {format} file's outputs differ from the network's by {diff:.3g} (tolerance {tolerance:.3g})"
        )
    return diff, tolerance


def _summary(error: BaseException) -> str:
    """What went wrong, in one line: the outermost exception and, when another caused it, the root cause.

    Exporters wrap the real reason (an unsupported operator, a data-dependent branch) in their own exception.
    """
    root = error
    while root.__cause__ is not None and root.__cause__ is not root:
        root = root.__cause__

    def line(e: BaseException) -> str:
        text = " ".join(part.strip() for part in re.sub(r"\x1b\[[0-9;]*m", "", str(e)).splitlines() if part.strip())
        text = text if len(text) <= 300 else text[:297] + "..."
        return f"{type(e).__name__}: {text}" if text else type(e).__name__

    if root is error:
        return line(error)
    outer = line(error).split(". ")[0]  # the exporter's own advice follows its first sentence
    return f"{outer} (caused by {line(root)})"


def _require_onnx() -> tuple[Any, Any]:
    try:
        import onnx
        import onnxruntime
    except ImportError as e:
        raise ImportError(f"ONNX export needs the onnx and onnxruntime packages ({e}); {_INSTALL_HINT}") from e
    try:
        import onnxscript  # noqa: F401  (torch.onnx's exporter imports it when it runs)
    except ImportError as e:
        raise ImportError(f"ONNX export needs the onnxscript package ({e}); {_INSTALL_HINT}") from e
    return onnx, onnxruntime


def _input_name(model: nn.Module) -> str:
    import inspect

    params = list(inspect.signature(model.forward).parameters)
    return params[0] if params else "x"


def _write(format: str, model: nn.Module, x: torch.Tensor, dynamic_batch: bool, tmp: str, opset: int | None) -> None:
    dims = {_input_name(model): {0: torch.export.Dim("batch", min=1)}} if dynamic_batch else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if format == "onnx":
            program = torch.onnx.export(
                model,
                (x,),
                dynamo=True,
                dynamic_shapes=dims,
                input_names=["images"],
                opset_version=opset,
                external_data=False,
                optimize=True,
                verbose=False,
            )
            program.save(tmp, external_data=False)
        elif format == "pt2":
            program = torch.export.export(model, (x,), dynamic_shapes=dims)
            # Through a file object: torch.export refuses a path that does not end in .pt2, as the temporary one.
            with open(tmp, "wb") as f:
                torch.export.save(program, f)
        else:
            with torch.no_grad():
                traced = torch.jit.trace(model, (x,), check_trace=False)
            torch.jit.save(traced, tmp)


def _run_file(format: str, path: str, x: torch.Tensor) -> list[Any]:
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if format == "onnx":
            _, onnxruntime = _require_onnx()
            session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
            feed = {session.get_inputs()[0].name: x.detach().cpu().float().numpy()}
            return session.run(None, feed)
        if format == "pt2":
            with open(path, "rb") as f:
                program = torch.export.load(f)
            return _tensors(program.module()(x))
        return _tensors(torch.jit.load(path, map_location=x.device)(x))


def export_model(
    model: nn.Module | str | os.PathLike[str],
    path: str | os.PathLike[str],
    *,
    format: str = "onnx",
    input_size: int | str | Sequence[int] | None = None,
    batch_size: int = 1,
    dynamic_batch: bool = True,
    fold_bn: bool = False,
    check: bool = True,
    atol: float = DEFAULT_ATOL,
    opset: int | None = None,
) -> ExportResult:
    """Write ``model`` to ``path`` in a deployment format and check that the file computes what the model computes.

    Args:
        model: A module, a registered model name or a training checkpoint (see `load_exportable`). It is exported
            in evaluation mode; a module passed in gets its training mode back afterwards.
        path: The file to write (its folder is created). It is replaced only once the export and the check passed.
        format: ``onnx`` (opened with onnxruntime), ``pt2`` (`torch.export.save`; load with `torch.export.load`)
            or ``torchscript`` (`torch.jit.trace`; load with `torch.jit.load`).
        input_size: (C, H, W), (H, W), an int or ``"3x224x224"``; default: the model card's (a checkpoint's: the
            size it was trained at).
        batch_size: Batch of the example input. With ``dynamic_batch`` it is only an example (at least 2 is used:
            `torch.export` treats a batch of 1 as a constant).
        dynamic_batch: Let the file accept any batch size; else it accepts ``batch_size`` only.
        fold_bn: Export `fold_batchnorm`'s copy of the model, each batch norm folded into the convolution before it.
        check: Run the written file on a random batch and compare with the model.
        atol: Accepted difference, relative to the largest output magnitude (at least 1).
        opset: ONNX opset version (default: the exporter's).

    Returns:
        What was written, with the measured difference.

    Raises:
        ValueError: An unknown format, a bad input size or batch size.
        KeyError, FileNotFoundError, WeightsError: A ``model`` that names no network (see `load_exportable`).
        ImportError: ONNX export without the onnx, onnxruntime or onnxscript packages.
        ExportError: The network cannot be exported to the format, or the file computes something else; the
            message names the network, the format and the reason.
    """
    _check_format(format)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int; got {batch_size!r}")
    if format == "onnx":
        _require_onnx()
    start = time.perf_counter()
    module, known_size = load_exportable(model)
    name = _model_name(module)
    shape = _input_shape(module, input_size, known_size, max(batch_size, 2) if dynamic_batch else batch_size)
    was_training = module.training
    module.eval()
    try:
        x = _example(shape, module, seed=0)
        check_shape = (shape[0] + 1, *shape[1:]) if dynamic_batch else shape
        probe = _example(check_shape, module, seed=1)
        with torch.no_grad():
            try:
                # The file is compared with the model itself, so a folded export is checked against the unfolded one.
                want = _tensors(module(probe))
            except (TypeError, ValueError) as e:
                raise ValueError(f"{name} cannot run on an input of shape {check_shape}: {e}") from None
        folded = 0
        if fold_bn:
            module, folded = _fold(module, shape[1:])
        measured: list[tuple[float, float]] = []

        def write(tmp: str) -> None:
            try:
                _write(format, module, x, dynamic_batch, tmp, opset)
            except ImportError:
                raise
            except Exception as e:
                raise ExportError(f"{name} cannot be exported to {format}: {_summary(e)}") from e
            if check:
                try:
                    got = _run_file(format, tmp, probe)
                except Exception as e:
                    raise ExportError(f"{name}: the exported {format} file does not run: {_summary(e)}") from e
                measured.append(_compare(name, format, got, want, atol))

        written = write_atomically(path, write)
    finally:
        if isinstance(model, nn.Module):
            model.train(was_training)
    diff, tolerance = measured[0] if measured else (None, None)
    return ExportResult(
        path=written,
        format=format,
        model_name=name,
        input_shape=tuple(shape),
        dynamic_batch=dynamic_batch,
        max_abs_diff=diff,
        tolerance=tolerance,
        folded_batchnorms=folded,
        seconds=time.perf_counter() - start,
    )


# --- batch-norm folding ---------------------------------------------------------------------------------------------


def _innermost(node: torch.fx.Node) -> tuple[str, str] | None:
    stack = node.meta.get("nn_module_stack")
    return list(stack.values())[-1][:2] if stack else None


def conv_bn_pairs(model: nn.Module, input_size: int | str | Sequence[int] | None = None) -> list[tuple[str, str]]:
    """(convolution, batch norm) module names where the batch norm takes the convolution's output and nothing else
    does, each module called once: the pairs `fold_batchnorm` folds.

    The pairs are read from the graph `torch.export` records of one forward pass in evaluation mode, so residual
    additions, concatenations, activations and functional calls between two modules are all seen.

    Args:
        model: The network.
        input_size: An input size the network accepts; default its smallest one (``min_input_size``), else its
            model card's.
    """
    module = model.model if hasattr(model, "model") and isinstance(model.model, nn.Module) else model
    if input_size is None:
        smallest = getattr(module, "min_input_size", None)
        card = getattr(module, "card", None)
        if isinstance(smallest, int) and smallest > 1 and getattr(module, "in_chans", None):
            input_size = (module.in_chans, smallest, smallest)
        elif card is not None:
            input_size = card.input_size
    shape = _input_shape(model, input_size, None, 2)
    was_training = model.training
    model.eval()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            graph = torch.export.export(model, (_example(shape, model, seed=0),)).graph
    except Exception as e:
        raise ExportError(
            f"{_model_name(model)}: cannot trace the network to find conv->bn pairs: {_summary(e)}"
        ) from e
    finally:
        model.train(was_training)
    modules = dict(model.named_modules())
    calls: dict[str, int] = {}
    candidates = []
    for node in graph.nodes:
        if node.op != "call_function" or (owner := _innermost(node)) is None:
            continue
        target = str(node.target)
        if "conv" in target or "batch_norm" in target:
            calls[owner[0]] = calls.get(owner[0], 0) + 1
        if "batch_norm" not in target or not node.args or not isinstance(node.args[0], torch.fx.Node):
            continue
        source = node.args[0]
        producer = _innermost(source)
        if producer is None or "conv" not in str(source.target) or len(source.users) != 1:
            continue
        conv, bn = modules.get(producer[0]), modules.get(owner[0])
        if isinstance(conv, nn.modules.conv._ConvNd) and isinstance(bn, nn.modules.batchnorm._BatchNorm):
            candidates.append((producer[0], owner[0]))
    return [
        (conv, bn)
        for conv, bn in candidates
        if calls.get(conv) == 1
        and calls.get(bn) == 1
        and modules[bn].running_mean is not None
        and modules[bn].num_features == modules[conv].out_channels
    ]


def _fold(model: nn.Module, input_size: Sequence[int] | None = None) -> tuple[nn.Module, int]:
    pairs = conv_bn_pairs(model, input_size)
    folded = copy.deepcopy(model).eval()
    for conv_name, bn_name in pairs:
        conv = folded.get_submodule(conv_name)
        bn = folded.get_submodule(bn_name)
        transpose = isinstance(conv, nn.modules.conv._ConvTransposeNd)
        weight, bias = torch.nn.utils.fusion.fuse_conv_bn_weights(
            conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.eps, bn.weight, bn.bias, transpose=transpose
        )
        conv.weight, conv.bias = weight, bias
        parent_name, _, attr = bn_name.rpartition(".")
        setattr(folded.get_submodule(parent_name) if parent_name else folded, attr, nn.Identity())
    return folded, len(pairs)


def fold_batchnorm(model: nn.Module, input_size: int | str | Sequence[int] | None = None) -> nn.Module:
    """A copy of ``model`` for inference, each batch norm that directly follows a convolution folded into it.

    The convolution's weight is scaled by gamma / sqrt(var + eps) and given the bias beta + (b - mean) * that scale;
    the batch norm becomes an ``nn.Identity``. Only the pairs `conv_bn_pairs` finds are folded (a batch norm after an
    activation or a concatenation, as in pre-activation ResNets and DenseNets, stays). The copy is in evaluation mode
    and computes what ``model`` computes in evaluation mode; ``model`` is left as it is.

    Args:
        model: The network.
        input_size: An input size the network accepts (default: its smallest, else its model card's).
    """
    return _fold(model, input_size)[0]
