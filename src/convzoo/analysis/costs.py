"""What a forward pass costs: parameters and multiply-adds, and the evaluation state they are counted in.

The counting conventions are stated once, in ``convzoo.analysis.summary``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from torch._C import DispatchKey
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

from convzoo._files import convzoo_home, write_atomically
from convzoo.analysis.input_size import model_in_chans, parse_input_size
from convzoo.factory import create_model
from convzoo.registry import get_model_card

aten = torch.ops.aten

# Size and layout queries carry no arithmetic; like torch's FlopCounterMode, leave them to the default handling.
_SHAPE_QUERIES = frozenset(
    {
        aten.sym_is_contiguous.default,
        aten.is_contiguous.default,
        aten.is_contiguous.memory_format,
        aten.is_strides_like_format.default,
        aten.is_non_overlapping_and_dense.default,
        aten.size.default,
        aten.sym_size.default,
        aten.stride.default,
        aten.sym_stride.default,
        aten.storage_offset.default,
        aten.sym_storage_offset.default,
        aten.numel.default,
        aten.sym_numel.default,
        aten.dim.default,
        torch.ops.prim.layout.default,
    }
)


class MacCounter(TorchDispatchMode):
    """Counts FLOPs with torch's formulas, in total and for each module name in ``open``.

    It counts what ``torch.utils.flop_counter.FlopCounterMode`` counts, operator by operator (an operator that has
    no formula but decomposes is counted through its decomposition). The names the FLOPs are charged to are the
    caller's to keep, which spares the per-call module bookkeeping and gradient hooks of torch's module tracker.
    """

    def __init__(self) -> None:
        super().__init__()
        self.flops = 0
        self.open: set[str] = set()
        self.by_module: dict[str, int] = {}
        self._decomposes: dict[Any, bool] = {}

    @property
    def macs(self) -> int:
        """Multiply-adds counted so far."""
        return int(self.flops // 2)

    def module_macs(self, name: str) -> int:
        """Multiply-adds counted while ``name`` was open."""
        return int(self.by_module.get(name, 0) // 2)

    def _has_decomposition(self, func: Any) -> bool:
        found = self._decomposes.get(func)
        if found is None:
            key = DispatchKey.CompositeImplicitAutograd
            found = func is not torch.ops.prim.device.default and (
                key in func.py_kernels or torch._C._dispatch_has_kernel_for_dispatch_key(func.name(), key)
            )
            self._decomposes[func] = found
        return found

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _SHAPE_QUERIES:
            return NotImplemented
        if self._has_decomposition(func):
            with self:
                out = func.decompose(*args, **kwargs)
            if out is not NotImplemented:
                return out
        out = func(*args, **kwargs)
        formula = flop_registry.get(func._overloadpacket)
        if formula is not None:
            flops = formula(*args, **kwargs, out_val=out)
            self.flops += flops
            for name in self.open:
                self.by_module[name] = self.by_module.get(name, 0) + flops
        return out


def as_module(model: nn.Module | str, what: str) -> nn.Module:
    """``model`` itself, or the registered network of that name built on the meta device (no memory, no values).

    Raises:
        TypeError: For anything but an nn.Module or a name.
        KeyError: For an unknown name, listing the closest registered ones.
    """
    if isinstance(model, str):
        with torch.device("meta"):
            return create_model(model)
    if not isinstance(model, nn.Module):
        raise TypeError(f"{what} takes an nn.Module or a registered model name; got {type(model).__name__}")
    return model


def count_params(model: nn.Module | str, *, trainable_only: bool = False) -> int:
    """Number of parameters (shared tensors counted once) of a network or of a registered model name."""
    model = as_module(model, "count_params")
    seen: dict[int, int] = {}
    for p in model.parameters():
        if not trainable_only or p.requires_grad:
            seen[id(p)] = p.numel()
    return sum(seen.values())


def count_macs(
    model: nn.Module | str, input_size: int | str | Sequence[int], *, device: str | torch.device | None = None
) -> int:
    """Multiply-adds of one forward pass on a single image of ``input_size``, in eval mode.

    ``model`` is a network or a registered model name (built on the meta device). ``input_size`` takes the forms of
    `convzoo.analysis.parse_input_size`: (C, H, W), (N, C, H, W), (H, W), an int for a square image, or text such
    as ``"3x224x224"``.
    """
    model = as_module(model, "count_macs")
    input_size = parse_input_size(input_size, in_chans=model_in_chans(model))
    if device is None:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
    counter = MacCounter()
    with InferenceState(model, device), torch.no_grad(), counter:
        model(torch.zeros((1, *input_size), device=device))
    return counter.macs


_NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


class InferenceState:
    """Eval mode for the pass, restored afterwards; on the meta device, normalisation layers take a fast path.

    PyTorch computes normalisation on the meta device through slow Python decompositions. A norm layer keeps its
    input's shape, costs no multiply-adds by our convention, and autograd keeps its input: a stand-in that makes one
    tensor of the same shape and keeps what ``shift + x * scale`` keeps gives the same counts at a fraction of the
    cost.
    """

    def __init__(self, model: nn.Module, device: str | torch.device) -> None:
        self.model = model
        self.meta = torch.device(device).type == "meta"
        self.norms: list[nn.Module] = []

    def __enter__(self) -> None:
        self.was_training = self.model.training
        self.model.eval()
        if self.meta:
            self.norms = [m for m in self.model.modules() if isinstance(m, _NORMS)]
            for m in self.norms:
                m.forward = _affine_stand_in(m)  # instance attribute, deleted on exit

    def __exit__(self, *exc: object) -> None:
        self.model.train(self.was_training)
        for m in self.norms:
            if "forward" in m.__dict__:
                del m.forward
        self.norms = []


class _ScaleShift(torch.autograd.Function):
    """``shift + x * scale`` with the output's values left unset: only its shape, type and autograd record count.

    Autograd keeps what ``torch.addcmul(shift, x, scale)`` (or ``x * scale``) keeps: ``x`` when ``scale`` needs a
    gradient and ``scale`` when ``x`` does. The elementwise kernels' meta versions run as Python decompositions,
    the bulk of a pass through a deep network on the meta device; an empty tensor of the right shape does not.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor | None) -> torch.Tensor:
        ctx.save_for_backward(x if scale.requires_grad else None, scale if x.requires_grad else None)
        ctx.shapes = (x.shape, scale.shape, None if shift is None else shift.shape)
        shape, dtype = x.shape, x.dtype
        for t in (scale, shift):
            if t is not None:
                dtype = dtype if t.dtype == dtype else torch.promote_types(dtype, t.dtype)
                if not _broadcasts_to(t.shape, shape):
                    shape = torch.broadcast_shapes(shape, t.shape)
        return torch.empty_like(x, dtype=dtype) if shape == x.shape else x.new_empty(shape, dtype=dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, scale = ctx.saved_tensors
        x_shape, scale_shape, shift_shape = ctx.shapes
        grad_x = (grad * scale).sum_to_size(x_shape) if scale is not None else None
        grad_scale = (grad * x).sum_to_size(scale_shape) if x is not None else None
        grad_shift = grad.sum_to_size(shift_shape) if shift_shape is not None and ctx.needs_input_grad[2] else None
        return grad_x, grad_scale, grad_shift


def _broadcasts_to(shape: Sequence[int], target: Sequence[int]) -> bool:
    """Whether ``shape`` broadcasts to ``target`` unchanged (``torch.broadcast_shapes`` is slow for this test)."""
    return len(shape) <= len(target) and all(a == 1 or a == b for a, b in zip(reversed(shape), reversed(target)))


def _affine_stand_in(norm: nn.Module):
    weight = getattr(norm, "weight", None)
    bias = getattr(norm, "bias", None)
    channelwise = not isinstance(norm, nn.LayerNorm)

    def forward(x: torch.Tensor) -> torch.Tensor:
        shape = (1, -1) + (1,) * (x.dim() - 2) if channelwise else (-1,)
        if weight is not None:
            scale = weight.view(shape)
        else:  # made from nothing the pass tracks, so it carries no receptive field of its own
            scale = torch.ones((), device=x.device, dtype=x.dtype, requires_grad=torch.is_grad_enabled())
        return _ScaleShift.apply(x, scale, bias.view(shape) if bias is not None else None)

    return forward


def _source_fingerprint() -> str:
    """What the parameter and multiply-add counts depend on: convzoo's source files and the torch version."""
    package = Path(__file__).resolve().parents[1]
    digest = hashlib.sha1(torch.__version__.encode())
    for file in sorted(package.rglob("*.py")):
        digest.update(str(file.relative_to(package)).encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()


def model_costs(names: Sequence[str]) -> dict[str, tuple[int, int]]:
    """Parameters and multiply-adds of each registered model at its card's input size.

    Measuring builds and traces every network on the meta device, about a tenth of a second each, so the counts are
    kept in ``$CONVZOO_HOME/model-costs.json`` under a fingerprint of the source and the torch version: any change
    to either measures again. A home that cannot be written only costs the next call the measurement.
    """
    from tqdm import tqdm

    path = convzoo_home() / "model-costs.json"
    fingerprint = _source_fingerprint()
    try:
        stored = json.loads(path.read_text())
        known = stored["models"] if stored.get("fingerprint") == fingerprint else {}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        known = {}
    costs = {n: (int(known[n][0]), int(known[n][1])) for n in names if isinstance(known.get(n), list)}
    missing = [n for n in names if n not in costs]
    for name in tqdm(missing, desc="measuring", unit="model", leave=False, disable=len(missing) < 8 or None):
        model = as_module(name, "model_costs")
        costs[name] = (count_params(model), count_macs(model, get_model_card(name).input_size, device="meta"))
    if missing:
        merged = {**known, **{n: list(c) for n, c in costs.items()}}
        text = json.dumps({"fingerprint": fingerprint, "models": merged}, indent=0, sort_keys=True)
        with contextlib.suppress(OSError):
            write_atomically(path, lambda tmp: Path(tmp).write_text(text))
    return costs
