"""Receptive fields: the theoretical field of every tensor a forward pass makes, and the effective field.

The theoretical field is tracked through every torch function the forward calls, whether inside a module or not, so
it follows residual additions, concatenations, shortcut subsampling and padding. Per spatial axis a field is three
numbers (Araujo, Norris and Sim, "Computing Receptive Fields of Convolutional Neural Networks", Distill 2019):

- size: how many input pixels one unit sees;
- jump: how many input pixels apart two neighbouring units are (the cumulative stride);
- start: the input coordinate of the centre of the first unit's field (negative when padding reaches past the edge).

A merge (addition, concatenation, multiplication) sees the union of its inputs' fields. An operation that mixes
every position (global pooling, a fully connected layer, a squeeze-and-excitation gate) makes the field global.

The effective receptive field (Luo, Li, Urtasun and Zemel, NeurIPS 2016) is the gradient of one central output unit
with respect to the input, averaged over inputs: how much each input pixel actually matters.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten


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
        return "x".join(_fmt(s) for s in self.size) if self.size[0] != self.size[1] else _fmt(self.size[0])

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


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


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
        inputs = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        known = [self.fields[id(t)] for t in inputs if id(t) in self.fields]
        if not known:
            return out
        rf = known[0]
        for other in known[1:]:
            rf = rf.union(other)
        transform = _TRANSFORMS.get(func)
        outputs = [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)]
        if transform is not None and outputs:
            rf = transform(rf, args, kwargs, outputs[0])
        elif any(t.dim() < 4 for t in outputs) and any(t.dim() == 4 for t in inputs if id(t) in self.fields):
            rf = GLOBAL  # flattened or fully connected: every output sees every position
        input_ids = {id(t) for t in inputs}
        for t in outputs:
            if id(t) not in input_ids and t._base is None:  # new storage: not in place, not a view
                self.activation_bytes += t.numel() * t.element_size()
            self.fields[id(t)] = rf
            self._alive.append(t)
        return out


def receptive_fields(
    model: nn.Module, input_size: Sequence[int], *, device: str | torch.device | None = None
) -> dict[str, ReceptiveField]:
    """The theoretical receptive field of every module's output, by qualified module name.

    Args:
        model: The network.
        input_size: (C, H, W) of one image.
        device: Where to run; ``"meta"`` costs no memory. Default: where the model's parameters are.
    """
    from convzoo.analysis.summary import summary

    result = summary(model, input_size, depth=10**6, device=device)
    return {row.name: row.rf for row in result.rows if row.rf is not None}


def effective_receptive_field(
    model: nn.Module,
    layer: str,
    input_size: Sequence[int],
    *,
    samples: int = 16,
    batch_size: int = 8,
    seed: int = 0,
) -> np.ndarray:
    """Mean absolute gradient of the central unit of ``layer`` with respect to the input (Luo et al. 2016).

    The model is put in eval mode (batch norm uses its running statistics); inputs are standard normal noise.

    Args:
        model: The network (its current weights are used).
        layer: Qualified name of the module whose output to probe.
        input_size: (C, H, W).
        samples: How many random inputs to average over.
        batch_size: Inputs per backward pass.
        seed: Seed of the random inputs.

    Returns:
        An (H, W) array, normalised so that its maximum is 1.
    """
    modules = dict(model.named_modules())
    if layer not in modules:
        import difflib

        close = difflib.get_close_matches(layer, list(modules), n=5)
        raise KeyError(f"no module named {layer!r}" + (f"; did you mean {', '.join(close)}?" if close else ""))
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    generator = torch.Generator().manual_seed(seed)
    captured: list[torch.Tensor] = []
    handle = modules[layer].register_forward_hook(lambda _m, _i, out: captured.append(out))
    was_training = model.training
    model.eval()
    total = torch.zeros(tuple(input_size[-2:]), dtype=torch.float64)
    try:
        done = 0
        while done < samples:
            n = min(batch_size, samples - done)
            x = torch.randn((n, *input_size), generator=generator).to(device).requires_grad_(True)
            captured.clear()
            model(x)
            out = captured[0]
            if out.dim() != 4:
                raise ValueError(f"layer {layer!r} outputs shape {tuple(out.shape)}; pick a layer with a spatial map")
            h, w = out.shape[-2:]
            out[:, :, h // 2, w // 2].sum().backward()
            total += x.grad.abs().sum((0, 1)).double().cpu()
            done += n
    finally:
        handle.remove()
        model.train(was_training)
    peak = total.max()
    return (total / peak).numpy() if peak > 0 else total.numpy()


def plot_effective_receptive_field(
    erf: np.ndarray,
    path: str | os.PathLike[str],
    *,
    theoretical: ReceptiveField | None = None,
    centre_unit: tuple[int, int] | None = None,
    title: str = "",
) -> None:
    """Save the effective receptive field as a heat map (PNG or SVG by suffix), the theoretical one outlined."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    fig, ax = plt.subplots(figsize=(5.5, 5))
    image = ax.imshow(erf, cmap="magma", interpolation="nearest")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="mean |d unit / d pixel| (max = 1)")
    if theoretical is not None and not theoretical.is_global and centre_unit is not None:
        (top, bottom), (left, right) = theoretical.bounds(centre_unit)
        ax.add_patch(
            Rectangle(
                (left - 0.5, top - 0.5),
                right - left + 1,
                bottom - top + 1,
                fill=False,
                edgecolor="cyan",
                linewidth=1.5,
                label=f"theoretical field {theoretical}",
            )
        )
        ax.legend(loc="upper right", fontsize=8)
    lo_y, hi_y, lo_x, hi_x = -0.5, erf.shape[0] - 0.5, -0.5, erf.shape[1] - 0.5
    if theoretical is not None and not theoretical.is_global and centre_unit is not None:
        # A field wider than the image (padding reaches past the border) is drawn whole, the image inside it.
        (top, bottom), (left, right) = theoretical.bounds(centre_unit)
        lo_y, hi_y = min(lo_y, top - 1.5), max(hi_y, bottom + 1.5)
        lo_x, hi_x = min(lo_x, left - 1.5), max(hi_x, right + 1.5)
    ax.set_xlim(lo_x, hi_x)
    ax.set_ylim(hi_y, lo_y)
    ax.set_title(title or "effective receptive field")
    ax.set_xlabel("input x (pixels)")
    ax.set_ylabel("input y (pixels)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
