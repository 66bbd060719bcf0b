"""Feature vectors held in memory: what a frozen network computed once for every image of a data set.

A `FeatureSet` stands where an `ArrayDataset` of images stands in a training run (`convzoo.train.Trainer` takes
either), so a classifier on precomputed features trains in the same engine as a network on images: the
"pre-computed feature vectors" of the transfer-learning recipe, computed once instead of at every epoch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from convzoo.data.arrays import check_label_range

__all__ = ["FeatureSet"]


@dataclass(eq=False)
class FeatureSet:
    """One split of precomputed feature vectors.

    Attributes:
        images: float32 features (N, D); named as an `ArrayDataset`'s images so loaders treat both alike.
        labels: int64 class indices (N,).
        classes: Class names in label order.
        name: What the features are of, e.g. ``"cifar10 through resnet20 (pre-logits)"``.
    """

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    name: str

    def __post_init__(self) -> None:
        if not isinstance(self.images, torch.Tensor) or not self.images.is_floating_point() or self.images.dim() != 2:
            shape = tuple(self.images.shape) if isinstance(self.images, torch.Tensor) else type(self.images).__name__
            raise ValueError(f"{self.name}: features must be a float tensor (N, D); got {shape}")
        self.images = self.images.float().contiguous()
        self.labels = torch.as_tensor(self.labels).to(torch.int64).reshape(-1)
        if self.labels.numel() != self.images.shape[0]:
            raise ValueError(f"{self.name}: {self.images.shape[0]} feature vectors but {self.labels.numel()} labels")
        self.classes = [str(c) for c in self.classes]
        check_label_range(self.labels, len(self.classes), self.name)

    def __len__(self) -> int:
        return self.images.shape[0]

    def __repr__(self) -> str:
        return f"FeatureSet({self.name!r}, {len(self)} vectors of {self.dim}, {self.num_classes} classes)"

    @property
    def dim(self) -> int:
        """Length of each feature vector."""
        return self.images.shape[1]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_size(self) -> tuple[int]:
        """The shape of one sample, (D,): what a run's report and checkpoint record as its input size."""
        return (self.dim,)

    @property
    def extras(self) -> dict[str, torch.Tensor]:
        return {}

    def subset(self, indices: Sequence[int] | torch.Tensor | np.ndarray) -> FeatureSet:
        """The vectors at ``indices``."""
        index = torch.as_tensor(np.asarray(indices) if not isinstance(indices, torch.Tensor) else indices)
        index = index.nonzero().flatten() if index.dtype == torch.bool else index.to(torch.int64).reshape(-1)
        return FeatureSet(self.images[index], self.labels[index], list(self.classes), self.name)
