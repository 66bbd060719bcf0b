"""Image grids and the PNG figures the visualisations write.

Arrays here are float images in [0, 1], channels last: (H, W) for grey, (H, W, 3) for colour, as matplotlib and
PIL expect them; `to_display` turns the (N, C, H, W) tensors of the models into such tiles.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["make_grid", "normalize_each", "pyplot", "save_figure", "save_grid", "to_display"]


def normalize_each(tiles: np.ndarray) -> np.ndarray:
    """Every tile (first axis) stretched to [0, 1] on its own, over all its pixels and channels.

    A constant tile (a dead ReLU channel, an all-zero kernel) has no contrast to show and becomes 0 (black).
    """
    tiles = np.asarray(tiles, dtype=np.float32)
    flat = tiles.reshape(len(tiles), -1)
    low = flat.min(axis=1, keepdims=True) if flat.size else flat
    span = (flat.max(axis=1, keepdims=True) - low) if flat.size else flat
    # Dividing by 1 where the span is 0 keeps constant tiles at 0 instead of NaN.
    out = (flat - low) / np.where(span > 0, span, 1.0)
    return out.reshape(tiles.shape)


def to_display(images: torch.Tensor | np.ndarray) -> np.ndarray:
    """Images (N, C, H, W) with C of 1 or 3 as display tiles (N, H, W) or (N, H, W, 3), float32.

    uint8 input is scaled to [0, 1]; float input is taken to be in [0, 1] already.
    """
    if isinstance(images, torch.Tensor):
        images = images.detach().cpu().numpy()
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"expected images (N, C, H, W) with 1 or 3 channels; got shape {images.shape}")
    tiles = images.astype(np.float32) / (255.0 if images.dtype == np.uint8 else 1.0)
    return tiles[:, 0] if tiles.shape[1] == 1 else tiles.transpose(0, 2, 3, 1)


def make_grid(
    tiles: Sequence[np.ndarray] | np.ndarray, *, ncols: int | None = None, pad: int = 1, pad_value: float = 1.0
) -> np.ndarray:
    """Tiles laid out row by row in one image, with ``pad`` pixels of ``pad_value`` around and between them.

    Tiles may differ in size (crops clipped at an image's border): each cell is as large as the largest tile and
    holds its tile in the centre.

    Args:
        tiles: Grey (H, W) or colour (H, W, 3) tiles; grey ones are repeated into colour if any tile has colour.
        ncols: Tiles per row (default: a near-square grid).
        pad: Width of the borders, in pixels.
        pad_value: Value of the borders (1: white).

    Returns:
        An (rows * (H + pad) + pad, ncols * (W + pad) + pad) image, with a trailing 3 if it is in colour.
    """
    tiles = [np.asarray(t, dtype=np.float32) for t in tiles]
    if not tiles:
        raise ValueError("no tiles to lay out")
    colour = any(t.ndim == 3 for t in tiles)
    if colour:
        tiles = [t if t.ndim == 3 else np.repeat(t[..., None], 3, axis=-1) for t in tiles]
    ncols = max(1, min(ncols or math.ceil(math.sqrt(len(tiles))), len(tiles)))
    nrows = math.ceil(len(tiles) / ncols)
    cell_h = max(t.shape[0] for t in tiles)
    cell_w = max(t.shape[1] for t in tiles)
    shape = (nrows * (cell_h + pad) + pad, ncols * (cell_w + pad) + pad) + ((3,) if colour else ())
    grid = np.full(shape, pad_value, dtype=np.float32)
    for i, tile in enumerate(tiles):
        row, col = divmod(i, ncols)
        top = pad + row * (cell_h + pad) + (cell_h - tile.shape[0]) // 2
        left = pad + col * (cell_w + pad) + (cell_w - tile.shape[1]) // 2
        grid[top : top + tile.shape[0], left : left + tile.shape[1]] = tile
    return grid


def pyplot() -> Any:
    """matplotlib's pyplot on the Agg backend: figures are written to files, never shown in a window."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: str | os.PathLike[str], *, dpi: int = 110) -> Path:
    """Write a matplotlib figure as a PNG (atomically: a reader never sees half a file) and close it."""
    from convzoo._files import write_atomically

    try:
        return write_atomically(path, lambda tmp: fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight"))
    finally:
        pyplot().close(fig)


def save_grid(
    grid: np.ndarray,
    path: str | os.PathLike[str],
    *,
    title: str = "",
    cmap: str = "gray",
    row_labels: Sequence[str] = (),
    border: str = "white",
    min_inches: float = 4.0,
) -> Path:
    """Write an image grid (from `make_grid`) as a PNG with a title, pixels drawn as sharp squares.

    Args:
        grid: The image, in [0, 1]; NaN pixels (borders made with ``pad_value=nan``) are drawn white.
        path: The PNG to write.
        title: Shown above the grid.
        cmap: Colour map of a grey grid (``gray``; ``viridis`` reads activations better).
        row_labels: Text beside each row of tiles, spaced evenly down the left edge.
        border: Colour of the NaN pixels.
        min_inches: Width of the figure for a small grid; large grids get about 4 screen pixels per grid pixel
            at most, up to 16 inches.
    """
    plt = pyplot()
    height, width = grid.shape[:2]
    inches = min(max(min_inches, width * 4 / 110), 16.0)
    fig, ax = plt.subplots(figsize=(inches, inches * height / width + (0.6 if title else 0.2)))
    colours = plt.get_cmap(cmap).with_extremes(bad=border)  # NaN borders keep their colour under any colour map
    ax.imshow(np.ma.masked_invalid(np.clip(grid, 0, 1)), cmap=colours, vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([])
    if row_labels:
        step = height / len(row_labels)
        ax.set_yticks([step * (i + 0.5) for i in range(len(row_labels))], list(row_labels))
        ax.tick_params(axis="y", length=0)
    else:
        ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
    if title:
        ax.set_title(title)
    return save_figure(fig, path)
