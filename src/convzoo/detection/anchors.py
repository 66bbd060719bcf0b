"""Anchors: k reference boxes at every position of every feature level (Ren et al. 2015, section 3.1.1)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn

__all__ = ["AnchorConfig", "AnchorGenerator"]


@dataclass(frozen=True)
class AnchorConfig:
    """Anchor sizes and shapes, per feature level.

    Attributes:
        sizes: Per level, the anchor sides in input pixels (the square root of the area). The paper's 128, 256, 512
            suit 600-pixel images; the defaults suit the 64-pixel scenes, whose objects span 9 to 22 pixels.
        aspect_ratios: Per level (one tuple serves every level), the height / width ratios.
        offset: Where in its cell an anchor is centred, in strides: 0 puts the centre of cell (i, j) at
            (j, i) * stride (torchvision's and the paper's code), 0.5 at the cell's centre.
    """

    sizes: tuple[tuple[float, ...], ...] = ((8.0, 16.0, 32.0),)
    aspect_ratios: tuple[tuple[float, ...], ...] = ((0.5, 1.0, 2.0),)
    offset: float = 0.5

    def validate(self) -> None:
        """Raise a ValueError for an impossible configuration."""
        if not self.sizes or any(not s for s in self.sizes):
            raise ValueError(f"anchor sizes need at least one size per level; got {self.sizes}")
        if len(self.aspect_ratios) not in (1, len(self.sizes)):
            raise ValueError(
                f"anchor aspect_ratios must give one tuple for every level or one for all; got "
                f"{len(self.aspect_ratios)} for {len(self.sizes)} levels"
            )
        if any(v <= 0 for level in (*self.sizes, *self.aspect_ratios) for v in level):
            raise ValueError("anchor sizes and aspect ratios must be positive")

    @property
    def levels(self) -> int:
        """Number of feature levels the anchors are defined for."""
        return len(self.sizes)

    def ratios(self, level: int) -> tuple[float, ...]:
        """The aspect ratios of ``level``."""
        return self.aspect_ratios[level if len(self.aspect_ratios) > 1 else 0]

    def per_position(self) -> list[int]:
        """Anchors per feature-map position, per level (k of the paper)."""
        return [len(s) * len(self.ratios(i)) for i, s in enumerate(self.sizes)]


class AnchorGenerator(nn.Module):
    """The anchors of a batch's feature maps, for images of one size.

    Per level, the cell anchors (sizes x ratios, centred at the origin, rounded to whole pixels as in the paper's
    code) are shifted to every position of the level's grid, whose stride is the image size divided by the grid
    size (integer division, as torchvision). The order is position-major, anchor-minor, level after level: the
    order in which the RPN head's outputs are flattened.
    """

    def __init__(self, cfg: AnchorConfig) -> None:
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.cell = [self.cell_anchors(sizes, cfg.ratios(i)) for i, sizes in enumerate(cfg.sizes)]

    @staticmethod
    def cell_anchors(sizes: Sequence[float], ratios: Sequence[float]) -> torch.Tensor:
        """The (len(ratios) * len(sizes), 4) anchors of one position, centred at the origin, ratio-major."""
        scales = torch.as_tensor(sizes, dtype=torch.float32)
        h_ratios = torch.sqrt(torch.as_tensor(ratios, dtype=torch.float32))
        ws = (scales[None, :] / h_ratios[:, None]).reshape(-1)
        hs = (scales[None, :] * h_ratios[:, None]).reshape(-1)
        return (torch.stack([-ws, -hs, ws, hs], dim=1) / 2).round()

    def num_anchors(self) -> list[int]:
        """Anchors per position, per level."""
        return self.cfg.per_position()

    def forward(self, image_size: Sequence[int], feature_maps: Sequence[torch.Tensor]) -> torch.Tensor:
        """The (sum over levels of H_l * W_l * k_l, 4) anchors of images of ``image_size`` (H, W).

        Raises:
            ValueError: The number of feature maps differs from the configured levels.
        """
        if len(feature_maps) != len(self.cell):
            raise ValueError(f"anchors are configured for {len(self.cell)} levels; got {len(feature_maps)} maps")
        out = []
        for cell, fmap in zip(self.cell, feature_maps):
            gh, gw = fmap.shape[-2:]
            sh, sw = image_size[0] // gh, image_size[1] // gw
            device = fmap.device
            xs = (torch.arange(gw, device=device, dtype=torch.float32) + self.cfg.offset) * sw
            ys = (torch.arange(gh, device=device, dtype=torch.float32) + self.cfg.offset) * sh
            y, x = torch.meshgrid(ys, xs, indexing="ij")
            shifts = torch.stack([x.reshape(-1), y.reshape(-1)] * 2, dim=1)
            out.append((shifts[:, None, :] + cell.to(device)[None]).reshape(-1, 4))
        return torch.cat(out)
