"""Per-layer summary tables: output shape, parameters and multiply-adds of every module.

Multiply-adds count the multiplications of convolutions and fully connected layers (one multiply-add per weight use;
normalisation, activations, pooling and additions are not counted), the convention of the papers' tables. They come
from ``torch.utils.flop_counter``, which reports two FLOPs per multiply-add.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode


@dataclass
class LayerRow:
    """One call of one module during the forward pass."""

    name: str
    type: str
    depth: int
    output_shape: tuple[int, ...] | None
    params: int
    macs: int


@dataclass
class Summary:
    """What a forward pass at ``input_size`` touched, module by module."""

    model_name: str
    input_size: tuple[int, ...]
    rows: list[LayerRow] = field(default_factory=list)
    total_params: int = 0
    trainable_params: int = 0
    total_macs: int = 0
    output_shape: tuple[int, ...] | None = None

    def __str__(self) -> str:
        header = ("Layer", "Type", "Output shape", "Params", "Mult-adds")
        body = [
            (
                "  " * (r.depth - 1) + r.name.rsplit(".", 1)[-1] if r.depth > 1 else r.name,
                r.type,
                "x".join(map(str, r.output_shape[1:])) if r.output_shape else "-",
                f"{r.params:,}" if r.params else "-",
                f"{r.macs:,}" if r.macs else "-",
            )
            for r in self.rows
        ]
        widths = [max(len(str(c)) for c in col) for col in zip(header, *body)]
        align = ["<", "<", ">", ">", ">"]

        def line(cells: Sequence[str]) -> str:
            return "  ".join(f"{c:{a}{w}}" for c, a, w in zip(cells, align, widths)).rstrip()

        rule = "-" * len(line(header))
        shape = "x".join(map(str, self.input_size))
        lines = [f"{self.model_name} at input {shape}", rule, line(header), rule, *map(line, body), rule]
        lines += [
            f"Parameters: {self.total_params:,} ({self.trainable_params:,} trainable, "
            f"{self.total_params - self.trainable_params:,} frozen)",
            f"Multiply-adds per image: {self.total_macs:,} ({self.total_macs / 1e9:.2f} G)",
        ]
        return "\n".join(lines)


def count_params(model: nn.Module, *, trainable_only: bool = False) -> int:
    """Number of parameters (shared tensors counted once)."""
    seen: dict[int, int] = {}
    for p in model.parameters():
        if not trainable_only or p.requires_grad:
            seen[id(p)] = p.numel()
    return sum(seen.values())


def count_macs(model: nn.Module, input_size: Sequence[int], *, device: str | torch.device | None = None) -> int:
    """Multiply-adds of one forward pass on a single image of ``input_size`` (C, H, W)."""
    return summary(model, input_size, depth=0, device=device).total_macs


_NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


def _pass_through(x: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
    return x


def _first_tensor(output: object) -> torch.Tensor | None:
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (list, tuple)):
        return next((t for t in map(_first_tensor, output) if t is not None), None)
    if isinstance(output, dict):
        return next((t for t in map(_first_tensor, output.values()) if t is not None), None)
    return None


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
        device: Where to run; default: where the model's parameters are.
    """
    from convzoo.registry import get_model_card

    if isinstance(model, str):
        from convzoo.factory import create_model

        name = model
        with torch.device("meta"):
            model = create_model(name)
        device = "meta"
    name = getattr(model, "model_name", type(model).__name__)
    if input_size is None:
        card = getattr(model, "card", None) or get_model_card(name)
        input_size = card.input_size
    input_size = tuple(int(s) for s in input_size)
    if device is None:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))

    rows: list[LayerRow] = []
    seen: set[str] = set()
    names = {m: n for n, m in model.named_modules() if n}

    open_rows: dict[str, list[LayerRow]] = {}

    def pre_hook(module: nn.Module, _inputs: object) -> None:
        # Rows are opened before the children run, so a container precedes its contents in the table.
        qualname = names[module]
        first = qualname not in seen
        seen.add(qualname)
        row = LayerRow(
            qualname, type(module).__name__, qualname.count(".") + 1, None, count_params(module) if first else 0, 0
        )
        rows.append(row)
        open_rows.setdefault(qualname, []).append(row)

    def hook(module: nn.Module, _inputs: object, output: object) -> None:
        out = _first_tensor(output)
        open_rows[names[module]].pop().output_shape = tuple(out.shape) if out is not None else None

    shown = [m for m in names if names[m].count(".") < depth]
    handles = [m.register_forward_pre_hook(pre_hook) for m in shown] + [m.register_forward_hook(hook) for m in shown]
    counter = FlopCounterMode(display=False, depth=None)
    was_training = model.training
    model.eval()
    if torch.device(device).type == "meta":
        # PyTorch runs normalisation on the meta device through slow Python decompositions. A norm layer keeps its
        # input's shape and costs no multiply-adds by our convention, so it passes its input through here.
        for m in model.modules():
            if isinstance(m, _NORMS):
                m.forward = _pass_through  # instance attribute shadows the class method until deleted below
    try:
        with torch.no_grad(), counter:
            result = model(torch.zeros((1, *input_size), device=device))
    finally:
        model.train(was_training)
        for m in model.modules():
            if "forward" in m.__dict__ and m.__dict__["forward"] is _pass_through:
                del m.forward
        for h in handles:
            h.remove()

    flops = counter.get_flop_counts()
    root = type(model).__name__
    macs_seen: set[str] = set()
    for row in rows:
        if row.name not in macs_seen:
            row.macs = int(sum(flops.get(f"{root}.{row.name}", {}).values()) // 2)
            macs_seen.add(row.name)
    out = _first_tensor(result)
    return Summary(
        model_name=name,
        input_size=input_size,
        rows=rows,
        total_params=count_params(model),
        trainable_params=count_params(model, trainable_only=True),
        total_macs=int(counter.get_total_flops() // 2),
        output_shape=tuple(out.shape) if out is not None else None,
    )
