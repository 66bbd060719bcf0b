"""A procedural data set of shapes whose colour, texture, position, scale and background vary independently.

Each image shows one shape (the class) filled with a colour and a texture on a background. Because every factor is
drawn independently of the others, the set can separate what a network relies on: the class is the outline alone,
the texture label (``extras["texture"]``) is balanced against it for texture-bias probes, and the exact mask
(``extras["masks"]``) and box (``extras["boxes"]``) serve segmentation and detection. Images are drawn with torch ops
on whole batches, so thousands take a fraction of a second, and the same seed always gives the same images.
"""

from __future__ import annotations

import math

import torch

from convzoo.data.arrays import ArrayDataset, derive_seed, intra_op_threads

SHAPES = ("circle", "square", "triangle", "diamond", "star", "cross")
TEXTURES = ("plain", "stripes", "dots", "checkerboard", "noise")
COLORS = {
    "red": (0.95, 0.15, 0.15),
    "orange": (1.0, 0.55, 0.05),
    "yellow": (0.95, 0.9, 0.1),
    "green": (0.2, 0.85, 0.25),
    "cyan": (0.1, 0.85, 0.9),
    "blue": (0.2, 0.35, 1.0),
    "purple": (0.65, 0.25, 0.95),
    "pink": (1.0, 0.45, 0.75),
}
BACKGROUNDS = ("plain", "gradient", "noise")
# Half-extent of each outline in units of its radius; the centre is drawn so the whole shape stays inside the image.
_EXTENT = {"circle": 1.0, "square": 0.85, "triangle": 1.2, "diamond": 1.2, "star": 1.25, "cross": 1.1}
_RADIUS = (0.16, 0.3)  # shape radius as a fraction of the image side
_PERIOD = (0.12, 0.18)  # texture period as a fraction of the image side
_STAR_OUTER, _STAR_INNER = 1.25, 0.55


def _outline(kind: str, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Inside test of a unit-radius outline at (u, v) (v points down); the areas are alike (2.0 to 3.1)."""
    au, av = u.abs(), v.abs()
    if kind == "circle":
        return u.square() + v.square() <= 1
    if kind == "square":
        return torch.maximum(au, av) <= 0.85
    if kind == "diamond":
        return au + av <= 1.2
    if kind == "triangle":  # apex up at v = -1.2, base at v = 0.9, 2.4 wide
        return (v <= 0.9) & (au <= (v + 1.2) * (1.2 / 2.1))
    if kind == "cross":
        return ((au <= 0.35) & (av <= 1.1)) | ((av <= 0.35) & (au <= 1.1))
    if kind == "star":  # five points, straight edges: fold the angle into one half-spike and test one edge
        r = torch.sqrt(u.square() + v.square())
        angle = torch.atan2(u, -v).remainder(2 * math.pi / 5)
        a = torch.minimum(angle, 2 * math.pi / 5 - angle)
        qx, qy = r * torch.cos(a), r * torch.sin(a)
        p1x, p1y = _STAR_OUTER, 0.0
        p2x, p2y = _STAR_INNER * math.cos(math.pi / 5), _STAR_INNER * math.sin(math.pi / 5)
        side = (p2x - p1x) * (qy - p1y) - (p2y - p1y) * (qx - p1x)
        origin_side = (p2x - p1x) * (0 - p1y) - (p2y - p1y) * (0 - p1x)
        return side * math.copysign(1.0, origin_side) >= 0
    raise KeyError(kind)


def _texture(kind: str, x: torch.Tensor, y: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
    """Weight of the shape's main colour (against its lighter tint) at pixel (x, y) relative to the shape's centre."""
    if kind == "plain":
        return torch.ones_like(x + y)
    period = p["period"]
    if kind == "stripes":
        s = (x * torch.cos(p["angle"]) + y * torch.sin(p["angle"])) / period + p["phase_x"]
        return (s.remainder(1.0) < 0.5).float()
    if kind == "checkerboard":
        cells = torch.floor(x / period + p["phase_x"]) + torch.floor(y / period + p["phase_y"])
        return (cells.remainder(2) < 1).float()
    if kind == "dots":
        dx = (x / period + p["phase_x"]).remainder(1.0) - 0.5
        dy = (y / period + p["phase_y"]).remainder(1.0) - 0.5
        return (dx.square() + dy.square() > 0.32**2).float()  # tinted dots on the main colour
    if kind == "noise":
        return p["noise"]
    raise KeyError(kind)


def _boxes_from_masks(masks: torch.Tensor) -> torch.Tensor:
    """(N, 4) boxes x0, y0, x1, y1 in pixel edges (x1, y1 exclusive) tightly around each non-empty mask."""
    n, h, w = masks.shape
    cols, rows = masks.any(1), masks.any(2)
    x0 = cols.int().argmax(1)
    x1 = w - cols.flip(1).int().argmax(1)
    y0 = rows.int().argmax(1)
    y1 = h - rows.flip(1).int().argmax(1)
    return torch.stack([x0, y0, x1, y1], 1).float()


def make_shapes(n: int, *, image_size: int = 32, seed: int = 0, split: str = "train") -> ArrayDataset:
    """Draw ``n`` RGB images of shapes.

    Shape classes are exactly balanced, and so is every (shape, texture) pair, which makes the texture label
    independent of the class; colour (8 hues, varied in brightness), position, scale (radius 16-30% of the side),
    background (plain, gradient or noise, in dark colours) and the texture's period, phase and orientation are drawn
    independently per image.

    Args:
        n: Number of images.
        image_size: Side of the square images (at least 12).
        seed: Seed; the same seed, size and split always give the same images.
        split: Name of the random stream, so ``"train"`` and ``"test"`` of one seed hold different images.

    Returns:
        An `ArrayDataset` named ``"shapes"`` whose extras hold ``texture``, ``color`` and ``background`` indices
        (into `TEXTURES`, `COLORS`, `BACKGROUNDS`), ``boxes`` (N, 4) float x0, y0, x1, y1 in pixel edges, and
        ``masks`` (N, H, W) bool; each box is exactly its mask's bounding box.
    """
    if n < 0:
        raise ValueError(f"the number of images must be non-negative; got {n}")
    if image_size < 12:
        raise ValueError(f"shapes need an image size of at least 12 pixels; got {image_size}")
    with intra_op_threads(1):  # many small ops: see intra_op_threads
        return _draw(n, image_size, seed, split)


def _draw(n: int, image_size: int, seed: int, split: str) -> ArrayDataset:
    g = torch.Generator().manual_seed(derive_seed("shapes", seed, split))
    s = float(image_size)
    k, t = len(SHAPES), len(TEXTURES)
    # Index i takes shape i mod K and texture i mod T; with K and T coprime every pair occurs equally often.
    order = torch.randperm(n, generator=g)
    shape = order % k
    texture = order % t
    color = torch.randint(len(COLORS), (n,), generator=g)
    brightness = 0.75 + 0.25 * torch.rand(n, generator=g)
    background = torch.randint(len(BACKGROUNDS), (n,), generator=g)
    radius = s * (_RADIUS[0] + (_RADIUS[1] - _RADIUS[0]) * torch.rand(n, generator=g))
    extent = torch.tensor([_EXTENT[name] for name in SHAPES])[shape] * radius + 1  # and a pixel of margin
    cx = extent + (s - 2 * extent) * torch.rand(n, generator=g)
    cy = extent + (s - 2 * extent) * torch.rand(n, generator=g)
    params = {
        "period": s * (_PERIOD[0] + (_PERIOD[1] - _PERIOD[0]) * torch.rand(n, generator=g)),
        "angle": math.pi * torch.rand(n, generator=g),
        "phase_x": torch.rand(n, generator=g),
        "phase_y": torch.rand(n, generator=g),
    }
    bg_a = 0.4 * torch.rand(n, 3, generator=g)
    bg_b = 0.4 * torch.rand(n, 3, generator=g)
    bg_angle = 2 * math.pi * torch.rand(n, generator=g)
    palette = torch.tensor(list(COLORS.values()))
    main = palette[color] * brightness[:, None]
    tint = 0.45 * main + 0.55

    images = torch.empty((n, 3, image_size, image_size), dtype=torch.uint8)
    masks = torch.empty((n, image_size, image_size), dtype=torch.bool)
    pix = torch.arange(image_size, dtype=torch.float32) + 0.5  # pixel centres
    chunk = max(1, (1 << 18) // (image_size * image_size))
    for start in range(0, n, chunk):
        sl = slice(start, min(n, start + chunk))
        b = sl.stop - sl.start
        x = pix.view(1, 1, -1) - cx[sl].view(-1, 1, 1)  # (B, 1, W)
        y = pix.view(1, -1, 1) - cy[sl].view(-1, 1, 1)  # (B, H, 1)
        r = radius[sl].view(-1, 1, 1)
        u, v = (x / r).expand(b, image_size, image_size), (y / r).expand(b, image_size, image_size)
        mask = torch.zeros((b, image_size, image_size), dtype=torch.bool)
        for i, name in enumerate(SHAPES):
            sel = (shape[sl] == i).nonzero().flatten()
            if sel.numel():
                mask[sel] = _outline(name, u[sel], v[sel])
        p = {key: value[sl].view(-1, 1, 1) for key, value in params.items()}
        xx, yy = x.expand(b, image_size, image_size), y.expand(b, image_size, image_size)
        weight = torch.empty((b, image_size, image_size))
        for i, name in enumerate(TEXTURES):
            sel = (texture[sl] == i).nonzero().flatten()
            if sel.numel():
                q = {key: value[sel] for key, value in p.items()}
                if name == "noise":
                    q["noise"] = torch.rand((sel.numel(), image_size, image_size), generator=g)
                weight[sel] = _texture(name, xx[sel], yy[sel], q)
        tint_b = tint[sl].view(-1, 3, 1, 1)
        image = torch.addcmul(tint_b, weight.unsqueeze(1), main[sl].view(-1, 3, 1, 1) - tint_b)

        bg = bg_a[sl].view(-1, 3, 1, 1).expand(b, 3, image_size, image_size).clone()
        gradient = (background[sl] == 1).nonzero().flatten()
        if gradient.numel():
            angle = bg_angle[sl][gradient].view(-1, 1, 1)
            along = (xx[gradient] * torch.cos(angle) + yy[gradient] * torch.sin(angle)) / s
            ramp = (along + 0.5).clamp_(0, 1).unsqueeze(1)  # 0..1 across the image
            a, c = bg_a[sl][gradient].view(-1, 3, 1, 1), bg_b[sl][gradient].view(-1, 3, 1, 1)
            bg[gradient] = torch.addcmul(a, ramp, c - a)
        noisy = (background[sl] == 2).nonzero().flatten()
        if noisy.numel():
            grain = torch.randn((noisy.numel(), 3, image_size, image_size), generator=g).mul_(0.08)
            bg[noisy] = grain.add_(bg[noisy]).clamp_(0, 1)

        image = torch.where(mask.unsqueeze(1), image, bg)
        images[sl] = image.mul_(255).add_(0.5).clamp_(0, 255).to(torch.uint8)  # rounds: all values are >= 0
        masks[sl] = mask
    return ArrayDataset(
        images=images,
        labels=shape,
        classes=list(SHAPES),
        name="shapes",
        extras={
            "texture": texture,
            "color": color,
            "background": background,
            "boxes": _boxes_from_masks(masks),
            "masks": masks,
        },
    )
