"""Scenes of several shapes: the embedded data set of segmentation and detection.

Each image holds up to ``max_objects`` shapes of `convzoo.data.shapes` (the same six outlines and five textures, in
random colours) at random, non-overlapping places and sizes on a dark background; some images hold none. Every
object comes with its exact mask, class and tight box, so one set serves semantic segmentation (``extras["masks"]``,
a class per pixel), detection (``extras["boxes"]`` and ``extras["box_labels"]``) and instance segmentation
(``extras["instance_masks"]``). Images are drawn with batched torch ops, and the same seed gives the same scenes.
"""

from __future__ import annotations

import math

import torch

from convzoo.data.arrays import ArrayDataset, derive_seed, intra_op_threads
from convzoo.data.shapes import _EXTENT, COLORS, SHAPES, TEXTURES, _boxes_from_masks, _outline, _texture

SCENE_CLASSES = ("background", *SHAPES)
"""Class names of the scenes: index 0 is the background, 1 to 6 the shapes (torchvision's detection convention)."""

_RADIUS = (0.07, 0.17)  # object radius as a fraction of the image side: a 2.4-fold range of scales
_TRIES = 12  # candidate places per object; an object that fits nowhere is left out


def make_scenes(
    n: int,
    *,
    image_size: int = 64,
    max_objects: int = 4,
    fill: float = 0.7,
    seed: int = 0,
    split: str = "train",
) -> ArrayDataset:
    """Draw ``n`` RGB scenes of shapes.

    Each of ``max_objects`` slots holds an object with probability ``fill``; its shape, texture, colour, size and
    place are drawn independently, the place among candidates that keep a pixel of gap to the objects already
    placed (so objects never overlap or touch and every mask is whole).

    Args:
        n: Number of images.
        image_size: Side of the square images (at least 32).
        max_objects: Most objects in one image.
        fill: Chance that a slot holds an object; with the defaults about 1% of the images are empty.
        seed: Seed; the same seed, size, settings and split always give the same images.
        split: Name of the random stream, so ``"train"`` and ``"test"`` of one seed hold different images.

    Returns:
        An `ArrayDataset` named ``"scenes"`` with classes `SCENE_CLASSES`. Its label is the class of the largest
        object (0 for an empty image). Its extras:

        - ``masks`` (N, H, W) uint8: the class of every pixel, 0 for the background;
        - ``boxes`` (N, K, 4) float: x0, y0, x1, y1 of each object in pixel edges (x1, y1 exclusive), objects first
          and padding rows (zeros) after them, K = ``max_objects``;
        - ``box_labels`` (N, K) int64: each object's class (1 to 6), -1 on padding rows;
        - ``instance_masks`` (N, K, H, W) bool: each object's mask, empty on padding rows.
    """
    if n < 0:
        raise ValueError(f"the number of images must be non-negative; got {n}")
    if image_size < 32:
        raise ValueError(f"scenes need an image size of at least 32 pixels; got {image_size}")
    if max_objects < 1:
        raise ValueError(f"max_objects must be at least 1; got {max_objects}")
    if not 0 <= fill <= 1:
        raise ValueError(f"fill must be a probability in [0, 1]; got {fill}")
    with intra_op_threads(1):
        return _draw(n, image_size, max_objects, fill, seed, split)


def _place(n: int, k: int, s: float, fill: float, g: torch.Generator) -> tuple[torch.Tensor, ...]:
    """Shape, radius and centre of each slot, and whether it holds an object: tensors (n, k)."""
    shape = torch.randint(len(SHAPES), (n, k), generator=g)
    radius = s * (_RADIUS[0] + (_RADIUS[1] - _RADIUS[0]) * torch.rand(n, k, _TRIES, generator=g))
    extent = torch.tensor([_EXTENT[name] for name in SHAPES])[shape].unsqueeze(-1) * radius + 1
    cx = extent + (s - 2 * extent) * torch.rand(n, k, _TRIES, generator=g)
    cy = extent + (s - 2 * extent) * torch.rand(n, k, _TRIES, generator=g)
    wanted = torch.rand(n, k, generator=g) < fill
    placed = torch.zeros(n, k, dtype=torch.bool)
    chosen = torch.zeros(n, k, dtype=torch.long)
    boxes = torch.zeros(n, k, 4)
    for slot in range(k):
        cand = torch.stack([cx[:, slot] - extent[:, slot], cy[:, slot] - extent[:, slot]], -1)
        cand = torch.cat([cand, cand + 2 * extent[:, slot, :, None]], -1)  # (n, tries, 4)
        before = boxes[:, :slot].unsqueeze(1)  # (n, 1, slot, 4)
        apart = (
            (cand[..., None, 0] >= before[..., 2] + 1)
            | (cand[..., None, 2] + 1 <= before[..., 0])
            | (cand[..., None, 1] >= before[..., 3] + 1)
            | (cand[..., None, 3] + 1 <= before[..., 1])
        ) | ~placed[:, None, :slot]
        fits = apart.all(-1)  # (n, tries)
        ok = wanted[:, slot] & fits.any(-1)
        first = fits.int().argmax(-1)
        chosen[:, slot] = first
        placed[:, slot] = ok
        boxes[:, slot] = torch.where(ok[:, None], cand[torch.arange(n), first], 0.0)
    pick = chosen.unsqueeze(-1)
    return shape, radius.gather(2, pick)[..., 0], cx.gather(2, pick)[..., 0], cy.gather(2, pick)[..., 0], placed


def _draw(n: int, image_size: int, k: int, fill: float, seed: int, split: str) -> ArrayDataset:
    g = torch.Generator().manual_seed(derive_seed("scenes", seed, split))
    s = float(image_size)
    shape, radius, cx, cy, placed = _place(n, k, s, fill, g)
    texture = torch.randint(len(TEXTURES), (n, k), generator=g)
    palette = torch.tensor(list(COLORS.values()))
    main = palette[torch.randint(len(COLORS), (n, k), generator=g)] * (0.75 + 0.25 * torch.rand(n, k, 1, generator=g))
    tint = 0.45 * main + 0.55
    params = {
        "period": radius * (0.5 + 0.3 * torch.rand(n, k, generator=g)),
        "angle": math.pi * torch.rand(n, k, generator=g),
        "phase_x": torch.rand(n, k, generator=g),
        "phase_y": torch.rand(n, k, generator=g),
    }
    bg_a, bg_b = 0.4 * torch.rand(n, 3, generator=g), 0.4 * torch.rand(n, 3, generator=g)
    bg_angle = 2 * math.pi * torch.rand(n, generator=g)
    grain = torch.rand(n, generator=g) < 1 / 3

    images = torch.empty((n, 3, image_size, image_size), dtype=torch.uint8)
    instance = torch.zeros((n, k, image_size, image_size), dtype=torch.bool)
    pix = torch.arange(image_size, dtype=torch.float32) + 0.5
    chunk = max(1, (1 << 17) // (image_size * image_size))
    for start in range(0, n, chunk):
        sl = slice(start, min(n, start + chunk))
        b = sl.stop - sl.start
        # A linear gradient between two dark colours (flat when they are close), with film grain on a third.
        along = (pix.view(1, 1, -1) - s / 2) * torch.cos(bg_angle[sl]).view(-1, 1, 1)
        along = along + (pix.view(1, -1, 1) - s / 2) * torch.sin(bg_angle[sl]).view(-1, 1, 1)
        ramp = (along / s + 0.5).clamp_(0, 1).unsqueeze(1)
        a, c = bg_a[sl].view(-1, 3, 1, 1), bg_b[sl].view(-1, 3, 1, 1)
        image = torch.addcmul(a, ramp, c - a)
        noise = torch.randn((b, 3, image_size, image_size), generator=g).mul_(0.06)
        image = torch.where(grain[sl].view(-1, 1, 1, 1), (image + noise).clamp_(0, 1), image)
        for slot in range(k):
            x = pix.view(1, 1, -1) - cx[sl, slot].view(-1, 1, 1)
            y = pix.view(1, -1, 1) - cy[sl, slot].view(-1, 1, 1)
            xx, yy = x.expand(b, image_size, image_size), y.expand(b, image_size, image_size)
            r = radius[sl, slot].view(-1, 1, 1)
            mask = torch.zeros((b, image_size, image_size), dtype=torch.bool)
            for i, name in enumerate(SHAPES):
                sel = (shape[sl, slot] == i).nonzero().flatten()
                if sel.numel():
                    mask[sel] = _outline(name, xx[sel] / r[sel], yy[sel] / r[sel])
            mask &= placed[sl, slot].view(-1, 1, 1)
            weight = torch.empty((b, image_size, image_size))
            for i, name in enumerate(TEXTURES):
                sel = (texture[sl, slot] == i).nonzero().flatten()
                if sel.numel():
                    q = {key: value[sl, slot][sel].view(-1, 1, 1) for key, value in params.items()}
                    if name == "noise":
                        q["noise"] = torch.rand((sel.numel(), image_size, image_size), generator=g)
                    weight[sel] = _texture(name, xx[sel], yy[sel], q)
            t, m = tint[sl, slot].view(-1, 3, 1, 1), main[sl, slot].view(-1, 3, 1, 1)
            image = torch.where(mask.unsqueeze(1), torch.addcmul(t, weight.unsqueeze(1), m - t), image)
            instance[sl, slot] = mask
        images[sl] = image.mul_(255).add_(0.5).clamp_(0, 255).to(torch.uint8)

    # Objects first, in slot order; padding rows after them.
    order = torch.argsort((~placed).int(), dim=1, stable=True)
    placed = placed.gather(1, order)
    labels = torch.where(placed, shape.gather(1, order) + 1, -1)
    instance = instance[torch.arange(n)[:, None], order]
    boxes = _boxes_from_masks(instance.flatten(0, 1)).view(n, k, 4) * placed.unsqueeze(-1)
    semantic = (instance * labels.clamp(min=0).view(n, k, 1, 1)).sum(1).to(torch.uint8)  # masks are disjoint
    area = instance.sum((2, 3))
    largest = area.argmax(1)
    image_label = torch.where(placed.any(1), labels[torch.arange(n), largest], 0)
    return ArrayDataset(
        images=images,
        labels=image_label,
        classes=list(SCENE_CLASSES),
        name="scenes",
        extras={"masks": semantic, "boxes": boxes, "box_labels": labels, "instance_masks": instance},
    )
