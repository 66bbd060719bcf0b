"""Batched data augmentation on the batch's own device: whole-batch tensor ops, no per-image Python work.

`Augment` applies the training augmentations of the classic papers to a uint8 batch (N, C, H, W) - random crops with
padding (Krizhevsky et al. 2012; He et al. 2016's CIFAR recipe), random resized crops (Szegedy et al. 2015),
horizontal flips, colour jitter - and normalises the result. Every random choice is drawn from one generator, so a
seeded generator reproduces a batch exactly. Dense and box targets (segmentation masks, instance masks, boxes)
take the same crops, flips and resizes as their images (see `TARGET_KINDS`). `Augment.to_torchvision` builds the
equivalent per-image ``torchvision.transforms.v2`` pipeline for data that does not fit in memory, where masks and
boxes passed as ``tv_tensors.Mask`` and ``tv_tensors.BoundingBoxes`` follow their images the same way.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from convzoo.data.arrays import LUMA

PADDING_MODES = ("zeros", "reflect", "replicate")
IGNORE_INDEX = 255
"""The class of pixels a segmentation loss and its metrics leave out: padding added by a crop, unlabelled borders
(Pascal VOC's outlines)."""
TARGET_KINDS = {
    "masks": "class map",
    "instance_masks": "instance masks",
    "boxes": "boxes",
    "proposals": "boxes",
    "box_labels": "box labels",
}
"""Per-image targets that `Augment` moves with their images, by their name in a data set's ``extras``:

- ``masks`` (N, H, W) integers, a class per pixel; pixels a crop pads with are `IGNORE_INDEX`;
- ``instance_masks`` (N, K, H, W) bool, one mask per object;
- ``boxes`` and ``proposals`` (N, K, 4) float x0, y0, x1, y1 in pixels, clipped to the crop;
- ``box_labels`` (N, K) integers, the class of each of ``boxes``, -1 on padding rows; a box that a crop leaves
  less than a pixel wide or high becomes a padding row (label -1, zero box).
"""


def _rand(n: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    # Drawn on the generator's device (the CPU for a CPU generator) so a seed gives the same choices on any device.
    src = generator.device if generator is not None else device
    return torch.rand(n, generator=generator, device=src).to(device, non_blocking=True)


class Augment(nn.Module):
    """Batched augmentation and normalisation of uint8 images.

    The steps, each optional, in order: random resized crop, or random crop from the zero-/reflect-padded image;
    horizontal flip; resize to ``out_size``; colour jitter; conversion to float and normalisation
    ``(x / 255 - mean) / std``. Without augmentation options only the conversion (and resize) happens, for evaluation.
    The module applies its augmentations whenever it is called: use a second instance without options for evaluation.

    Args:
        crop: Side of the square random crop. With ``padding`` alone it defaults to the input size.
        padding: Pixels added on each side before the random crop (He et al.'s CIFAR recipe: 4).
        flip: Flip each image horizontally with probability 1/2.
        random_resized_crop: Scale range (fraction of the image area) of a random resized crop with aspect ratio in
            ``ratio``; the crop is resampled (bilinear, averaging when shrinking) to ``crop`` or ``out_size``.
        out_size: Side of the output images; a batch of another size is resized (antialiased bilinear).
        color_jitter: Strength s of brightness, contrast and saturation jitter: each factor is uniform in
            [max(0, 1 - s), 1 + s], applied in that order (saturation only on RGB images).
        mean: Per-channel mean in [0, 1] units (one value applies to every channel).
        std: Per-channel standard deviation in [0, 1] units.
        padding_mode: ``"zeros"`` (torchvision's RandomCrop default), ``"reflect"`` or ``"replicate"``.
        ratio: Aspect ratio range of the random resized crop.
    """

    def __init__(
        self,
        *,
        crop: int | None = None,
        padding: int = 0,
        flip: bool = False,
        random_resized_crop: tuple[float, float] | None = None,
        out_size: int | None = None,
        color_jitter: float = 0.0,
        mean: Sequence[float] = (0.0,),
        std: Sequence[float] = (1.0,),
        padding_mode: str = "zeros",
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
    ) -> None:
        super().__init__()
        if crop is not None and crop < 1:
            raise ValueError(f"crop must be a positive size; got {crop}")
        if out_size is not None and out_size < 1:
            raise ValueError(f"out_size must be a positive size; got {out_size}")
        if padding < 0:
            raise ValueError(f"padding must be non-negative; got {padding}")
        if padding_mode not in PADDING_MODES:
            raise ValueError(f"padding_mode must be one of {PADDING_MODES}; got {padding_mode!r}")
        if random_resized_crop is not None:
            lo, hi = random_resized_crop
            if not 0 < lo <= hi <= 1:
                raise ValueError(f"random_resized_crop must be a scale range 0 < lo <= hi <= 1; got {(lo, hi)}")
            if padding:
                raise ValueError("random_resized_crop and padding exclude each other")
            if not 0 < ratio[0] <= ratio[1]:
                raise ValueError(f"ratio must be a range 0 < lo <= hi; got {ratio}")
        if color_jitter < 0:
            raise ValueError(f"color_jitter must be non-negative; got {color_jitter}")
        mean, std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
        if not mean or len(mean) != len(std):
            raise ValueError(f"mean and std need one value per channel; got {len(mean)} and {len(std)} values")
        if any(s <= 0 for s in std):
            raise ValueError(f"std must be positive; got {std}")
        self.crop, self.padding, self.flip = crop, padding, flip
        self.random_resized_crop = tuple(random_resized_crop) if random_resized_crop is not None else None
        self.ratio = (float(ratio[0]), float(ratio[1]))
        self.out_size, self.color_jitter = out_size, float(color_jitter)
        self.mean, self.std, self.padding_mode = mean, std, padding_mode
        self._constants: dict[tuple, tuple[torch.Tensor, ...]] = {}

    def extra_repr(self) -> str:
        parts = [f"crop={self.crop}", f"padding={self.padding}", f"flip={self.flip}"]
        if self.random_resized_crop:
            parts.append(f"random_resized_crop={self.random_resized_crop}")
        parts += [f"out_size={self.out_size}", f"color_jitter={self.color_jitter}", f"mean={self.mean}"]
        return ", ".join([*parts, f"std={self.std}"])

    @property
    def augments(self) -> bool:
        """Whether any random augmentation is on."""
        return bool(self.crop or self.padding or self.flip or self.random_resized_crop or self.color_jitter)

    def _norm(self, channels: int, device: torch.device) -> tuple[torch.Tensor, ...]:
        key = (device, channels)
        if key not in self._constants:
            if len(self.mean) not in (1, channels):
                raise ValueError(f"mean/std have {len(self.mean)} values for images of {channels} channels")
            mean = torch.tensor(self.mean, dtype=torch.float32).expand(channels).reshape(1, channels, 1, 1)
            std = torch.tensor(self.std, dtype=torch.float32).expand(channels).reshape(1, channels, 1, 1)
            self._constants[key] = (mean.to(device), std.to(device))
        return self._constants[key]

    def forward(
        self,
        images_uint8: torch.Tensor,
        generator: torch.Generator | None = None,
        targets: Mapping[str, torch.Tensor] | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Augment and normalise a batch, and move its targets with it.

        Args:
            images_uint8: uint8 images (N, C, H, W) on any device.
            generator: Source of the random choices (default: torch's global generator on the batch's device).
            targets: Per-image masks and boxes by kind (the names of `TARGET_KINDS`), cropped, flipped and resized
                exactly as their images.

        Returns:
            float32 images (N, C, S, S), normalised, on the batch's device; with ``targets``, also the moved
            targets under the same names.
        """
        x = images_uint8
        if x.dtype != torch.uint8 or x.dim() != 4:
            raise TypeError(
                f"Augment takes uint8 batches (N, C, H, W); got {x.dtype} of shape {tuple(x.shape)} "
                f"(add a batch dimension with x[None])"
            )
        moved = dict(targets) if targets is not None else None
        if moved:
            self._check_targets(x, moved)
        mean, std = self._norm(x.shape[1], x.device)
        if self.random_resized_crop is not None:
            if moved:
                raise ValueError(
                    f"a random resized crop does not move {sorted(moved)} with the images; use crop and padding"
                )
            x = self._resized_crop(self._flip_only(x, generator), generator)
        elif self.crop is not None or self.padding or self.flip:
            x = self._crop_flip(x, generator, moved)
        if self.out_size is not None and x.shape[-2:] != (self.out_size, self.out_size):
            if moved:
                self._resize_targets(moved, tuple(x.shape[-2:]), (self.out_size, self.out_size))
            x = x.float() if x.dtype == torch.uint8 else x
            x = F.interpolate(x, size=(self.out_size, self.out_size), mode="bilinear", antialias=True).clamp_(0, 255)
        # The same float operations as torchvision's ToDtype(scale=True) and Normalize, so the results agree to the
        # bit; in place, since out-of-place broadcasting ops on fresh float batches cost several times more on the CPU.
        x = x.float().mul_(1 / 255) if x.dtype == torch.uint8 else x.mul_(1 / 255)
        if self.color_jitter:
            x = self._jitter(x, generator)
        x = x.sub_(mean).div_(std)
        return x if moved is None else (x, moved)

    @staticmethod
    def _check_targets(x: torch.Tensor, targets: dict[str, torch.Tensor]) -> None:
        n, _, h, w = x.shape
        unknown = sorted(set(targets) - set(TARGET_KINDS))
        if unknown:
            raise KeyError(f"Augment moves targets named {sorted(TARGET_KINDS)}; got {unknown}")
        if "box_labels" in targets and "boxes" not in targets:
            raise KeyError("box_labels go with boxes; pass both")
        dims = {"masks": 3, "instance_masks": 4, "boxes": 3, "proposals": 3, "box_labels": 2}
        for name, t in targets.items():
            if t.dim() != dims[name] or t.shape[0] != n:
                raise ValueError(f"{name} must have {dims[name]} dimensions and {n} rows; got {tuple(t.shape)}")
            if "masks" in name and t.shape[-2:] != (h, w):
                raise ValueError(f"{name} are {tuple(t.shape[-2:])} for images of {(h, w)}; they must match")
            if name in ("boxes", "proposals") and t.shape[-1] != 4:
                raise ValueError(f"{name} must end in 4 coordinates (x0, y0, x1, y1); got {tuple(t.shape)}")

    @staticmethod
    def _resize_targets(targets: dict[str, torch.Tensor], before: tuple[int, int], size: tuple[int, int]) -> None:
        scale = torch.tensor([size[1] / before[1], size[0] / before[0]] * 2)
        for name, t in targets.items():
            kind = TARGET_KINDS[name]
            if kind == "class map":
                targets[name] = F.interpolate(t[:, None].float(), size=size, mode="nearest-exact")[:, 0].to(t.dtype)
            elif kind == "instance masks":
                targets[name] = F.interpolate(t.float(), size=size, mode="nearest-exact").to(t.dtype)
            elif kind == "boxes":
                targets[name] = t * scale.to(t.device, t.dtype)

    @staticmethod
    def _move_boxes(
        targets: dict[str, torch.Tensor], shift: torch.Tensor, flip: torch.Tensor | None, size: tuple[int, int]
    ) -> None:
        """Shift boxes by ``shift`` (N, 2) pixels, mirror the ``flip`` rows in a crop ``size`` wide, clip to it."""
        ch, cw = size
        labels = targets.get("box_labels")
        for name, t in list(targets.items()):
            if TARGET_KINDS[name] != "boxes":
                continue
            b = t - shift.to(t.dtype).repeat(1, 2)[:, None, :]
            if flip is not None:
                mirrored = torch.stack([cw - b[..., 2], b[..., 1], cw - b[..., 0], b[..., 3]], -1)
                b = torch.where(flip.view(-1, 1, 1), mirrored, b)
            b = torch.stack(
                [b[..., 0].clamp(0, cw), b[..., 1].clamp(0, ch), b[..., 2].clamp(0, cw), b[..., 3].clamp(0, ch)], -1
            )
            if name == "boxes" and labels is not None:
                kept = (labels >= 0) & (b[..., 2] - b[..., 0] >= 1) & (b[..., 3] - b[..., 1] >= 1)
                targets["box_labels"] = torch.where(kept, labels, -1)
                b = b * kept.unsqueeze(-1)
            targets[name] = b

    def _offsets(self, n: int, span: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
        return (_rand(n, generator, device) * span).long().clamp_(max=span - 1)

    def _pad(self, x: torch.Tensor, value: float = 0) -> torch.Tensor:
        p = self.padding
        if not p:
            return x
        if self.padding_mode == "zeros":
            return F.pad(x, (p, p, p, p), value=value)
        h, w = x.shape[-2:]
        if self.padding_mode == "reflect" and p >= min(h, w):
            raise ValueError(f"reflect padding of {p} needs images larger than that; got {h}x{w}")

        def source(size: int) -> torch.Tensor:
            i = torch.arange(-p, size + p, device=x.device)
            if self.padding_mode == "reflect":
                i = i.abs()
                return torch.where(i >= size, 2 * (size - 1) - i, i)
            return i.clamp(0, size - 1)

        return x.index_select(2, source(h)).index_select(3, source(w))

    def _grids(self, ch: int, cw: int, wp: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        key = ("grid", ch, cw, wp, device)
        if key not in self._constants:
            rows = torch.arange(ch, device=device)[:, None] * wp
            cols = torch.arange(cw, device=device)[None, :]
            self._constants[key] = ((rows + cols).view(-1), (rows + (cw - 1 - cols)).view(-1))
        return self._constants[key]

    def _crop_flip(
        self, x: torch.Tensor, generator: torch.Generator | None, targets: dict[str, torch.Tensor] | None = None
    ) -> torch.Tensor:
        # One gather per batch: output pixel (i, j) of image b reads the padded image at
        # (top[b] + i) * width + left[b] + j, or + cw - 1 - j when b is flipped.
        n, c, h, w = x.shape
        ch, cw = self.crop or h, self.crop or w
        hp, wp = h + 2 * self.padding, w + 2 * self.padding
        if ch > hp or cw > wp:
            raise ValueError(f"crop {self.crop} is larger than the padded image ({hp}x{wp})")
        xp = self._pad(x)
        device = x.device
        if self.crop or self.padding:
            top = self._offsets(n, hp - ch + 1, generator, device)
            left = self._offsets(n, wp - cw + 1, generator, device)
        else:
            top = left = torch.zeros(n, dtype=torch.long, device=device)
        start = top * wp + left
        base, flipped = self._grids(ch, cw, wp, device)
        flip = None
        if self.flip:
            flip = _rand(n, generator, device) < 0.5
            index = torch.where(flip[:, None], flipped, base)
        else:
            index = base.expand(n, -1)
        index = index + start[:, None]
        out = xp.reshape(n, c, hp * wp).gather(2, index.view(n, 1, ch * cw).expand(n, c, ch * cw))
        for name, t in (targets or {}).items():
            kind = TARGET_KINDS[name]
            if kind in ("class map", "instance masks"):
                m = t[:, None] if kind == "class map" else t
                k = m.shape[1]
                mp = self._pad(m.to(torch.uint8), IGNORE_INDEX if kind == "class map" else 0)
                moved = mp.reshape(n, k, hp * wp).gather(2, index.view(n, 1, ch * cw).expand(n, k, ch * cw))
                moved = moved.view(n, k, ch, cw).to(t.dtype)
                targets[name] = moved[:, 0] if kind == "class map" else moved
        if targets:
            shift = torch.stack([left, top], 1) - self.padding
            self._move_boxes(targets, shift, flip, (ch, cw))
        return out.view(n, c, ch, cw)

    def _flip_only(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        if not self.flip:
            return x
        flip = (_rand(x.shape[0], generator, x.device) < 0.5).view(-1, 1, 1, 1)
        return torch.where(flip, x.flip(3), x)

    def _resized_crop(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        from torchvision.ops import roi_align

        n, _, h, w = x.shape
        size = self.crop or self.out_size or h
        lo, hi = self.random_resized_crop
        tries = 10  # like torchvision: the first of ten draws that fits, else the whole image
        area = h * w * (lo + (hi - lo) * _rand(n * tries, generator, x.device)).view(n, tries)
        log_lo, log_hi = math.log(self.ratio[0]), math.log(self.ratio[1])
        aspect = torch.exp(log_lo + (log_hi - log_lo) * _rand(n * tries, generator, x.device)).view(n, tries)
        cw, ch = torch.sqrt(area * aspect), torch.sqrt(area / aspect)
        fits = (cw <= w) & (ch <= h)
        first = fits.int().argmax(1, keepdim=True)
        any_fit = fits.any(1)
        cw = torch.where(any_fit, cw.gather(1, first).squeeze(1), torch.full_like(any_fit, w, dtype=cw.dtype))
        ch = torch.where(any_fit, ch.gather(1, first).squeeze(1), torch.full_like(any_fit, h, dtype=ch.dtype))
        x0 = (w - cw) * _rand(n, generator, x.device)
        y0 = (h - ch) * _rand(n, generator, x.device)
        boxes = torch.stack([torch.arange(n, device=x.device, dtype=cw.dtype), x0, y0, x0 + cw, y0 + ch], 1)
        # roi_align samples each output bin at ceil(box / output) points and averages them: bilinear when the crop is
        # enlarged, an area-like average when it is shrunk, so small outputs are not aliased.
        return roi_align(x.float(), boxes.float(), (size, size), spatial_scale=1.0, sampling_ratio=-1, aligned=True)

    def _jitter(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        n, c = x.shape[:2]
        s = self.color_jitter

        def factor() -> torch.Tensor:
            return (max(0.0, 1 - s) + (1 + s - max(0.0, 1 - s)) * _rand(n, generator, x.device)).view(n, 1, 1, 1)

        brightness, contrast, saturation = factor(), factor(), factor()
        x = x.mul_(brightness).clamp_(0, 1)
        m = self._grey(x).mean(dim=(1, 2, 3), keepdim=True)
        x = x.sub_(m).mul_(contrast).add_(m).clamp_(0, 1)
        if c == 3:
            grey = self._grey(x)
            x = x.sub_(grey).mul_(saturation).add_(grey).clamp_(0, 1)
        return x

    @staticmethod
    def _grey(x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1:
            return x
        w = torch.tensor(LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        return (x * w).sum(1, keepdim=True)

    def to_torchvision(self) -> nn.Module:
        """The same augmentation as a per-image ``torchvision.transforms.v2`` pipeline (uint8 tensor in, float out).

        For data read image by image (a `torch.utils.data.DataLoader` over files); the random choices follow
        torchvision's own sampling, so only the distribution - not the exact draws - matches this module.
        """
        from torchvision.transforms import v2

        steps: list[nn.Module] = []
        if self.random_resized_crop is not None:
            if self.flip:
                steps.append(v2.RandomHorizontalFlip())
            size = self.crop or self.out_size
            if size is None:
                raise ValueError("to_torchvision needs crop or out_size for a random resized crop")
            steps.append(v2.RandomResizedCrop(size, scale=self.random_resized_crop, ratio=self.ratio, antialias=True))
        else:
            if self.crop is not None or self.padding:
                mode = {"zeros": "constant", "reflect": "reflect", "replicate": "edge"}[self.padding_mode]
                if self.crop is None:
                    raise ValueError("to_torchvision needs crop when padding is set")
                steps.append(v2.RandomCrop(self.crop, padding=self.padding or None, padding_mode=mode))
            if self.flip:
                steps.append(v2.RandomHorizontalFlip())
        if self.out_size is not None:
            steps.append(v2.Resize((self.out_size, self.out_size), antialias=True))
        if self.color_jitter:
            s = self.color_jitter
            steps.append(v2.ColorJitter(brightness=s, contrast=s, saturation=s))
        steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(self.mean), list(self.std))]
        return v2.Compose(steps)
