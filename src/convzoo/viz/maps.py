"""What a layer computes: its feature maps for one image, and the images that excite one of its units most.

The second is the view of Zeiler and Fergus (2014): for a channel of a layer, the images of a data set where it
fires most, each cropped to the part of the image the unit can see (its theoretical receptive field). Early layers
pick out edges and colours in small patches; deeper ones, with fields of half the image or more, object parts.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from convzoo.analysis.fields import ReceptiveField
from convzoo.viz.filters import conv_layer_names, get_layer
from convzoo.viz.grid import make_grid, normalize_each, save_grid, to_display

__all__ = [
    "TopActivations",
    "feature_map_grid",
    "feature_maps",
    "find_layer",
    "layer_activations",
    "plot_feature_maps",
    "plot_top_activations",
    "receptive_box",
    "top_activations",
]


def find_layer(model: nn.Module, layer: str) -> nn.Module:
    """The module named ``layer`` (any module of the model).

    Raises:
        KeyError: No such module; the message suggests close names and lists the tap points of ``feature_info`` and
            the convolutions, the usual choices.
    """
    taps = [f.module for f in getattr(model, "feature_info", [])]
    shown = list(dict.fromkeys(taps + conv_layer_names(model)))
    return get_layer(model, layer, shown=shown or None)


def layer_activations(model: nn.Module, x: torch.Tensor, layer: str) -> torch.Tensor:
    """The output of the module ``layer`` when ``model`` runs on ``x`` (no gradients).

    A module called more than once in a pass (a ReLU shared by a block's two convolutions) gives its last output,
    as `convzoo.analysis.receptive_fields` reports its last field.

    Raises:
        KeyError: No module of that name (the message lists the tap points and convolutions).
        ValueError: The module did not run, or its output is not a tensor.
    """
    module = find_layer(model, layer)
    captured: list[torch.Tensor] = []

    def keep(_module: nn.Module, _inputs: tuple, output: object) -> None:
        # A copy: an in-place ReLU after this module would otherwise overwrite what was captured.
        if isinstance(output, torch.Tensor):
            captured.append(output.detach().clone())

    handle = module.register_forward_hook(keep)
    try:
        with torch.no_grad():
            model(x)
    finally:
        handle.remove()
    if not captured:
        raise ValueError(f"layer {layer!r} did not output a tensor in the forward pass")
    return captured[-1]


def _spatial(out: torch.Tensor, layer: str) -> torch.Tensor:
    if out.dim() != 4:
        raise ValueError(
            f"layer {layer!r} outputs shape {tuple(out.shape)}; pick a layer with feature maps (N, C, H, W)"
        )
    return out


def feature_maps(model: nn.Module, x: torch.Tensor, layer: str) -> np.ndarray:
    """The raw feature maps (C, H, W) of ``layer`` for one input ``x`` (1, C, H, W), as the network sees it."""
    if x.dim() != 4 or x.shape[0] != 1:
        raise ValueError(f"expected one input image (1, C, H, W); got shape {tuple(x.shape)}")
    return _spatial(layer_activations(model, x, layer), layer)[0].float().cpu().numpy()


def _channels(count: int, channels: Sequence[int] | None, limit: int | None) -> list[int]:
    chosen = list(range(count)) if channels is None else [int(c) for c in channels]
    bad = [c for c in chosen if not 0 <= c < count]
    if bad:
        raise ValueError(f"the layer has {count} channels (0..{count - 1}); no channel {bad[0]}")
    return chosen[:limit] if limit else chosen


def feature_map_grid(
    model: nn.Module,
    x: torch.Tensor,
    layer: str,
    *,
    channels: Sequence[int] | None = None,
    max_channels: int | None = 64,
    ncols: int | None = None,
    pad: int = 1,
) -> np.ndarray:
    """The feature maps of ``layer`` for one input as one grey image, one tile per channel in channel order.

    Each tile is stretched to [0, 1] on its own, so that a weak channel's pattern is as visible as a strong one's;
    a channel that is zero everywhere (a dead ReLU) is black.

    Args:
        model: The network.
        x: One input (1, C, H, W), normalised as the network expects.
        layer: Qualified module name, e.g. a tap point of ``feature_info`` (``layer2``) or a convolution.
        channels: The channels to show (default: all, up to ``max_channels``).
        max_channels: Show at most this many (None: no limit).
        ncols: Tiles per row (default: a near-square grid).
        pad: Pixels between tiles.
    """
    maps = feature_maps(model, x, layer)
    return make_grid(normalize_each(maps[_channels(len(maps), channels, max_channels)]), ncols=ncols, pad=pad)


def plot_feature_maps(
    model: nn.Module,
    x: torch.Tensor,
    layer: str,
    path: str | os.PathLike[str],
    *,
    max_channels: int | None = 64,
    title: str = "",
) -> Path:
    """Write `feature_map_grid` as a PNG (viridis: dark is low, yellow high) and return its path."""
    maps = feature_maps(model, x, layer)
    chosen = _channels(len(maps), None, max_channels)
    shown = len(chosen)
    # NaN borders, drawn white: a white border in [0, 1] would take the colour of the highest activation.
    grid = make_grid(normalize_each(maps[chosen]), pad_value=float("nan"))
    heading = f"{title}: " if title else ""
    heading += (
        f"{layer}, {shown} of {len(maps)} channels at {maps.shape[1]}x{maps.shape[2]} (each scaled to its own range)"
    )
    return save_grid(grid, path, title=heading, cmap="viridis")


def receptive_box(field: ReceptiveField, position: tuple[int, int], image_size: tuple[int, int]) -> tuple[int, ...]:
    """The part of the input a unit sees, clipped to the image: (top, left, bottom, right), bottom and right
    exclusive as in slicing.

    The unit at (i, j) sees a window of side ``field.size`` centred at ``field.start + (i, j) * field.jump``; a
    global field is the whole image.
    """
    height, width = image_size
    if field.is_global:
        return (0, 0, height, width)
    box = []
    for axis, limit in ((0, height), (1, width)):
        centre = field.start[axis] + position[axis] * field.jump[axis]
        low = round(centre - (field.size[axis] - 1) / 2)
        box.append((max(0, low), min(limit, low + round(field.size[axis]))))
    (top, bottom), (left, right) = box
    return (top, left, bottom, right)


@dataclass
class TopActivations:
    """The images of a data set on which one channel of a layer responds most, strongest first.

    Attributes:
        layer: Qualified module name.
        channel: The channel (feature map) of that layer.
        values: The activations (k,), descending: for each image, the channel's maximum over positions.
        indices: Index of each image in the data set (k,).
        positions: (row, column) of the maximum in the feature map (k, 2).
        boxes: The unit's receptive field in each image, clipped to it: (top, left, bottom, right), bottom and
            right exclusive (k, 4).
        crops: Each image cut to its box, as a display tile in [0, 1] ((h, w) grey or (h, w, 3) colour).
        field: The layer's theoretical receptive field.
    """

    layer: str
    channel: int
    values: np.ndarray
    indices: np.ndarray
    positions: np.ndarray
    boxes: np.ndarray
    crops: list[np.ndarray]
    field: ReceptiveField


def _scale_to_unit(images: torch.Tensor) -> torch.Tensor:
    return images.float() / 255 if images.dtype == torch.uint8 else images.float()


def top_activations(
    model: nn.Module,
    images: torch.Tensor,
    layer: str,
    channels: int | Sequence[int] = 0,
    *,
    k: int = 9,
    normalize: Callable[[torch.Tensor], torch.Tensor] | None = None,
    batch_size: int = 64,
    field: ReceptiveField | None = None,
) -> list[TopActivations]:
    """For each channel, the ``k`` images where it fires most, each cut to the receptive field of the unit at the
    position of its maximum (one position per image: an image counts once, however often the pattern occurs).

    Args:
        model: The network (in eval mode).
        images: The data set (N, C, H, W) at the network's input size: uint8, or float in [0, 1]. The crops are
            cut from these.
        layer: Qualified module name whose output has feature maps.
        channels: One channel or several; all are found in the same passes over the data.
        k: Images per channel (fewer if the data set is smaller).
        normalize: Turns a batch of ``images`` into the network's input without changing its height and width
            (e.g. `convzoo.viz._load.Network.normalize`); default: uint8 scaled to [0, 1], float as given.
        batch_size: Images per forward pass.
        field: The layer's receptive field (default: computed with `convzoo.analysis.receptive_fields`).

    Returns:
        One `TopActivations` per channel, in the order of ``channels``.

    Raises:
        KeyError: No module named ``layer``.
        ValueError: A layer without feature maps, a channel it does not have, or ``normalize`` resizing.
    """
    if images.dim() != 4 or len(images) == 0:
        raise ValueError(f"expected a non-empty batch of images (N, C, H, W); got shape {tuple(images.shape)}")
    channels = [channels] if isinstance(channels, int) else list(channels)
    normalize = normalize or _scale_to_unit
    best_values, best_positions = [], []
    width = None
    for start in range(0, len(images), batch_size):
        x = normalize(images[start : start + batch_size])
        if x.shape[-2:] != images.shape[-2:]:
            raise ValueError(
                f"normalize changed the image size from {tuple(images.shape[-2:])} to {tuple(x.shape[-2:])}; give "
                "images at the network's input size, so that receptive fields fall on the right pixels"
            )
        out = _spatial(layer_activations(model, x, layer), layer)
        chosen = _channels(out.shape[1], channels, None)
        width = out.shape[-1]
        values, flat = out[:, chosen].flatten(2).float().max(dim=2)  # the first maximum of each image's map
        best_values.append(values.cpu())
        best_positions.append(flat.cpu())
    values, flat = torch.cat(best_values), torch.cat(best_positions)
    if field is None:
        from convzoo.analysis import receptive_fields

        fields = receptive_fields(model, tuple(images.shape[1:]))
        if layer not in fields:
            raise ValueError(f"no receptive field is known for {layer!r}")
        field = fields[layer]
    results = []
    for column, channel in enumerate(channels):
        top_values, order = torch.topk(values[:, column], min(k, len(values)))
        positions = torch.stack([flat[order, column] // width, flat[order, column] % width], dim=1).numpy()
        boxes = np.array(
            [receptive_box(field, (int(r), int(c)), tuple(images.shape[-2:])) for r, c in positions], dtype=np.int64
        )
        crops = [
            to_display(images[i : i + 1, :, top:bottom, left:right])[0]
            for i, (top, left, bottom, right) in zip(order.tolist(), boxes)
        ]
        results.append(
            TopActivations(layer, channel, top_values.numpy(), order.numpy(), positions, boxes, crops, field)
        )
    return results


def plot_top_activations(
    tops: Sequence[TopActivations], path: str | os.PathLike[str], *, title: str = "", pad: int = 2
) -> Path:
    """Write the crops of `top_activations` as a PNG: one row per channel, strongest image first."""
    if not tops:
        raise ValueError("no channels to draw")
    k = max(len(t.crops) for t in tops)
    tiles: list[np.ndarray] = []
    for t in tops:
        tiles += t.crops + [np.ones_like(t.crops[0])] * (k - len(t.crops))
    grid = make_grid(tiles, ncols=k, pad=pad)
    field = tops[0].field
    heading = f"{title}: " if title else ""
    heading += f"{tops[0].layer}, the top {k} images of each channel, cut to the receptive field ({field})"
    return save_grid(grid, path, title=heading, row_labels=[f"channel {t.channel}" for t in tops])
