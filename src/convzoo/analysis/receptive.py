"""Receptive fields of a network's layers: the theoretical field of every module and the effective field.

The theoretical field (``convzoo.analysis.fields``) is what a unit can see; the effective receptive field (Luo, Li,
Urtasun and Zemel, "Understanding the Effective Receptive Field in Deep Convolutional Neural Networks", NeurIPS 2016)
is the gradient of one central output unit with respect to the input, averaged over inputs: how much each input
pixel actually matters.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn

from convzoo.analysis.fields import ReceptiveField
from convzoo.analysis.input_size import model_in_chans, parse_input_size
from convzoo.analysis.summary import Summary, summary


def receptive_fields(
    model: nn.Module, input_size: int | str | Sequence[int], *, device: str | torch.device | None = None
) -> dict[str, ReceptiveField]:
    """The theoretical receptive field of every module's output, by qualified module name.

    Args:
        model: The network.
        input_size: (C, H, W) of one image, or another form `parse_input_size` takes.
        device: Where to run; ``"meta"`` costs no memory. Default: where the model's parameters are.
    """
    result = summary(model, input_size, depth=10**6, device=device)
    return {row.name: row.rf for row in result.rows if row.rf is not None}


def effective_receptive_field(
    model: nn.Module,
    layer: str,
    input_size: int | str | Sequence[int],
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
        input_size: (C, H, W), or another form `parse_input_size` takes.
        samples: How many random inputs to average over.
        batch_size: Inputs per backward pass.
        seed: Seed of the random inputs.

    Returns:
        An (H, W) array, normalised so that its maximum is 1.
    """
    modules = dict(model.named_modules())
    if layer not in modules:
        close = difflib.get_close_matches(layer, list(modules), n=5)
        raise KeyError(f"no module named {layer!r}" + (f"; did you mean {', '.join(close)}?" if close else ""))
    input_size = parse_input_size(input_size, in_chans=model_in_chans(model))
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


@dataclass
class MeasuredField:
    """A layer's theoretical receptive field beside its measured effective one.

    Attributes:
        layer: Qualified name of the probed module.
        layer_type: Its class name.
        output_shape: Its output's shape for one image, (1, C, H, W).
        theoretical: Its theoretical field; None or global when every unit sees the whole input.
        erf: Mean absolute gradient of the central unit with respect to the input pixels, (H, W), maximum 1.
        centre: Centre of mass (y, x) of ``erf``, in input pixels.
        radius: Root-mean-square distance of the input pixels from ``centre``, weighted by ``erf``.
    """

    layer: str
    layer_type: str
    output_shape: tuple[int, ...]
    theoretical: ReceptiveField | None
    erf: np.ndarray
    centre: tuple[float, float]
    radius: float

    @property
    def centre_unit(self) -> tuple[int, int]:
        """Index (row, column) of the probed unit: the middle of the layer's output map."""
        h, w = self.output_shape[-2:]
        return h // 2, w // 2


def measure_receptive_field(
    model: nn.Module,
    input_size: int | str | Sequence[int],
    layer: str | None = None,
    *,
    samples: int = 16,
    batch_size: int = 8,
    seed: int = 0,
) -> MeasuredField:
    """Measure a layer's effective receptive field and set it beside the theoretical one.

    Args:
        model: The network (its current weights are used).
        input_size: (C, H, W), or another form `parse_input_size` takes.
        layer: Qualified name of the module to probe; default: the last top-level module with a spatial output.
        samples: How many random inputs to average the gradient over.
        batch_size: Inputs per backward pass.
        seed: Seed of the random inputs.

    Returns:
        The layer's theoretical and effective fields, with the effective field's centre and radius.

    Raises:
        KeyError: If the model has no module named ``layer``; the message suggests close names.
    """
    table = summary(model, input_size, depth=10**6)
    rows = {r.name: r for r in table.rows}  # a module called more than once is described by its last call
    layer = layer or _last_spatial_layer(table)
    if layer not in rows:
        close = difflib.get_close_matches(layer, list(rows), n=5)
        hint = f"; did you mean {', '.join(close)}?" if close else "; `convzoo summary MODEL --depth 9` lists them"
        raise KeyError(f"{table.model_name} has no layer named {layer!r}{hint}")
    row = rows[layer]
    erf = effective_receptive_field(model, layer, table.input_size, samples=samples, batch_size=batch_size, seed=seed)
    mass = erf / erf.sum()
    ys, xs = np.indices(erf.shape)
    cy, cx = (mass * ys).sum(), (mass * xs).sum()
    radius = np.sqrt((mass * ((ys - cy) ** 2 + (xs - cx) ** 2)).sum())
    return MeasuredField(layer, row.type, row.output_shape, row.rf, erf, (float(cy), float(cx)), float(radius))


def _last_spatial_layer(table: Summary) -> str:
    spatial = [r for r in table.rows if r.output_shape is not None and len(r.output_shape) == 4 and r.depth == 1]
    return spatial[-1].name


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
