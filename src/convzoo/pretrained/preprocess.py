"""The preprocessing transform of a weights entry or a model card (torchvision's ``weights.transforms()``)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

_MODES = {
    "nearest": InterpolationMode.NEAREST,
    "bilinear": InterpolationMode.BILINEAR,
    "bicubic": InterpolationMode.BICUBIC,
}


class ClassificationPreprocess(nn.Module):
    """Resize the shorter side, centre-crop, scale to [0, 1] and normalise.

    Accepts a PIL image (converted to RGB or grey as the weights need), or a tensor image (C, H, W) or batch
    (N, C, H, W), uint8 in [0, 255] or floating point in [0, 1]. Returns float32 of shape (C, S, S) or (N, C, S, S).
    """

    def __init__(self, spec: Any) -> None:
        """Args: spec: A `convzoo.pretrained.Preprocessing` (sizes, interpolation, mean, std, channels)."""
        super().__init__()
        self.spec = spec

    def extra_repr(self) -> str:
        s = self.spec
        return (
            f"resize_size={s.resize_size}, crop_size={s.crop_size}, interpolation={s.interpolation}, "
            f"mean={list(s.mean)}, std={list(s.std)}, channels={s.channels}"
        )

    def forward(self, image: Any) -> torch.Tensor:
        s = self.spec
        pil = _is_pil(image)
        if pil:
            image = image.convert("L" if s.channels == 1 else "RGB")
        elif not isinstance(image, torch.Tensor):
            raise TypeError(f"expected a PIL image or a tensor; got {type(image).__name__}")
        else:
            self._check_tensor(image)
        # Resize and crop the pixels as given (a PIL image with PIL's resampling), then scale: what torchvision's
        # ImageClassification transform does, so its weights see the same numbers as in its evaluation.
        mode = _MODES[s.interpolation]
        if s.resize_size is None:
            image = TF.resize(image, [s.crop_size, s.crop_size], interpolation=mode, antialias=True)
        else:
            image = TF.resize(image, [s.resize_size], interpolation=mode, antialias=True)
        image = TF.center_crop(image, [s.crop_size, s.crop_size])
        x = TF.pil_to_tensor(image) if pil else image
        x = TF.convert_image_dtype(x, torch.float)
        return TF.normalize(x, list(s.mean), list(s.std))

    def _check_tensor(self, x: torch.Tensor) -> None:
        s = self.spec
        if x.ndim not in (3, 4):
            raise ValueError(f"expected an image (C, H, W) or a batch (N, C, H, W); got shape {tuple(x.shape)}")
        if x.shape[-3] != s.channels:
            raise ValueError(
                f"these weights take {s.channels}-channel images; got {x.shape[-3]} channels (shape {tuple(x.shape)})"
            )
        if x.dtype != torch.uint8 and not x.is_floating_point():
            raise TypeError(f"expected uint8 or floating-point pixels; got {x.dtype}")


def _is_pil(image: Any) -> bool:
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - pillow comes with torchvision
        return False
    return isinstance(image, Image.Image)
