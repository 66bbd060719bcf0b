"""Theoretical receptive fields, followed through every torch function a forward pass calls.

The field is tracked through every torch function the forward calls, whether inside a module or not, so it follows
residual additions, concatenations, shortcut subsampling and padding. Per spatial axis a field is three numbers
(Araujo, Norris and Sim, "Computing Receptive Fields of Convolutional Neural Networks", Distill 2019):

- size: how many input pixels one unit sees;
- jump: how many input pixels apart two neighbouring units are (the cumulative stride);
- start: the input coordinate of the centre of the first unit's field (negative when padding reaches past the edge).

A merge (addition, concatenation, multiplication) sees the union of its inputs' fields. An operation that mixes
every position (global pooling, a fully connected layer, a squeeze-and-excitation gate) makes the field global.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten


def format_number(x: float) -> str:
    """``3`` for a whole number, ``2.5`` otherwise: how sizes, jumps and starts read in tables."""
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


@dataclass(frozen=True)
class ReceptiveField:
    """The theoretical receptive field of a feature map's units, per axis (height, width).

    Attributes:
        size: Input pixels one unit sees, per axis.
        jump: Input pixels between neighbouring units, per axis.
        start: Input coordinate of the centre of the first unit's field, per axis.
        is_global: Every unit depends on the whole input.
    """

    size: tuple[float, float] = (1.0, 1.0)
    jump: tuple[float, float] = (1.0, 1.0)
    start: tuple[float, float] = (0.0, 0.0)
    is_global: bool = False

    def __str__(self) -> str:
        if self.is_global:
            return "global"
        if self.size[0] != self.size[1]:
            return "x".join(format_number(s) for s in self.size)
        return format_number(self.size[0])

    def union(self, other: ReceptiveField) -> ReceptiveField:
        """The field of a unit that sees what both fields see."""
        if self.is_global or other.is_global:
            return GLOBAL
        size, jump, start = [], [], []
        for axis in range(2):
            lo = min(self.start[axis] - (self.size[axis] - 1) / 2, other.start[axis] - (other.size[axis] - 1) / 2)
            hi = max(self.start[axis] + (self.size[axis] - 1) / 2, other.start[axis] + (other.size[axis] - 1) / 2)
            size.append(hi - lo + 1)
            start.append((lo + hi) / 2)
            jump.append(max(self.jump[axis], other.jump[axis]))
        return ReceptiveField(tuple(size), tuple(jump), tuple(start))  # type: ignore[arg-type]

    def through(
        self,
        kernel: Sequence[int],
        stride: Sequence[int],
        padding: Sequence[int],
        dilation: Sequence[int] = (1, 1),
    ) -> ReceptiveField:
        """The field after a sliding window (convolution or pooling) over this one."""
        if self.is_global:
            return self
        size = tuple(r + (k - 1) * d * j for r, k, d, j in zip(self.size, kernel, dilation, self.jump))
        start = tuple(
            s + ((k - 1) / 2 * d - p) * j for s, k, d, p, j in zip(self.start, kernel, dilation, padding, self.jump)
        )
        jump = tuple(j * s for j, s in zip(self.jump, stride))
        return ReceptiveField(size, jump, start)  # type: ignore[arg-type]

    def bounds(self, index: tuple[int, int] = (0, 0)) -> tuple[tuple[float, float], tuple[float, float]]:
        """Input-coordinate (first, last) pixel of unit ``index``'s field per axis, unclipped."""
        out = []
        for axis in range(2):
            centre = self.start[axis] + index[axis] * self.jump[axis]
            out.append((centre - (self.size[axis] - 1) / 2, centre + (self.size[axis] - 1) / 2))
        return out[0], out[1]


GLOBAL = ReceptiveField(is_global=True)


def _pair(value: Any) -> tuple[int, int]:
    if isinstance(value, int):
        return (value, value)
    value = tuple(value)
    return (value[0], value[0]) if len(value) == 1 else (value[-2], value[-1])


def _arg(args: tuple, kwargs: dict, index: int, name: str, default: Any) -> Any:
    if name in kwargs:
        return kwargs[name]
    return args[index] if len(args) > index else default


def _conv(rf: ReceptiveField, args: tuple, kwargs: dict, out: torch.Tensor) -> ReceptiveField:
    weight = _arg(args, kwargs, 1, "weight", None)
    kernel = tuple(weight.shape[-2:])
    stride = _pair(_arg(args, kwargs, 3, "stride", 1))
    dilation = _pair(_arg(args, kwargs, 5, "dilation", 1))
    padding = _arg(args, kwargs, 4, "padding", 0)
    if padding == "valid":
        padding = (0, 0)
    elif padding == "same":
        padding = tuple(d * (k - 1) // 2 for k, d in zip(kernel, dilation))
    return rf.through(kernel, stride, _pair(padding), dilation)


def _pool(rf: ReceptiveField, args: tuple, kwargs: dict, out: torch.Tensor) -> ReceptiveField:
    kernel = _pair(_arg(args, kwargs, 1, "kernel_size", 1))
    stride = _arg(args, kwargs, 2, "stride", None)
    stride = kernel if stride is None or stride == [] or stride == () else _pair(stride)
    padding = _pair(_arg(args, kwargs, 3, "padding", 0))
    return rf.through(kernel, stride, padding)


def _max_pool(rf: ReceptiveField, args: tuple, kwargs: dict, out: torch.Tensor) -> ReceptiveField:
    dilation = _pair(_arg(args, kwargs, 4, "dilation", 1))
    pooled = _pool(rf, args, kwargs, out)
    if dilation == (1, 1) or rf.is_global:
        return pooled
    kernel = _pair(_arg(args, kwargs, 1, "kernel_size", 1))
    stride = _arg(args, kwargs, 2, "stride", None)
    stride = kernel if not stride else _pair(stride)
    return rf.through(kernel, stride, _pair(_arg(args, kwargs, 3, "padding", 0)), dilation)


def _adaptive_pool(rf: ReceptiveField, args: tuple, kwargs: dict, out: torch.Tensor) -> ReceptiveField:
    x = args[0]
    in_size, out_size = x.shape[-2:], out.shape[-2:]
    if tuple(out_size) == (1, 1) and tuple(in_size) != (1, 1):
        return GLOBAL
    # PyTorch's adaptive windows: start floor(i*in/out), end ceil((i+1)*in/out). Exact when out divides in.
    kernel = tuple(math.ceil(i / o) for i, o in zip(in_size, out_size))
    stride = tuple(i // o for i, o in zip(in_size, out_size))
    return rf.through(kernel, stride, (0, 0))


def _pad(rf: ReceptiveField, args: tuple, kwargs: dict, out: torch.Tensor) -> ReceptiveField:
    pad = list(_arg(args, kwargs, 1, "pad", ()))
    if rf.is_global or len(pad) < 2:
        return rf
    left = pad[0]
    top = pad[2] if len(pad) >= 4 else 0
    start = (rf.start[0] - top * rf.jump[0], rf.start[1] - left * rf.jump[1])
    return ReceptiveField(rf.size, rf.jump, start)


def _getitem(rf: ReceptiveField, args: tuple, kwargs: dict, out: torch.Tensor) -> ReceptiveField:
    x, index = args[0], args[1]
    if rf.is_global or not isinstance(index, tuple) or x.dim() != 4:
        return rf
    slices = list(index) + [slice(None)] * (4 - len(index))
    start, jump = list(rf.start), list(rf.jump)
    for axis, item in enumerate(slices[2:4]):
        if isinstance(item, slice):
            first = item.start or 0
            step = item.step or 1
            if first < 0:
                first += x.shape[2 + axis]
            start[axis] += first * jump[axis]
            jump[axis] *= step
    return ReceptiveField(rf.size, tuple(jump), tuple(start))  # type: ignore[arg-type]


def _interpolate(rf: ReceptiveField, args: tuple, kwargs: dict, out: torch.Tensor) -> ReceptiveField:
    x = args[0]
    if rf.is_global:
        return rf
    scale = [o / i for o, i in zip(out.shape[-2:], x.shape[-2:])]
    jump = tuple(j / s for j, s in zip(rf.jump, scale))
    return ReceptiveField(rf.size, jump, rf.start)  # type: ignore[arg-type]


def _reduction(rf: ReceptiveField, args: tuple, kwargs: dict, out: torch.Tensor) -> ReceptiveField:
    x = args[0]
    dims = _arg(args, kwargs, 1, "dim", None)
    if dims is None:
        return GLOBAL
    dims = {d % x.dim() for d in ((dims,) if isinstance(dims, int) else dims)}
    return GLOBAL if dims & {x.dim() - 2, x.dim() - 1} else rf


_TRANSFORMS: dict[Callable, Callable[[ReceptiveField, tuple, dict, torch.Tensor], ReceptiveField]] = {
    F.conv2d: _conv,
    torch.conv2d: _conv,
    F.max_pool2d: _max_pool,
    torch.max_pool2d: _max_pool,
    F.avg_pool2d: _pool,
    torch._C._nn.avg_pool2d: _pool,
    F.lp_pool2d: _pool,
    F.adaptive_avg_pool2d: _adaptive_pool,
    torch._C._nn.adaptive_avg_pool2d: _adaptive_pool,
    F.adaptive_max_pool2d: _adaptive_pool,
    F.pad: _pad,
    torch._C._nn.pad: _pad,
    torch.Tensor.__getitem__: _getitem,
    F.interpolate: _interpolate,
    torch.Tensor.mean: _reduction,
    torch.mean: _reduction,
    torch.Tensor.sum: _reduction,
    torch.sum: _reduction,
    torch.Tensor.amax: _reduction,
    torch.amax: _reduction,
}

# Values that hold no tensor. Most calls a pass makes are attribute reads and size queries that return one of these;
# telling them apart without the general pytree walk keeps tracking cheap.
_NO_TENSORS = (int, float, bool, str, type(None), slice, torch.Size, torch.dtype, torch.device, torch.memory_format)


def _collect(value: object, found: list[torch.Tensor]) -> None:
    """Append the tensors in ``value`` to ``found`` in pytree order (plain containers walked here, others by pytree)."""
    if isinstance(value, torch.Tensor):
        found.append(value)
    elif type(value) is tuple or type(value) is list:
        for item in value:
            _collect(item, found)
    elif type(value) is dict:
        for item in value.values():
            _collect(item, found)
    elif not isinstance(value, _NO_TENSORS):
        found.extend(t for t in tree_flatten(value)[0] if isinstance(t, torch.Tensor))


class FieldTracker(TorchFunctionMode):
    """Follows the receptive field of every tensor made from ``source`` through every torch function call.

    Also records, for each new tensor (not a view, not an in-place result), its bytes: the forward's activations.
    """

    def __init__(self, source: torch.Tensor) -> None:
        super().__init__()
        self.fields: dict[int, ReceptiveField] = {id(source): ReceptiveField()}
        self.activation_bytes = 0
        self._alive: list[torch.Tensor] = [source]  # keeps ids unique for the duration of the pass

    def field(self, tensor: torch.Tensor) -> ReceptiveField | None:
        """The field of a tensor made during the pass (None for parameters and constants)."""
        return self.fields.get(id(tensor))

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        outputs: list[torch.Tensor] = []
        _collect(out, outputs)
        if not outputs:
            return out
        inputs: list[torch.Tensor] = []
        _collect(args, inputs)
        _collect(kwargs, inputs)
        fields = self.fields
        known = [fields[id(t)] for t in inputs if id(t) in fields]
        if not known:
            return out
        rf = known[0]
        for other in known[1:]:
            rf = rf.union(other)
        transform = _TRANSFORMS.get(func)
        if transform is not None:
            rf = transform(rf, args, kwargs, outputs[0])
        elif any(t.dim() < 4 for t in outputs) and any(t.dim() == 4 for t in inputs if id(t) in fields):
            rf = GLOBAL  # flattened or fully connected: every output sees every position
        input_ids = {id(t) for t in inputs}
        for t in outputs:
            if id(t) not in input_ids and t._base is None:  # new storage: not in place, not a view
                self.activation_bytes += t.numel() * t.element_size()
            fields[id(t)] = rf
            self._alive.append(t)
        return out
