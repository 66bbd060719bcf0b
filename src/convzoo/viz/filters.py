"""The kernels of a convolution as pictures: the first layer's in colour, as in the AlexNet paper's figure 3, and
deeper layers' as the mean over their input channels.

First-layer kernels act on pixels directly, so they can be read as small images (oriented edges, colour blobs).
A deeper kernel mixes tens or hundreds of feature maps; its channel mean only hints at its spatial shape.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch.nn as nn

from convzoo.viz.grid import make_grid, normalize_each, save_grid

__all__ = ["conv_layer_names", "filter_grid", "filter_tiles", "filter_weights", "get_layer", "plot_filters"]

# How many names an error lists before it says how many more there are.
_LISTED = 24


def conv_layer_names(model: nn.Module) -> list[str]:
    """Qualified names of the model's 2-D convolutions, in registration order (the first is the input layer)."""
    return [name for name, module in model.named_modules() if isinstance(module, nn.Conv2d)]


def get_layer(
    model: nn.Module,
    name: str,
    *,
    valid: Sequence[str] | None = None,
    shown: Sequence[str] | None = None,
    what: str = "layer",
) -> nn.Module:
    """The module ``name`` of ``model``.

    Args:
        model: The network.
        name: A qualified module name, e.g. ``layer2.0.conv1``.
        valid: The names that are acceptable here (default: every module's).
        shown: The names an error lists (default: ``valid``); close matches come from all of ``valid``.
        what: What such a module is called in the error, e.g. ``"convolution"``.

    Raises:
        KeyError: ``name`` is not among them; the message suggests close names and lists the valid ones.
    """
    modules = dict(model.named_modules())
    valid = [n for n in modules if n] if valid is None else list(valid)
    if name in valid and name in modules:
        return modules[name]
    model_name = getattr(model, "model_name", type(model).__name__)
    close = difflib.get_close_matches(name, valid, n=5, cutoff=0.5)
    shown = valid if shown is None else list(shown)
    listed = ", ".join(shown[:_LISTED]) + (f", ... ({len(shown)} in all)" if len(shown) > _LISTED else "")
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise KeyError(f"{model_name} has no {what} named {name!r}{hint} Valid names: {listed}")


def filter_weights(model: nn.Module, layer: str | None = None) -> np.ndarray:
    """The raw kernels of a convolution, float32 (out_channels, in_channels / groups, kH, kW).

    Args:
        model: The network.
        layer: Qualified name of a ``Conv2d`` (default: the first, which sees the image).

    Raises:
        KeyError: ``layer`` is not a convolution of the model (the message lists those that are).
        ValueError: The model has no convolution.
    """
    names = conv_layer_names(model)
    if not names:
        raise ValueError(f"{getattr(model, 'model_name', type(model).__name__)} has no Conv2d layer")
    conv = get_layer(model, names[0] if layer is None else layer, valid=names, what="convolution")
    return conv.weight.detach().float().cpu().numpy()


def filter_tiles(model: nn.Module, layer: str | None = None, *, colour: bool | None = None) -> np.ndarray:
    """One display tile per kernel, each stretched to [0, 1] on its own.

    Each tile gets its own range, as in AlexNet's figure: kernels differ in scale by orders of magnitude and one
    shared range would leave most of them flat grey.

    Args:
        model: The network.
        layer: Qualified name of a ``Conv2d`` (default: the first).
        colour: Show a kernel's three input channels as red, green and blue. Default: for a kernel with three
            input channels in the first convolution, the one that sees the RGB image.

    Returns:
        (out_channels, kH, kW, 3) in colour, else (out_channels, kH, kW): the mean over the input channels (a
        single-channel kernel as it is).

    Raises:
        ValueError: ``colour`` for a kernel without three input channels, or 1x1 kernels shown as channel means
            (each would be one constant pixel).
    """
    weights = filter_weights(model, layer)
    first = layer is None or layer == conv_layer_names(model)[0]
    if colour is None:
        colour = first and weights.shape[1] == 3
    if colour:
        if weights.shape[1] != 3:
            raise ValueError(f"kernels of {layer or 'the first convolution'} have {weights.shape[1]} input channels")
        return normalize_each(weights.transpose(0, 2, 3, 1))
    if weights.shape[-2:] == (1, 1):
        modules = dict(model.named_modules())
        spatial = [n for n in conv_layer_names(model) if modules[n].weight.shape[-2:] != (1, 1)]
        raise ValueError(
            f"{layer} has 1x1 kernels: each is a single pixel, with nothing to draw; layers with larger kernels: "
            + ", ".join(spatial[:_LISTED])
        )
    return normalize_each(weights.mean(axis=1))


def filter_grid(
    model: nn.Module, layer: str | None = None, *, colour: bool | None = None, ncols: int | None = None, pad: int = 1
) -> np.ndarray:
    """The kernels of a convolution as one image: `filter_tiles` laid out in a near-square grid on white.

    Args:
        model: The network.
        layer: Qualified name of a ``Conv2d`` (default: the first).
        colour: As in `filter_tiles`.
        ncols: Kernels per row (default: a near-square grid).
        pad: Pixels between kernels.

    Returns:
        (rows * (kH + pad) + pad, ncols * (kW + pad) + pad), with a trailing 3 in colour, in [0, 1].
    """
    return make_grid(filter_tiles(model, layer, colour=colour), ncols=ncols, pad=pad)


def plot_filters(model: nn.Module, path: str | os.PathLike[str], layer: str | None = None, *, title: str = "") -> Path:
    """Write `filter_grid` as a PNG (grey kernels in grey) and return its path."""
    weights = filter_weights(model, layer)
    name = layer or conv_layer_names(model)[0]
    tiles = filter_tiles(model, layer)
    # Grey kernels get coloured borders: white ones would merge with their brightest pixels.
    grid = make_grid(tiles, pad_value=1.0 if tiles.ndim == 4 else float("nan"))
    out, inp, kh, kw = weights.shape
    mode = "RGB" if grid.ndim == 3 else ("single channel" if inp == 1 else f"mean over {inp} input channels")
    heading = f"{title}: " if title else ""
    heading += f"{name}, {out} kernels of {kh}x{kw} ({mode}; each scaled to its own range)"
    return save_grid(grid, path, title=heading, border="tab:blue")
