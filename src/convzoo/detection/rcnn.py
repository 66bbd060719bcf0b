"""R-CNN: regions with CNN features (Girshick et al., "Rich feature hierarchies for accurate object detection and
semantic segmentation", CVPR 2014).

The pipeline of the paper, stage by stage:

1. Selective search proposes about two thousand class-agnostic regions per image (`selective_search`).
2. Each region is dilated so that, once warped to the CNN's square input, ``p = 16`` pixels of context surround it
   (16 of 227 in the paper, scaled to the input size here), then warped anisotropically; pixels beyond the image
   take the mean colour.
3. A classifier network is fine-tuned on the warped regions as a (classes + background)-way classification:
   regions overlapping a ground-truth box by IoU >= 0.5 take its class, the rest are background, sampled at one
   object to three background regions as the paper's 32/96 mini-batches. The fine-tuning runs on convzoo's training
   engine (`convzoo.train.Trainer`).
4. Its penultimate features (``forward_head(..., pre_logits=True)``, AlexNet's fc7 in the paper) of every region
   train one linear SVM per class: positives are the ground-truth boxes, negatives the regions overlapping no
   object of the class by IoU 0.3 or more. Every negative is used at once (the sets are small), which is what
   hard-negative mining converges to.
5. A ridge regression per class maps the features of a region overlapping an object by IoU >= 0.6 to that object's
   box, coded as in the paper's appendix C.
6. At test time each region is scored by every SVM, its box regressed, and per-class non-maximum suppression (IoU
   0.3) keeps the best of overlapping detections.

Every region costs one forward pass of the network, which is why R-CNN is slow and what Fast R-CNN removed; `RCNN`
records the forward passes and seconds per image of its last `RCNN.predict`.

R-CNN is not a registered model: it is not one network trained by one loss but a pipeline with three separately
trained stages (network, SVMs, regressors), so it does not fit the engine's one-model, one-task contract; it uses
the engine for the one stage that does. A fitted R-CNN is saved as a folder (`RCNN.save`, `RCNN.load`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from torchvision.ops import batched_nms, box_iou, roi_align

from convzoo.data.arrays import ArrayDataset, split_dataset
from convzoo.detection.boxes import BoxCoder, clip_boxes
from convzoo.detection.selective_search import selective_search

__all__ = ["RCNN", "RCNNConfig", "is_rcnn_folder", "warp_regions"]

FORMAT = "convzoo-rcnn"
_REFERENCE_SIZE = 227  # the paper's input size, to which its 16 pixels of context refer


@dataclass
class RCNNConfig:
    """Settings of an R-CNN (defaults are the paper's where it gives them).

    Attributes:
        backbone: A registered classifier whose features describe each region.
        weights: Initial weights of the backbone (path or registered name), e.g. the paper's supervised
            pre-training; None trains it from scratch on the regions.
        input_size: Side of the warped regions fed to the network.
        context: Pixels of context around a warped region, out of 227 (the paper's 16), scaled to ``input_size``.
        proposals: Options of `selective_search` (scale, sigma, min_size, strategies, color_spaces).
        max_proposals: Most proposals per image (the paper's 2,000).
        positive_iou: Overlap with an object that makes a region that object's class when fine-tuning.
        background_per_object: Background regions per object region in the fine-tuning set (the paper's 96/32).
        recipe: The training recipe of the fine-tuning, and its ``epochs`` and ``batch_size``.
        svm_negative_iou: Regions overlapping no object of a class by this much are that class's negatives.
        svm_c: The SVMs' regularisation constant C.
        positive_weight: Weight of positives in the SVM loss (the paper's 2).
        regression_iou: Least overlap of a region used to train a box regressor.
        ridge_alpha: The regressors' ridge penalty (the paper's lambda 1000 on pool5 features; features here are
            scaled to a mean norm of 20 as the paper scales its fc7 features for the SVMs).
        nms_iou: Overlap above which a lower-scoring detection of the same class is suppressed.
        max_detections: Most detections kept per image.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        seed: Seed of sampling, ranking and fine-tuning.
    """

    backbone: str = "resnet20"
    weights: str | None = None
    input_size: int = 32
    context: float = 16.0
    proposals: dict[str, Any] = field(default_factory=dict)
    max_proposals: int = 2000
    positive_iou: float = 0.5
    background_per_object: float = 3.0
    recipe: str = "quick"
    epochs: int = 10
    batch_size: int = 128
    svm_negative_iou: float = 0.3
    svm_c: float = 0.01
    positive_weight: float = 2.0
    regression_iou: float = 0.6
    ridge_alpha: float = 100.0
    nms_iou: float = 0.3
    max_detections: int = 100
    device: str = "auto"
    seed: int = 0


def warp_regions(
    image: torch.Tensor, boxes: torch.Tensor, size: int, *, context: float = 16.0, fill: Sequence[float] = (0, 0, 0)
) -> torch.Tensor:
    """Warp each box of ``image`` to a ``size`` x ``size`` crop with context, as R-CNN feeds regions to its network.

    Each box is dilated about its centre by 227 / (227 - 2 ``context``), so that the box itself fills all but
    ``context`` / 227 of the crop on every side, and sampled bilinearly (anisotropic scaling); samples beyond the
    image take ``fill``.

    Args:
        image: uint8 image (C, H, W).
        boxes: (P, 4) x0 y0 x1 y1 in pixel edges.
        size: Side of the crops.
        context: Pixels of context out of 227.
        fill: Colour beyond the image, per channel in 0..255.

    Returns:
        uint8 crops (P, C, size, size).
    """
    if not 0 <= context < _REFERENCE_SIZE / 2:
        raise ValueError(f"context must lie in [0, {_REFERENCE_SIZE / 2}); got {context}")
    fill_t = torch.tensor(fill, dtype=torch.float32, device=image.device).view(1, -1, 1, 1)
    boxes = boxes.to(image.device, torch.float32).reshape(-1, 4)
    centre, half = (boxes[:, :2] + boxes[:, 2:]) / 2, (boxes[:, 2:] - boxes[:, :2]) / 2
    half = half * _REFERENCE_SIZE / (_REFERENCE_SIZE - 2 * context)
    corners = torch.cat([centre - half, centre + half], 1)
    rois = torch.cat([torch.zeros(len(boxes), 1, device=image.device), corners], 1)
    # Adaptive sampling: a region shrunk to the crop is averaged over ceil(its size / crop) samples per bin; samples
    # beyond the image read zeros, the fill colour once it is added back.
    shifted = image.float().unsqueeze(0) - fill_t
    crops = roi_align(shifted, rois, (size, size), spatial_scale=1.0, sampling_ratio=-1, aligned=True) + fill_t
    # roi_align repeats the border up to a pixel beyond the image; a crop pixel whose centre lies beyond it is fill.
    steps = (torch.arange(size, device=image.device) + 0.5) / size
    xs = corners[:, 0:1] + steps * (corners[:, 2:3] - corners[:, 0:1])
    ys = corners[:, 1:2] + steps * (corners[:, 3:4] - corners[:, 1:2])
    h, w = image.shape[-2:]
    beyond = ((ys < 0) | (ys > h))[:, :, None] | ((xs < 0) | (xs > w))[:, None, :]
    crops = torch.where(beyond[:, None], fill_t, crops)
    return crops.round_().clamp_(0, 255).to(torch.uint8)


def _objects(dataset: ArrayDataset, i: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Ground-truth boxes and labels of image ``i`` (padding rows dropped)."""
    keep = dataset.extras["box_labels"][i] >= 0
    return dataset.extras["boxes"][i][keep].float(), dataset.extras["box_labels"][i][keep]


class RCNN:
    """An R-CNN detector: `fit` trains it on a detection data set, `predict` detects, `save`/`load` keep it.

    Args:
        classes: Class names, the background first (index 0), as the data set's.
        config: Settings; default `RCNNConfig()`.
    """

    def __init__(self, classes: Sequence[str], config: RCNNConfig | None = None) -> None:
        if len(classes) < 2:
            raise ValueError(f"R-CNN needs the background and at least one class; got classes {list(classes)}")
        self.classes = [str(c) for c in classes]
        self.config = config or RCNNConfig()
        self.num_classes = len(self.classes)
        self.cnn: nn.Module | None = None
        self.mean: tuple[float, ...] = (0.5, 0.5, 0.5)
        self.std: tuple[float, ...] = (0.25, 0.25, 0.25)
        self.fill: tuple[float, ...] = (127.0, 127.0, 127.0)
        self.image_size: tuple[int, int] | None = None
        self.feature_scale = 1.0
        self.svm_weight = np.zeros((0, 0))
        self.svm_bias = np.zeros(0)
        self.reg_weight = np.zeros((0, 0, 4))
        self.reg_bias = np.zeros((0, 4))
        self.coder = BoxCoder()
        self.stats: dict[str, float] = {}

    def __repr__(self) -> str:
        state = "fitted" if self.cnn is not None else "not fitted"
        return f"RCNN({self.config.backbone}, {self.num_classes - 1} classes, {state})"

    @property
    def device(self) -> torch.device:
        if self.config.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.config.device)

    # -- fitting ------------------------------------------------------------------------------------------------------

    def fit(self, train_set: ArrayDataset, *, out: str | Path | None = None, progress: bool = True) -> dict[str, Any]:
        """Train every stage on ``train_set`` (extras ``boxes`` and ``box_labels``; ``proposals`` if present, else
        selective search runs here).

        Args:
            train_set: The training images and their objects.
            out: Run folder of the network's fine-tuning (None: a temporary one).
            progress: Show progress bars.

        Returns:
            What each stage saw and how long it took (also kept in ``self.stats``).
        """
        if "boxes" not in train_set.extras or "box_labels" not in train_set.extras:
            raise ValueError(f"{train_set.name}: R-CNN trains on a detection set, with extras 'boxes' and 'box_labels'")
        if train_set.num_classes != self.num_classes:
            raise ValueError(f"{train_set.name} has {train_set.num_classes} classes; this R-CNN {self.num_classes}")
        self.stats = {}
        self.image_size = tuple(train_set.image_size[1:])
        self.fill = tuple(255 * m for m in train_set.mean_std()[0])
        start = time.perf_counter()
        proposals = self._proposals(train_set, progress)
        stats = {"proposal_seconds": time.perf_counter() - start}
        stats["proposals_per_image"] = sum(len(p) for p in proposals) / max(1, len(proposals))

        start = time.perf_counter()
        regions = self._region_set(train_set, proposals)
        stats["finetune_regions"] = len(regions)
        self._finetune(regions, out, progress)
        stats["finetune_seconds"] = time.perf_counter() - start

        start = time.perf_counter()
        feats, boxes, owners = [], [], []
        for i in _bar(range(len(train_set)), progress, "R-CNN features"):
            gt, _ = _objects(train_set, i)
            candidates = torch.cat([gt, proposals[i]])
            feats.append(self._features(self._warp(train_set.images[i], candidates)))
            boxes.append(candidates)
            owners.append(torch.full((len(candidates),), i))
        features = torch.cat(feats)
        self.feature_scale = float(20.0 / features.norm(dim=1).mean().clamp(min=1e-6))
        features = (features * self.feature_scale).numpy()
        stats["feature_seconds"] = time.perf_counter() - start

        start = time.perf_counter()
        self._fit_heads(train_set, features, torch.cat(boxes), torch.cat(owners))
        stats["svm_and_regression_seconds"] = time.perf_counter() - start
        self.stats |= stats
        return dict(self.stats)

    def _proposals(self, dataset: ArrayDataset, progress: bool) -> list[torch.Tensor]:
        if "proposals" in dataset.extras:
            stored = dataset.extras["proposals"].float()
            real = (stored[..., 2:] > stored[..., :2]).all(-1)  # padding rows are all zeros
            return [p[k][: self.config.max_proposals] for p, k in zip(stored, real)]
        options = {"seed": self.config.seed, **self.config.proposals, "max_proposals": self.config.max_proposals}
        return [selective_search(image, **options) for image in _bar(dataset.images, progress, "selective search")]

    def _warp(self, image: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        return warp_regions(image, boxes, self.config.input_size, context=self.config.context, fill=self.fill)

    def _region_set(self, dataset: ArrayDataset, proposals: list[torch.Tensor]) -> ArrayDataset:
        """Warped regions labelled for fine-tuning: objects (IoU >= positive_iou) and sampled background."""
        g = torch.Generator().manual_seed(self.config.seed)
        crops, labels = [], []
        background: list[tuple[int, torch.Tensor]] = []
        for i in range(len(dataset)):
            gt, gt_labels = _objects(dataset, i)
            candidates = proposals[i]
            if len(gt):
                iou, best = box_iou(candidates, gt).max(1)
                label = torch.where(iou >= self.config.positive_iou, gt_labels[best], 0)
            else:
                label = torch.zeros(len(candidates), dtype=torch.int64)
            positive = label > 0
            crops.append(self._warp(dataset.images[i], torch.cat([gt, candidates[positive]])))
            labels.append(torch.cat([gt_labels, label[positive]]))
            background.append((i, candidates[~positive]))
        num_objects = sum(len(x) for x in labels)
        pool = [(i, box) for i, boxes in background for box in boxes]
        wanted = min(len(pool), max(1, round(self.config.background_per_object * num_objects)))
        for j in torch.randperm(len(pool), generator=g)[:wanted].sort().values.tolist():
            i, box = pool[j]
            crops.append(self._warp(dataset.images[i], box[None]))
            labels.append(torch.zeros(1, dtype=torch.int64))
        return ArrayDataset(
            images=torch.cat(crops), labels=torch.cat(labels), classes=self.classes, name=f"{dataset.name}-regions"
        )

    def _finetune(self, regions: ArrayDataset, out: str | Path | None, progress: bool) -> None:
        """Fine-tune the backbone on the warped regions with the training engine."""
        from convzoo.factory import create_model
        from convzoo.train import TrainConfig, Trainer

        cfg = self.config
        train, test = split_dataset(regions, 0.1)
        self.mean, self.std = train.mean_std()  # what the engine normalises the training batches with
        model = create_model(cfg.backbone, num_classes=self.num_classes, in_chans=3, weights=cfg.weights)
        with tempfile.TemporaryDirectory() as scratch:
            config = TrainConfig(
                model=cfg.backbone,
                data=regions.name,
                recipe=cfg.recipe,
                recipe_overrides={"epochs": cfg.epochs, "batch_size": min(cfg.batch_size, len(train))},
                image_size=cfg.input_size,
                out=str(out) if out is not None else str(Path(scratch) / "finetune"),
                device=str(self.device),
                amp="off",
                channels_last=False,
                seed=cfg.seed,
                progress=progress,
            )
            trainer = Trainer(config, model=model, datasets=(train, test))
            trainer.run()
        self.cnn = trainer.model.float().eval()
        self.stats["finetune_top1"] = trainer.progress.history[-1].get("test_top1", math.nan)

    @torch.no_grad()
    def _features(self, crops: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
        """Unscaled penultimate features (P, D) of uint8 crops, on the CPU."""
        if self.cnn is None:
            raise RuntimeError("this R-CNN is not fitted; call fit() or RCNN.load() first")
        device = next(self.cnn.parameters()).device
        mean = torch.tensor(self.mean, device=device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=device).view(1, -1, 1, 1)
        out = []
        for s in range(0, len(crops), batch_size):
            x = (crops[s : s + batch_size].to(device).float() / 255 - mean) / std
            out.append(self.cnn.forward_head(self.cnn.forward_features(x), pre_logits=True).flatten(1).float().cpu())
        return torch.cat(out) if out else torch.zeros(0, self.cnn.head_hidden_size)

    def _fit_heads(self, dataset: ArrayDataset, features: np.ndarray, boxes: torch.Tensor, owner: torch.Tensor) -> None:
        """One linear SVM and one ridge box regressor per class, on the scaled features of every region."""
        from sklearn.linear_model import Ridge
        from sklearn.svm import LinearSVC

        cfg = self.config
        n, dim = features.shape
        best_iou = torch.zeros(n, self.num_classes)  # each region's best overlap with an object of each class
        target = torch.zeros(n, self.num_classes, 4)  # and that object's box
        is_gt = torch.zeros(n, dtype=torch.bool)
        for i in range(len(dataset)):
            rows = (owner == i).nonzero().flatten()
            gt, gt_labels = _objects(dataset, i)
            is_gt[rows[: len(gt)]] = True  # the ground-truth boxes come first in each image's rows
            for c in gt_labels.unique().tolist():
                mine = gt[gt_labels == c]
                iou, j = box_iou(boxes[rows], mine).max(1)
                best_iou[rows, c], target[rows, c] = iou, mine[j]
        self.svm_weight, self.svm_bias = np.zeros((self.num_classes, dim)), np.full(self.num_classes, -10.0)
        self.reg_weight, self.reg_bias = np.zeros((self.num_classes, dim, 4)), np.zeros((self.num_classes, 4))
        for c in range(1, self.num_classes):
            positive = is_gt & (best_iou[:, c] >= 1.0 - 1e-6)
            negative = best_iou[:, c] < cfg.svm_negative_iou
            if positive.any() and negative.any():
                x = np.concatenate([features[positive.numpy()], features[negative.numpy()]])
                y = np.r_[np.ones(int(positive.sum())), np.zeros(int(negative.sum()))]
                svm = LinearSVC(
                    C=cfg.svm_c, class_weight={1: cfg.positive_weight, 0: 1.0}, intercept_scaling=10.0, max_iter=10000
                )
                svm.fit(x, y)
                self.svm_weight[c], self.svm_bias[c] = svm.coef_[0], svm.intercept_[0]
            near = (best_iou[:, c] >= cfg.regression_iou) & ~is_gt
            if near.sum() >= 2:
                codes = self.coder.encode(target[near, c], boxes[near]).numpy()
                ridge = Ridge(alpha=cfg.ridge_alpha).fit(features[near.numpy()], codes)
                self.reg_weight[c], self.reg_bias[c] = ridge.coef_.T, ridge.intercept_

    # -- detection ----------------------------------------------------------------------------------------------------

    def predict(
        self,
        images: torch.Tensor | ArrayDataset | Sequence[torch.Tensor],
        *,
        proposals: Sequence[torch.Tensor] | None = None,
        progress: bool = False,
    ) -> list[dict[str, torch.Tensor]]:
        """Detect objects in ``images``.

        Args:
            images: uint8 images (N, 3, H, W), a list of (3, H, W) images, or an `ArrayDataset` (whose
                ``proposals`` extra is used when present).
            proposals: (P, 4) boxes per image instead of running selective search.
            progress: Show a progress bar.

        Returns:
            Per image a dict of ``boxes`` (K, 4) float x0 y0 x1 y1 in the image's pixels, ``labels`` (K,) int64 in
            1..num_classes-1 and ``scores`` (K,) in (0, 1) (the logistic of the SVM margin), best first.
        """
        if isinstance(images, ArrayDataset):
            if proposals is None and "proposals" in images.extras:
                proposals = self._proposals(images, progress=False)
            images = images.images
        options = {"seed": self.config.seed, **self.config.proposals, "max_proposals": self.config.max_proposals}
        results, passes, search_seconds = [], 0, 0.0
        start = time.perf_counter()
        for i, image in enumerate(_bar(images, progress, "R-CNN")):
            if proposals is None:
                t = time.perf_counter()
                boxes = selective_search(image, **options)
                search_seconds += time.perf_counter() - t
            else:
                boxes = proposals[i].float().reshape(-1, 4)
            passes += len(boxes)
            results.append(self._detect(image, boxes))
        n = max(1, len(results))
        self.stats |= {
            "seconds_per_image": (time.perf_counter() - start) / n,
            "proposal_seconds_per_image": search_seconds / n,
            "forward_passes_per_image": passes / n,
        }
        return results

    def _detect(self, image: torch.Tensor, boxes: torch.Tensor) -> dict[str, torch.Tensor]:
        size = image.shape[-2:]
        k = self.num_classes - 1
        if len(boxes) == 0:
            return {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64), "scores": torch.zeros(0)}
        feats = self._features(self._warp(image, boxes)).double() * self.feature_scale
        margins = feats @ torch.from_numpy(self.svm_weight[1:]).T + torch.from_numpy(self.svm_bias[1:])
        codes = torch.einsum("pd,cdk->pck", feats, torch.from_numpy(self.reg_weight[1:])) + torch.from_numpy(
            self.reg_bias[1:]
        )
        moved = clip_boxes(self.coder.decode(codes.reshape(len(boxes), -1).float(), boxes), size)  # (P, k, 4)
        labels = torch.arange(1, k + 1).repeat(len(boxes))
        moved, scores = moved.reshape(-1, 4), margins.reshape(-1).float()
        ok = (moved[:, 2] > moved[:, 0]) & (moved[:, 3] > moved[:, 1])
        moved, scores, labels = moved[ok], scores[ok], labels[ok]
        keep = batched_nms(moved, scores, labels, self.config.nms_iou)[: self.config.max_detections]
        return {"boxes": moved[keep], "labels": labels[keep], "scores": torch.sigmoid(scores[keep])}

    # -- saving -------------------------------------------------------------------------------------------------------

    def save(self, path: str | Path) -> Path:
        """Write the fitted detector to the folder ``path``: ``rcnn.json`` (settings, classes, normalisation),
        ``cnn.safetensors`` (the network) and ``heads.npz`` (SVM and regressor weights). Nothing is pickled."""
        from convzoo.weights import save_weights

        if self.cnn is None:
            raise RuntimeError("this R-CNN is not fitted; nothing to save")
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        save_weights(self.cnn, folder / "cnn.safetensors")
        heads = {"svm_weight": self.svm_weight, "svm_bias": self.svm_bias}
        np.savez(folder / "heads.npz", **heads, reg_weight=self.reg_weight, reg_bias=self.reg_bias)
        meta = {
            "format": FORMAT,
            "version": 1,
            "classes": self.classes,
            "config": dataclasses.asdict(self.config),
            "mean": list(self.mean),
            "std": list(self.std),
            "fill": list(self.fill),
            "image_size": list(self.image_size) if self.image_size else None,
            "feature_scale": self.feature_scale,
            "stats": self.stats,
        }
        (folder / "rcnn.json").write_text(json.dumps(meta, indent=2) + "\n")
        return folder

    @classmethod
    def load(cls, path: str | Path, *, device: str = "auto") -> RCNN:
        """A detector written by `save`.

        Raises:
            FileNotFoundError: ``path`` holds no saved R-CNN.
            ValueError: Its ``rcnn.json`` is not one.
        """
        from convzoo.factory import create_model
        from convzoo.weights import load_weights

        folder = Path(path)
        if not is_rcnn_folder(folder):
            raise FileNotFoundError(f"{folder} holds no saved R-CNN (rcnn.json, cnn.safetensors, heads.npz)")
        meta = json.loads((folder / "rcnn.json").read_text())
        if meta.get("format") != FORMAT:
            raise ValueError(f"{folder / 'rcnn.json'} is not a saved R-CNN (format {meta.get('format')!r})")
        config = RCNNConfig(**{**meta["config"], "device": device})
        rcnn = cls(meta["classes"], config)
        rcnn.mean, rcnn.std, rcnn.fill = tuple(meta["mean"]), tuple(meta["std"]), tuple(meta["fill"])
        rcnn.image_size = tuple(meta["image_size"]) if meta.get("image_size") else None
        rcnn.feature_scale = float(meta["feature_scale"])
        rcnn.stats = dict(meta.get("stats", {}))
        with np.load(folder / "heads.npz", allow_pickle=False) as heads:
            rcnn.svm_weight, rcnn.svm_bias = heads["svm_weight"], heads["svm_bias"]
            rcnn.reg_weight, rcnn.reg_bias = heads["reg_weight"], heads["reg_bias"]
        cnn = create_model(config.backbone, num_classes=rcnn.num_classes, in_chans=3)
        load_weights(cnn, folder / "cnn.safetensors")
        rcnn.cnn = cnn.to(rcnn.device).eval()
        return rcnn


def is_rcnn_folder(path: str | Path) -> bool:
    """Whether ``path`` is a folder written by `RCNN.save`."""
    folder = Path(path)
    return all((folder / name).is_file() for name in ("rcnn.json", "cnn.safetensors", "heads.npz"))


def _bar(items: Any, progress: bool, desc: str) -> Any:
    from tqdm import tqdm

    return tqdm(items, desc=desc, leave=False, disable=not progress)
