"""Per-layer summary tables: what each layer outputs, holds, costs and sees.

Conventions, stated once:

- Multiply-adds count the multiplications of convolutions and fully connected layers (one multiply-add per weight
  use; normalisation, activations, pooling and additions are not counted), the convention of the papers' tables.
  They come from the FLOP formulas of ``torch.utils.flop_counter``, which count two FLOPs per multiply-add.
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

from convzoo.analysis.costs import InferenceState, MacCounter, as_module, count_macs, count_params
from convzoo.analysis.fields import FieldTracker, ReceptiveField, format_number
from convzoo.analysis.input_size import INPUT_SIZE_FORMS, model_in_chans, parse_input_size
from convzoo.registry import get_model_card

__all__ = ["LayerRow", "Summary", "count_macs", "count_params", "summary"]


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
            "-" if rf is None or rf.is_global else "x".join(dict.fromkeys(format_number(j) for j in rf.jump)),
            "-" if rf is None or rf.is_global else ",".join(dict.fromkeys(format_number(s) for s in rf.start)),
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


class _Trace:
    """One forward pass of ``model`` with a hook on every module: the table's rows and what the pass made and kept.

    A module's row opens when its forward starts and closes when it returns; the receptive fields, activation
    bytes and multiply-adds are tracked by modes that see every operation, inside modules or between them.
    """

    def __init__(self, model: nn.Module, input_size: tuple[int, ...], depth: int, device: str | torch.device) -> None:
        self.model = model
        self.depth = depth
        self.device = device
        # Qualified name and nesting level (0 for a top-level child) of every module but the root.
        self.modules = {m: (n, n.count(".")) for n, m in model.named_modules() if n}
        self.params = list(model.parameters())
        self.param_ids = {id(p) for p in self.params}
        self.rows: list[LayerRow] = []
        self.first_calls: dict[str, tuple[LayerRow, nn.Module]] = {}
        self.open_rows: dict[str, list[LayerRow]] = {}
        self.stack: list[tuple[str, nn.Module, tuple[int, ...] | None]] = []
        self.saved: dict[int, int] = {}
        self.x = torch.zeros((1, *input_size), device=device)
        self.fields = FieldTracker(self.x)
        self.macs = MacCounter()

    def enter(self, module: nn.Module, inputs: tuple) -> None:
        """Forward pre-hook: push the module on the call stack and open its row."""
        qualname, level = self.modules[module]
        first_in = next((t for t in inputs if isinstance(t, torch.Tensor)), None)
        self.stack.append((qualname, module, tuple(first_in.shape) if first_in is not None else None))
        if level >= self.depth:
            return
        row = LayerRow(qualname, type(module).__name__, level + 1, None, 0, 0, 0)
        row.kernel, row.stride, row.padding = _window(module)
        self.rows.append(row)
        self.first_calls.setdefault(qualname, (row, module))
        self.open_rows.setdefault(qualname, []).append(row)
        self.macs.open.add(qualname)

    def exit(self, module: nn.Module, _inputs: tuple, output: object) -> None:
        """Forward hook: pop the module and fill its row from the output."""
        qualname, level = self.modules[module]
        self.stack.pop()
        if level >= self.depth:
            return
        self.macs.open.discard(qualname)
        row = self.open_rows[qualname].pop()
        out = _first_tensor(output)
        if out is not None:
            row.output_shape = tuple(out.shape)
            row.activation_bytes = out.numel() * out.element_size()
            row.rf = self.fields.field(out)

    def pack(self, t: torch.Tensor) -> torch.Tensor:
        """Saved-tensor hook: note the storage of what autograd keeps for the backward pass, parameters aside."""
        base = t._base if t._base is not None else t
        if id(base) not in self.param_ids and id(t) not in self.param_ids:
            self.saved[id(base)] = base.numel() * base.element_size()
        return t

    def run(self) -> object:
        """The forward pass with the hooks and modes in place; returns the model's output."""
        handles = [m.register_forward_pre_hook(self.enter) for m in self.modules]
        handles += [m.register_forward_hook(self.exit) for m in self.modules]
        grad = any(p.requires_grad for p in self.params)
        try:
            with (
                InferenceState(self.model, self.device),
                torch.set_grad_enabled(grad),
                torch.autograd.graph.saved_tensors_hooks(self.pack, _unpack),
                self.macs,
                self.fields,
            ):
                return self.model(self.x)
        finally:
            for h in handles:
                h.remove()

    def failure(self, name: str, input_size: tuple[int, ...], error: Exception) -> ValueError:
        """The error to raise when the pass fails: where, and on what input."""
        shape = "x".join(map(str, input_size))
        if not self.stack:  # in the model's own forward, outside any child module
            return ValueError(
                f"{name}: the forward pass at input {shape} (a batch of shape {tuple(self.x.shape)}) failed: {error}"
            )
        where, module, got = self.stack[-1]
        return ValueError(
            f"{name}: the forward pass at input {shape} failed in {where} "
            f"({type(module).__name__}), which got an input of shape {got}: {error}"
        )

    def table(self, name: str, input_size: tuple[int, ...], result: object) -> Summary:
        """The table: each module's parameters and multiply-adds go on the row of its first call."""
        for row, module in self.first_calls.values():
            row.params, row.trainable_params = _param_counts(module)
            row.macs = self.macs.module_macs(row.name)
        out = _first_tensor(result)
        return Summary(
            model_name=name,
            input_size=input_size,
            rows=self.rows,
            total_params=sum(p.numel() for p in self.params),
            trainable_params=sum(p.numel() for p in self.params if p.requires_grad),
            total_macs=self.macs.macs,
            activation_bytes=self.fields.activation_bytes,
            training_bytes=sum(self.saved.values()),
            param_bytes=sum(t.numel() * t.element_size() for t in [*self.params, *self.model.buffers()]),
            output_shape=tuple(out.shape) if out is not None else None,
            output_rf=self.fields.field(out) if out is not None else None,
        )


def _unpack(t: torch.Tensor) -> torch.Tensor:
    return t


def _param_counts(module: nn.Module) -> tuple[int, int]:
    """``count_params`` of ``module``, all and trainable, in one walk."""
    total = trainable = 0
    for p in module.parameters(recurse=next(module.children(), None) is not None):
        total += p.numel()
        trainable += p.numel() if p.requires_grad else 0
    return total, trainable


def summary(
    model: nn.Module | str,
    input_size: int | str | Sequence[int] | None = None,
    *,
    depth: int = 3,
    device: str | torch.device | None = None,
) -> Summary:
    """Trace one forward pass and tabulate every module down to ``depth`` levels of nesting.

    Args:
        model: A network, or a registered name (then built on the meta device: no memory is allocated).
        input_size: The image: (C, H, W), torchinfo's (N, C, H, W) (every figure is per image, so N is dropped),
            (H, W) or an int for a square image with the model's input channels, or text such as ``"3x224x224"``
            (see `parse_input_size`). Default: the model card's input size; a module that is not a registered
            convzoo model needs one.
        depth: Nesting levels to show (1: the top-level children only); deeper modules fold into their parents.
        device: Where to run; default: where the model's parameters are. ``"meta"`` needs a model built there.

    Raises:
        ValueError: If the input size is missing or malformed, or the forward pass fails; the message names the
            layer and the input shape it got.
        KeyError: For an unknown model name.
    """
    if isinstance(model, str):
        device = "meta"
    model = as_module(model, "summary")
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 0:
        raise ValueError(f"depth must be a whole number of nesting levels, 0 or more; got {depth!r}")
    name = getattr(model, "model_name", type(model).__name__)
    if input_size is None:
        input_size = _card_input_size(model, name)
    input_size = parse_input_size(input_size, in_chans=model_in_chans(model))
    if device is None:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
    trace = _Trace(model, input_size, depth, device)
    try:
        result = trace.run()
    except Exception as e:
        if not trace.stack and isinstance(e, ValueError):
            raise  # the model's own check of its input, which says what it expects
        raise trace.failure(name, input_size, e) from e
    return trace.table(name, input_size, result)


def _card_input_size(model: nn.Module, name: str) -> tuple[int, ...]:
    """The input size of a registered model's card; a clear error for any other module."""
    card = getattr(model, "card", None)
    if card is None:
        try:
            card = get_model_card(name)
        except KeyError:
            card = None
    if card is None:
        example = f"({model_in_chans(model) or 3}, 224, 224)"
        raise ValueError(
            f"summary of {name}: an input size is needed for a module that is not a registered convzoo model; "
            f"give one, e.g. summary(model, {example}) or summary(model, 224) for a square image "
            f"(accepted: {INPUT_SIZE_FORMS})"
        )
    return card.input_size


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
