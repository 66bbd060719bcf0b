"""A data loader for sets that fit in memory: the uint8 images move to the device once, then each batch is one
``index_select`` and one batched `Augment` call - no worker processes, no per-image Python work, no collation.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch

from convzoo.data.arrays import ArrayDataset, derive_seed, intra_op_threads
from convzoo.data.features import FeatureSet
from convzoo.data.transforms import TARGET_KINDS, Augment


class FastLoader:
    """Iterate an `ArrayDataset` in batches on a device, augmented and normalised (or a `FeatureSet`, as stored).

    The order is reproducible: epoch e is shuffled with a generator seeded with ``seed + e`` (the same on every
    rank, like `torch.utils.data.DistributedSampler`), and the augmentation draws from a generator seeded from
    (seed, epoch, rank), restarted at each iteration - so iterating an epoch twice yields the same batches.

    With ``world_size`` > 1 each rank takes every ``world_size``-th index of the epoch's permutation, so the shards
    are disjoint and of equal size: with ``drop_last`` the permutation's tail is dropped to a multiple of
    ``world_size``; without it the permutation is padded by repeating its first indices (as DistributedSampler
    does), so every image is seen at least once and at most ``world_size - 1`` twice. ``drop_last`` also drops a
    rank's final incomplete batch.

    A batch is ``(images, labels)``, followed by the rows of each of the dataset's ``extras`` named in ``extras``
    (e.g. a teacher's precomputed logits), in that order. Extras named in `convzoo.data.transforms.TARGET_KINDS`
    (segmentation masks, boxes) take the same crops, flips and resizes as their images.

    Args:
        dataset: The images and labels, or feature vectors and labels.
        batch_size: Images per batch (per rank).
        shuffle: Shuffle every epoch; otherwise the dataset's order.
        augment: Augmentation and normalisation; None converts to floats in [0, 1]. Feature vectors take none.
        device: Where the images live and the batches are made.
        drop_last: Drop the incomplete last batch (and, with several ranks, the tail that does not divide evenly).
        seed: Seed of the order and of the augmentation.
        rank: This process's index among ``world_size``.
        world_size: Number of processes sharing each epoch.
        cpu_threads: Intra-op threads that assemble a batch on the CPU (None: torch's setting). One by default:
            the batch ops are small and memory-bound, so on a few cores a parallel region costs more than it saves;
            the model's own ops run with torch's setting.
        extras: Names of the dataset's ``extras`` to yield with each batch.
    """

    def __init__(
        self,
        dataset: ArrayDataset,
        *,
        batch_size: int,
        shuffle: bool,
        augment: Augment | None,
        device: str | torch.device = "cpu",
        drop_last: bool = False,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        cpu_threads: int | None = 1,
        extras: tuple[str, ...] = (),
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1; got {batch_size}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank must lie in 0..world_size-1; got rank {rank} of world_size {world_size}")
        missing = [k for k in extras if k not in dataset.extras]
        if missing:
            raise KeyError(f"{dataset.name} has no extras {missing}; it has {sorted(dataset.extras)}")
        self.features = isinstance(dataset, FeatureSet)
        if self.features and augment is not None:
            raise ValueError(f"{dataset.name} holds feature vectors, which take no augmentation; pass augment=None")
        self.dataset = dataset
        self.batch_size, self.shuffle, self.drop_last = batch_size, shuffle, drop_last
        self.augment = augment if augment is not None else Augment()
        self.device = torch.device(device)
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.epoch = 0
        self.cpu_threads = cpu_threads if self.device.type == "cpu" else None
        self.images = dataset.images.to(self.device)
        self.labels = dataset.labels.to(self.device)
        self.extras = [dataset.extras[k].to(self.device) for k in extras]
        self.extra_names = tuple(extras)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order and augmentation the next iteration reproduces."""
        self.epoch = epoch

    @property
    def num_samples(self) -> int:
        """Images this rank sees per epoch (before dropping an incomplete batch)."""
        n = len(self.dataset)
        return n // self.world_size if self.drop_last else math.ceil(n / self.world_size)

    def __len__(self) -> int:
        """Batches per epoch for this rank."""
        m = self.num_samples
        return m // self.batch_size if self.drop_last else math.ceil(m / self.batch_size)

    def indices(self) -> torch.Tensor:
        """This rank's dataset indices for the current epoch, in order (on the CPU)."""
        n = len(self.dataset)
        if self.shuffle:
            order = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed + self.epoch))
        else:
            order = torch.arange(n)
        total = self.num_samples * self.world_size
        if total > n:
            order = order.repeat(math.ceil(total / n))
        return order[:total][self.rank :: self.world_size]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        index = self.indices()
        contiguous = index.numel() == len(self.dataset) and not self.shuffle  # plain slices, no copies
        index = index.to(self.device)
        generator = torch.Generator().manual_seed(derive_seed(self.seed, self.epoch, self.rank))
        bs = self.batch_size
        for b in range(len(self)):
            with intra_op_threads(self.cpu_threads):
                if contiguous:
                    rows = [t[b * bs : (b + 1) * bs] for t in (self.images, self.labels, *self.extras)]
                else:
                    sel = index[b * bs : (b + 1) * bs]
                    rows = [t.index_select(0, sel) for t in (self.images, self.labels, *self.extras)]
                if not self.features:
                    moving = {k: rows[2 + i] for i, k in enumerate(self.extra_names) if k in TARGET_KINDS}
                    if moving:
                        rows[0], moved = self.augment(rows[0], generator=generator, targets=moving)
                        rows[2:] = [moved.get(k, row) for k, row in zip(self.extra_names, rows[2:])]
                    else:
                        rows[0] = self.augment(rows[0], generator=generator)
            yield tuple(rows)  # outside the thread setting: the consumer's model runs with its own
