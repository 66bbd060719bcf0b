"""Per-layer summary tables: what each layer outputs, holds, costs and sees.

Conventions, stated once:

- Multiply-adds count the multiplications of convolutions and fully connected layers (one multiply-add per weight
  use; normalisation, activations, pooling and additions are not counted), the convention of the papers' tables.
  They come from ``torch.utils.flop_counter``, which reports two FLOPs per multiply-add.
- A layer's activation memory is the size of its output for one image. The forward total counts every new tensor
  the forward pass makes, inside modules or between them (concatenations, additions), once: in-place results and
  views share memory with their input and are not counted again. The input image is not counted.
- The training-memory estimate is what autograd keeps for the backward pass (every tensor saved by an operation,
  once, parameters excluded) for one image, measured with ``torch.autograd.graph.saved_tensors_hooks`` in eval
  mode; dropout masks and batch-norm's per-channel statistics are left out.
- Parameter memory counts parameters and buffers in their own dtypes.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from convzoo.analysis.receptive import FieldTracker, ReceptiveField


@dataclass
class LayerRow:
    """One call of one module during the forward pass."""

    name: str
    type: str
    depth: int
    output_shape: tuple[int, ...] | None
    params: int
    trainable_params: int
    macs: int
    activation_bytes: int = 0
    kernel: str = ""
    stride: str = ""
    padding: str = ""
    rf: ReceptiveField | None = None

    def as_dict(self) -> dict[str, object]:
        """Plain values for CSV and JSON."""
        rf = self.rf
        return {
            "name": self.name,
            "type": self.type,
            "depth": self.depth,
            "output_shape": list(self.output_shape) if self.output_shape else None,
            "params": self.params,
            "trainable_params": self.trainable_params,
            "frozen_params": self.params - self.trainable_params,
            "mult_adds": self.macs,
            "activation_bytes": self.activation_bytes,
            "kernel": self.kernel,
            "stride": self.stride,
            "padding": self.padding,
            "rf_size": None if rf is None else ("global" if rf.is_global else _plain(rf.size)),
            "rf_jump": None if rf is None or rf.is_global else _plain(rf.jump),
            "rf_start": None if rf is None or rf.is_global else _plain(rf.start),
        }


def _plain(values: tuple[float, ...]) -> list[float | int]:
    return [int(v) if float(v).is_integer() else v for v in values]


def _bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


_COLUMNS = (
    "Layer",
    "Type",
    "Output shape",
    "Params",
    "Mult-adds",
    "Act. mem",
    "Kernel/stride/pad",
    "RF",
    "Jump",
    "Start",
)
_ALIGN = ("<", "<", ">", ">", ">", ">", "<", ">", ">", ">")


@dataclass
class Summary:
    """What a forward pass at ``input_size`` touched, module by module, and the totals."""

    model_name: str
    input_size: tuple[int, ...]
    rows: list[LayerRow] = field(default_factory=list)
    total_params: int = 0
    trainable_params: int = 0
    total_macs: int = 0
    activation_bytes: int = 0
    training_bytes: int = 0
    param_bytes: int = 0
    output_shape: tuple[int, ...] | None = None
    output_rf: ReceptiveField | None = None

    def _cells(self, row: LayerRow, indent: bool) -> list[str]:
        name = ("  " * (row.depth - 1) + row.name.rsplit(".", 1)[-1]) if indent and row.depth > 1 else row.name
        rf = row.rf
        ksp = "/".join(x for x in (row.kernel, row.stride, row.padding) if x)
        return [
            name,
            row.type,
            "x".join(map(str, row.output_shape[1:])) if row.output_shape else "-",
            f"{row.params:,}" if row.params else "-",
            f"{row.macs:,}" if row.macs else "-",
            _bytes(row.activation_bytes) if row.activation_bytes else "-",
            ksp or "-",
            str(rf) if rf is not None else "-",
            "-" if rf is None or rf.is_global else "x".join(dict.fromkeys(_num(j) for j in rf.jump)),
            "-" if rf is None or rf.is_global else ",".join(dict.fromkeys(_num(s) for s in rf.start)),
        ]

    def totals(self) -> dict[str, object]:
        """The totals, as plain values."""
        return {
            "model": self.model_name,
            "input_size": list(self.input_size),
            "output_shape": list(self.output_shape) if self.output_shape else None,
            "params": self.total_params,
            "trainable_params": self.trainable_params,
            "frozen_params": self.total_params - self.trainable_params,
            "mult_adds": self.total_macs,
            "forward_activation_bytes": self.activation_bytes,
            "training_saved_bytes": self.training_bytes,
            "param_bytes": self.param_bytes,
        }

    def footer(self) -> list[str]:
        """The totals as lines of text."""
        frozen = self.total_params - self.trainable_params
        rf = self.output_rf
        return [
            f"Parameters: {self.total_params:,} ({self.trainable_params:,} trainable, {frozen:,} frozen); "
            f"parameter memory {_bytes(self.param_bytes)}",
            f"Multiply-adds per image: {self.total_macs:,} ({self.total_macs / 1e9:.2f} G)",
            f"Forward activations per image: {_bytes(self.activation_bytes)} "
            f"(every new tensor once; in-place results and views not counted)",
            f"Training memory per image (kept for backward): {_bytes(self.training_bytes)}",
            f"Receptive field of the output: {rf if rf is not None else '-'}",
        ]

    def to_table(self) -> str:
        """A readable fixed-width table."""
        body = [self._cells(r, indent=True) for r in self.rows]
        widths = [max(len(c) for c in col) for col in zip(_COLUMNS, *body)]

        def line(cells: Sequence[str]) -> str:
            return "  ".join(f"{c:{a}{w}}" for c, a, w in zip(cells, _ALIGN, widths)).rstrip()

        rule = "-" * len(line(_COLUMNS))
        shape = "x".join(map(str, self.input_size))
        return "\n".join(
            [f"{self.model_name} at input {shape}", rule, line(_COLUMNS), rule, *map(line, body), rule, *self.footer()]
        )

    def to_markdown(self) -> str:
        """A GitHub-flavoured Markdown table with the totals below it."""
        head = "| " + " | ".join(_COLUMNS) + " |"
        align = "|" + "|".join("---" if a == "<" else "---:" for a in _ALIGN) + "|"
        body = [
            "| " + " | ".join(c.replace("|", "\\|") for c in self._cells(r, indent=False)) + " |" for r in self.rows
        ]
        shape = "x".join(map(str, self.input_size))
        return "\n".join([f"**{self.model_name}** at input {shape}", "", head, align, *body, "", *self.footer()])

    def to_csv(self) -> str:
        """One CSV row per layer call."""
        buffer = io.StringIO()
        rows = [r.as_dict() for r in self.rows]
        writer = csv.DictWriter(buffer, fieldnames=list(LayerRow("", "", 0, None, 0, 0, 0).as_dict()))
        writer.writeheader()
        for row in rows:
            writer.writerow({k: json.dumps(v) if isinstance(v, list) else v for k, v in row.items()})
        return buffer.getvalue()

    def to_json(self) -> str:
        """Totals and layers as JSON."""
        return json.dumps({**self.totals(), "layers": [r.as_dict() for r in self.rows]}, indent=1)

    def format(self, fmt: str) -> str:
        """Render as ``"table"``, ``"markdown"``, ``"csv"`` or ``"json"``."""
        renderers = {"table": self.to_table, "markdown": self.to_markdown, "csv": self.to_csv, "json": self.to_json}
        if fmt not in renderers:
            raise ValueError(f"unknown format {fmt!r}; expected one of {sorted(renderers)}")
        return renderers[fmt]()

    def __str__(self) -> str:
        return self.to_table()


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def count_params(model: nn.Module, *, trainable_only: bool = False) -> int:
    """Number of parameters (shared tensors counted once)."""
    seen: dict[int, int] = {}
    for p in model.parameters():
        if not trainable_only or p.requires_grad:
            seen[id(p)] = p.numel()
    return sum(seen.values())


def count_macs(model: nn.Module, input_size: Sequence[int], *, device: str | torch.device | None = None) -> int:
    """Multiply-adds of one forward pass on a single image of ``input_size`` (C, H, W), in eval mode."""
    if device is None:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
    counter = FlopCounterMode(display=False, depth=0)
    with _inference_state(model, device), torch.no_grad(), counter:
        model(torch.zeros((1, *input_size), device=device))
    return int(counter.get_total_flops() // 2)


_NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


class _inference_state:
    """Eval mode for the pass, restored afterwards; on the meta device, normalisation layers take a fast path.

    PyTorch computes normalisation on the meta device through slow Python decompositions. A norm layer keeps its
    input's shape, costs no multiply-adds by our convention, and autograd keeps its input: one fused affine
    ``shift + x * scale`` makes one tensor of the same shape and keeps the same input, at a fraction of the cost.
    """

    def __init__(self, model: nn.Module, device: str | torch.device) -> None:
        self.model = model
        self.meta = torch.device(device).type == "meta"

    def __enter__(self) -> None:
        self.was_training = self.model.training
        self.model.eval()
        if self.meta:
            for m in self.model.modules():
                if isinstance(m, _NORMS):
                    m.forward = _affine_stand_in(m)  # instance attribute, deleted on exit

    def __exit__(self, *exc: object) -> None:
        self.model.train(self.was_training)
        if self.meta:
            for m in self.model.modules():
                if isinstance(m, _NORMS) and "forward" in m.__dict__:
                    del m.forward


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
        return torch.addcmul(bias.view(shape), x, scale) if bias is not None else x * scale

    return forward


def summary(
    model: nn.Module | str,
    input_size: Sequence[int] | None = None,
    *,
    depth: int = 3,
    device: str | torch.device | None = None,
) -> Summary:
    """Trace one forward pass and tabulate every module down to ``depth`` levels of nesting.

    Args:
        model: A network, or a registered name (then built on the meta device: no memory is allocated).
        input_size: (C, H, W) of one image; default: the model card's input size.
        depth: Nesting levels to show (1: the top-level children only); deeper modules fold into their parents.
        device: Where to run; default: where the model's parameters are. ``"meta"`` needs a model built there.

    Raises:
        ValueError: If the forward pass fails; the message names the layer and the input shape it got.
    """
    from convzoo.registry import get_model_card

    if isinstance(model, str):
        from convzoo.factory import create_model

        with torch.device("meta"):
            model = create_model(model)
        device = "meta"
    name = getattr(model, "model_name", type(model).__name__)
    if input_size is None:
        card = getattr(model, "card", None) or get_model_card(name)
        input_size = card.input_size
    input_size = tuple(int(s) for s in input_size)
    if len(input_size) != 3 or min(input_size) < 1:
        raise ValueError(f"input_size must be (C, H, W) with positive sizes; got {input_size}")
    if device is None:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))

    rows: list[LayerRow] = []
    seen: set[str] = set()
    names = {m: n for n, m in model.named_modules() if n}
    open_rows: dict[str, list[LayerRow]] = {}
    stack: list[tuple[str, nn.Module, tuple[int, ...] | None]] = []
    x = torch.zeros((1, *input_size), device=device)
    tracker = FieldTracker(x)

    def pre_hook(module: nn.Module, inputs: tuple) -> None:
        qualname = names[module]
        first_in = next((t for t in inputs if isinstance(t, torch.Tensor)), None)
        stack.append((qualname, module, tuple(first_in.shape) if first_in is not None else None))
        if qualname.count(".") >= depth:
            return
        first = qualname not in seen
        seen.add(qualname)
        params = count_params(module) if first else 0
        trainable = count_params(module, trainable_only=True) if first else 0
        row = LayerRow(qualname, type(module).__name__, qualname.count(".") + 1, None, params, trainable, 0)
        row.kernel, row.stride, row.padding = _window(module)
        rows.append(row)
        open_rows.setdefault(qualname, []).append(row)

    def hook(module: nn.Module, _inputs: tuple, output: object) -> None:
        qualname = names[module]
        stack.pop()
        if qualname.count(".") >= depth:
            return
        row = open_rows[qualname].pop()
        out = _first_tensor(output)
        if out is not None:
            row.output_shape = tuple(out.shape)
            row.activation_bytes = out.numel() * out.element_size()
            row.rf = tracker.field(out)

    handles = [m.register_forward_pre_hook(pre_hook) for m in names] + [m.register_forward_hook(hook) for m in names]
    counter = FlopCounterMode(display=False, depth=None)
    param_ids = {id(p) for p in model.parameters()}
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        base = t._base if t._base is not None else t
        if id(base) not in param_ids and id(t) not in param_ids:
            saved[id(base)] = base.numel() * base.element_size()
        return t

    grad = any(p.requires_grad for p in model.parameters())
    try:
        with (
            _inference_state(model, device),
            torch.set_grad_enabled(grad),
            torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t),
            counter,
            tracker,
        ):
            result = model(x)
    except Exception as e:
        if not stack:
            raise
        where, module, shape = stack[-1]
        raise ValueError(
            f"{name}: the forward pass at input {'x'.join(map(str, input_size))} failed in {where} "
            f"({type(module).__name__}), which got an input of shape {shape}: {e}"
        ) from e
    finally:
        for h in handles:
            h.remove()

    flops = counter.get_flop_counts()
    root = type(model).__name__
    counted: set[str] = set()
    for row in rows:
        if row.name not in counted:
            row.macs = int(sum(flops.get(f"{root}.{row.name}", {}).values()) // 2)
            counted.add(row.name)
    out = _first_tensor(result)
    return Summary(
        model_name=name,
        input_size=input_size,
        rows=rows,
        total_params=count_params(model),
        trainable_params=count_params(model, trainable_only=True),
        total_macs=int(counter.get_total_flops() // 2),
        activation_bytes=tracker.activation_bytes,
        training_bytes=sum(saved.values()),
        param_bytes=sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()]),
        output_shape=tuple(out.shape) if out is not None else None,
        output_rf=tracker.field(out) if out is not None else None,
    )


def _window(module: nn.Module) -> tuple[str, str, str]:
    """Kernel, stride and padding of a sliding-window layer, as short strings ("" for other layers)."""
    if not isinstance(module, (nn.modules.conv._ConvNd, nn.modules.pooling._MaxPoolNd, nn.modules.pooling._AvgPoolNd)):
        return "", "", ""

    def fmt(v: object) -> str:
        if isinstance(v, str):
            return v
        values = tuple(v) if isinstance(v, (tuple, list)) else (v,)
        return "x".join(dict.fromkeys(str(i) for i in values)) if len(set(values)) == 1 else "x".join(map(str, values))

    stride = module.stride if module.stride is not None else module.kernel_size
    return fmt(module.kernel_size), fmt(stride), fmt(module.padding)


def _first_tensor(output: object) -> torch.Tensor | None:
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (list, tuple)):
        return next((t for t in map(_first_tensor, output) if t is not None), None)
    if isinstance(output, dict):
        return next((t for t in map(_first_tensor, output.values()) if t is not None), None)
    return None
