"""One split of a data set held in memory (`ArrayDataset`) and the tensor operations every data set shares.

Images are uint8 tensors (N, C, H, W) and labels int64 tensors (N,), small enough for the fast in-memory path of
`convzoo.data.FastLoader`: channel conversion, resizing, stratified splits and reproducible seeds work on them whole.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

# ITU-R BT.601 luma, the weights torchvision's rgb_to_grayscale uses.
LUMA = (0.299, 0.587, 0.114)
# Test split of sets that come without one; the split is fixed (independent of `seed`) so test sets stay comparable.
DEFAULT_TEST_FRACTION = 0.2
_SPLIT_SEED = 0


@contextmanager
def intra_op_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``n`` torch intra-op threads (None: leave the setting alone), then restore the setting.

    Data preparation is a chain of small memory-bound ops; on a machine with few cores each parallel region costs
    more in thread wake-ups than it saves (milliseconds per op on a busy 2-core machine, against tens of
    microseconds of work), and the cores stay free for the model.
    """
    before = torch.get_num_threads()
    if n is None or n == before:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def derive_seed(*parts: int | str) -> int:
    """A 64-bit seed mixed from ``parts`` (stable across runs, platforms and Python versions).

    Unlike ``seed + epoch``, distinct tuples never collide by accident, e.g. (seed 1, epoch 0) and (seed 0, epoch 1).
    """
    digest = hashlib.blake2b("/".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1  # below 2**63: any torch.Generator accepts it


@dataclass(eq=False)  # tensors have no single truth value; compare fields with torch.equal
class ArrayDataset:
    """One split of a data set, held in memory.

    Attributes:
        images: uint8 images (N, C, H, W), contiguous.
        labels: int64 class indices (N,), each in ``[0, len(classes))``.
        classes: Class names in label order.
        name: Name of the data set (``"digits"``, ``"cifar10"``, a file or folder name, ...).
        extras: Further per-image tensors whose first dimension is N, e.g. the shapes set's ``"texture"`` labels,
            ``"boxes"`` (N, 4) and ``"masks"`` (N, H, W).
    """

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    name: str
    extras: dict[str, torch.Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.images, torch.Tensor) or self.images.dtype != torch.uint8:
            kind = self.images.dtype if isinstance(self.images, torch.Tensor) else type(self.images).__name__
            raise TypeError(f"{self.name}: images must be a uint8 tensor (N, C, H, W); got {kind}")
        if self.images.dim() != 4:
            raise ValueError(f"{self.name}: images must have shape (N, C, H, W); got {tuple(self.images.shape)}")
        labels = torch.as_tensor(self.labels)
        if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
            raise TypeError(f"{self.name}: labels must be integers; got {labels.dtype}")
        self.labels = labels.to(torch.int64).reshape(-1)
        if self.labels.numel() != self.images.shape[0]:
            raise ValueError(
                f"{self.name}: {self.images.shape[0]} images but {self.labels.numel()} labels; they must match"
            )
        self.classes = [str(c) for c in self.classes]
        if not self.classes:
            raise ValueError(f"{self.name}: no classes")
        check_label_range(self.labels, len(self.classes), self.name)
        self.images = self.images.contiguous()
        for key, value in self.extras.items():
            if value.shape[0] != self.images.shape[0]:
                raise ValueError(
                    f"{self.name}: extras[{key!r}] has {value.shape[0]} rows for {self.images.shape[0]} images"
                )

    def __len__(self) -> int:
        return self.images.shape[0]

    def __repr__(self) -> str:
        c, h, w = self.image_size
        extras = f", extras={sorted(self.extras)}" if self.extras else ""
        return f"ArrayDataset({self.name!r}, {len(self)} images of {c}x{h}x{w}, {self.num_classes} classes{extras})"

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.classes)

    @property
    def image_size(self) -> tuple[int, int, int]:
        """(channels, height, width) of every image."""
        _, c, h, w = self.images.shape
        return (c, h, w)

    def mean_std(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Per-channel mean and standard deviation of the pixels, in [0, 1] units (for normalisation).

        Computed exactly from each channel's histogram of the 256 grey levels.
        """
        if len(self) == 0:
            raise ValueError(f"{self.name}: mean and std of an empty data set")
        levels = torch.arange(256, dtype=torch.float64)
        means, stds = [], []
        for c in range(self.images.shape[1]):
            counts = torch.bincount(self.images[:, c].reshape(-1), minlength=256).cpu().to(torch.float64)
            p = counts / counts.sum()
            mean = float((p * levels).sum())
            var = max(0.0, float((p * (levels - mean).square()).sum()))
            means.append(mean / 255)
            # A constant channel would divide by zero when normalising.
            stds.append(math.sqrt(var) / 255 if var > 0 else 1.0)
        return tuple(means), tuple(stds)

    def subset(self, indices: Sequence[int] | torch.Tensor | np.ndarray) -> ArrayDataset:
        """The images at ``indices`` (integer positions or a boolean mask), with their labels and extras."""
        index = torch.as_tensor(np.asarray(indices) if not isinstance(indices, torch.Tensor) else indices)
        if index.dtype == torch.bool:
            if index.numel() != len(self):
                raise ValueError(f"{self.name}: a boolean mask of {index.numel()} entries for {len(self)} images")
            index = index.nonzero().flatten()
        index = index.to(torch.int64).reshape(-1)
        if index.numel() and (index.min() < -len(self) or index.max() >= len(self)):
            raise IndexError(f"{self.name}: subset index out of range for {len(self)} images")
        index = index.remainder(max(1, len(self))).to(self.images.device)
        return ArrayDataset(
            images=self.images.index_select(0, index),
            labels=self.labels.index_select(0, index.to(self.labels.device)),
            classes=list(self.classes),
            name=self.name,
            extras={k: v.index_select(0, index.to(v.device)) for k, v in self.extras.items()},
        )

    def balanced_subset(self, size: int, *, seed: int = 0) -> ArrayDataset:
        """A class-balanced subset of ``size`` images, fixed by ``seed`` (the set itself when ``size`` is its size).

        Raises:
            ValueError: ``size`` below 1 or above the set's size.
        """
        if size == len(self):
            return self
        if not 0 < size < len(self):
            raise ValueError(f"a subset of {size:,} images asked for, but {self.name} has {len(self):,}")
        return self.subset(stratified_split(self.labels, test_fraction=size / len(self), seed=seed)[1][:size])

    def select_classes(self, classes: Sequence[int | str]) -> ArrayDataset:
        """The images of ``classes`` (indices or names) alone, relabelled 0.. in the order given.

        Raises:
            ValueError: A class that is not in the set (the message lists them), or one given twice.
        """
        index = []
        for c in classes:
            if isinstance(c, str) and not c.lstrip("-").isdigit():
                if c not in self.classes:
                    raise ValueError(f"{self.name} has no class {c!r}; its classes are {self.classes}")
                index.append(self.classes.index(c))
            elif not 0 <= int(c) < self.num_classes:
                raise ValueError(f"{self.name} has classes 0..{self.num_classes - 1}; got class {c}")
            else:
                index.append(int(c))
        if len(set(index)) != len(index) or not index:
            raise ValueError(f"select_classes needs distinct classes, at least one; got {list(classes)}")
        relabel = torch.full((self.num_classes,), -1, dtype=torch.int64)
        relabel[index] = torch.arange(len(index))
        part = self.subset(relabel[self.labels] >= 0)
        return ArrayDataset(
            images=part.images,
            labels=relabel[part.labels],
            classes=[self.classes[i] for i in index],
            name=self.name,
            extras=part.extras,
        )


def parse_classes(text: str) -> list[int | str]:
    """Classes written on a command line: indices and ranges (``0-4``, ``0,2,5-7``) or names (``cat,dog``)."""
    out: list[int | str] = []
    for part in (p.strip() for p in text.split(",")):
        lo, sep, hi = part.partition("-")
        if sep and lo.isdigit() and hi.isdigit():
            if int(hi) < int(lo):
                raise ValueError(f"class range {part!r} runs backwards; write it low-high, e.g. 0-4")
            out.extend(range(int(lo), int(hi) + 1))
        elif part.isdigit():
            out.append(int(part))
        elif part:
            out.append(part)
    if not out:
        raise ValueError(f"no classes in {text!r}; write indices, ranges or names, e.g. 0-4 or cat,dog")
    return out


def check_label_range(labels: torch.Tensor, num_classes: int, source: str) -> None:
    """Raise `ValueError` naming the first label outside ``0..num_classes - 1`` and how many there are."""
    if labels.numel() == 0:
        return
    bad = ((labels < 0) | (labels >= num_classes)).nonzero()
    if bad.numel():
        i = int(bad[0])
        raise ValueError(
            f"{source}: label {int(labels[i])} at position {i} is out of range for {num_classes} classes "
            f"(labels must lie in 0..{num_classes - 1}; {bad.numel()} label(s) out of range)"
        )


# -- image tensors -----------------------------------------------------------------------------------------------------


def convert_channels(images: torch.Tensor, in_chans: int, source: str = "images") -> torch.Tensor:
    """Convert uint8 images (N, C, H, W) to ``in_chans`` channels: grey to RGB repeats, RGB to grey takes the luma."""
    c = images.shape[1]
    if c == in_chans:
        return images
    if c == 1 and in_chans == 3:
        return images.expand(-1, 3, -1, -1).contiguous()
    if c == 3 and in_chans == 1:
        weights = torch.tensor(LUMA, dtype=torch.float32, device=images.device).view(1, 3, 1, 1)
        out = torch.empty((images.shape[0], 1, *images.shape[2:]), dtype=torch.uint8, device=images.device)
        chunk = max(1, (1 << 22) // max(1, images[0].numel()))
        for s in range(0, images.shape[0], chunk):
            grey = (images[s : s + chunk].float() * weights).sum(1, keepdim=True)
            out[s : s + chunk] = grey.round_().clamp_(0, 255).to(torch.uint8)
        return out
    raise ValueError(f"{source} have {c} channel(s); cannot convert them to {in_chans} (only 1 <-> 3 is supported)")


def resize_images(images: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Resize uint8 images (N, C, H, W) to ``size`` with antialiased bilinear interpolation, rounding to uint8."""
    h, w = (size, size) if isinstance(size, int) else size
    if images.shape[-2:] == (h, w):
        return images
    if h < 1 or w < 1:
        raise ValueError(f"image size must be positive; got {h}x{w}")
    n, c = images.shape[:2]
    out = torch.empty((n, c, h, w), dtype=torch.uint8, device=images.device)
    per_image = c * max(images.shape[2] * images.shape[3], h * w)
    chunk = max(1, (1 << 23) // per_image)
    for s in range(0, n, chunk):
        x = images[s : s + chunk].float()
        y = F.interpolate(x, size=(h, w), mode="bilinear", antialias=True, align_corners=False)
        out[s : s + chunk] = y.round_().clamp_(0, 255).to(torch.uint8)
    return out


def to_nchw_uint8(array: Any, source: str) -> torch.Tensor:
    """Images as a uint8 tensor (N, C, H, W) from (N, H, W), (N, H, W, C) or (N, C, H, W) arrays with C in {1, 3}."""
    x = torch.as_tensor(np.asarray(array)) if not isinstance(array, torch.Tensor) else array
    if x.dtype != torch.uint8:
        hint = " (scale floats in [0, 1] by 255 and cast)" if x.is_floating_point() else ""
        raise TypeError(f"{source}: images must be uint8 in 0..255; got {x.dtype}{hint}")
    if x.dim() == 3:
        return x.unsqueeze(1).contiguous()
    if x.dim() == 4:
        if x.shape[-1] in (1, 3):
            return x.permute(0, 3, 1, 2).contiguous()
        if x.shape[1] in (1, 3):
            return x.contiguous()
        raise ValueError(
            f"{source}: images of shape {tuple(x.shape)} have {x.shape[-1]} channels; expected 1 (grey) or 3 (RGB), "
            f"as (N, H, W, C) or (N, C, H, W)"
        )
    raise ValueError(f"{source}: images must have shape (N, H, W) or (N, H, W, C); got {tuple(x.shape)}")


def stratified_split(
    labels: torch.Tensor, test_fraction: float = DEFAULT_TEST_FRACTION, seed: int = _SPLIT_SEED
) -> tuple[torch.Tensor, torch.Tensor]:
    """Split positions into (train, test) index tensors with each class in the same proportion in both.

    The test set holds ``ceil(test_fraction * N)`` images (scikit-learn's rounding); each class gets its share by
    largest remainders, and a class of at least two images keeps at least one training image.
    """
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must lie strictly between 0 and 1; got {test_fraction}")
    labels = labels.cpu()
    n = labels.numel()
    n_test = math.ceil(test_fraction * n)
    classes, counts = torch.unique(labels, return_counts=True)
    quota = counts.double() * test_fraction
    take = quota.floor().long()
    remainder = n_test - int(take.sum())
    if remainder > 0:
        order = torch.argsort(quota - take, descending=True, stable=True)
        for i in order.tolist():
            if remainder == 0:
                break
            if take[i] + 1 < counts[i] or counts[i] == 1:
                take[i] += 1
                remainder -= 1
    generator = torch.Generator().manual_seed(seed)
    train_parts, test_parts = [], []
    for cls, k in zip(classes.tolist(), take.tolist()):
        members = (labels == cls).nonzero().flatten()
        members = members[torch.randperm(members.numel(), generator=generator)]
        test_parts.append(members[:k])
        train_parts.append(members[k:])
    train = torch.cat(train_parts).sort().values if train_parts else torch.zeros(0, dtype=torch.long)
    test = torch.cat(test_parts).sort().values if test_parts else torch.zeros(0, dtype=torch.long)
    return train, test


def split_dataset(full: ArrayDataset, test_fraction: float) -> tuple[ArrayDataset, ArrayDataset]:
    """(train, test) subsets of ``full`` by the fixed `stratified_split` holding ``test_fraction`` of it."""
    train_idx, test_idx = stratified_split(full.labels, test_fraction)
    return full.subset(train_idx), full.subset(test_idx)
