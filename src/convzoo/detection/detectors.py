"""Fast R-CNN, Faster R-CNN (optionally with a feature pyramid) and Mask R-CNN, assembled from parts.

A detector is a backbone (any registered classifier's feature maps), an optional neck (`FeaturePyramid`), an
optional region proposal network (without one, proposals come from outside: Fast R-CNN's selective search) and the
RoI heads (box head, optionally the mask head). Its ``forward(images, targets=None, proposals=None)`` follows
torchvision: a dict of losses in training mode, one dict of ``boxes``, ``labels``, ``scores`` (and ``masks``) per
image in evaluation mode.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
import torch.nn as nn

from convzoo.detection.anchors import AnchorConfig, AnchorGenerator
from convzoo.detection.backbone import Backbone, BackboneConfig
from convzoo.detection.boxes import check_targets
from convzoo.detection.fpn import FeaturePyramid, FPNConfig
from convzoo.detection.roi_heads import (
    FastRCNNPredictor,
    MaskHead,
    MaskHeadConfig,
    RoIHeadConfig,
    RoIHeads,
    RoIPooler,
    TwoMLPHead,
)
from convzoo.detection.rpn import RegionProposalNetwork, RPNConfig, RPNHead
from convzoo.registry import ModelCard, Paper, Reported, check_overrides, register_model

__all__ = [
    "DetectorSpec",
    "FastRCNN",
    "FasterRCNN",
    "MaskRCNN",
    "TwoStageDetector",
    "build_detector",
    "build_roi_heads",
    "build_rpn",
    "detector_builder",
]

Detections = list[dict[str, torch.Tensor]]


class TwoStageDetector(nn.Module):
    """Backbone, optional neck, optional RPN and RoI heads, run in that order.

    Args:
        backbone: Images -> feature maps (with ``channels`` and ``strides`` attributes).
        roi_heads: Per-region box (and mask) prediction.
        num_classes: Classes including the background (class 0).
        neck: Feature maps -> feature maps, e.g. a `FeaturePyramid`; None passes the backbone's on.
        rpn: Proposals from the features; None for a detector that takes external proposals.
        model_name: Name used in error messages.

    Attributes:
        needs: The data set extras its training targets come from (see `convzoo.detection.task.DetectionTask`).
    """

    needs: ClassVar[tuple[str, ...]] = ("boxes", "box_labels")

    def __init__(
        self,
        backbone: nn.Module,
        roi_heads: RoIHeads,
        *,
        num_classes: int,
        neck: nn.Module | None = None,
        rpn: RegionProposalNetwork | None = None,
        model_name: str = "detector",
    ) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(
                f"{model_name}: num_classes counts the background and must be at least 2; got {num_classes}"
            )
        self.backbone = backbone
        self.neck = neck
        self.rpn = rpn
        self.roi_heads = roi_heads
        self.num_classes = num_classes
        self.model_name = model_name

    def forward(
        self,
        images: torch.Tensor,
        targets: Sequence[dict[str, torch.Tensor]] | None = None,
        proposals: Sequence[torch.Tensor] | None = None,
    ) -> dict[str, torch.Tensor] | Detections:
        """Losses (training mode, ``targets`` required) or per-image detections (evaluation mode).

        Args:
            images: (N, C, H, W) normalised images of one size.
            targets: Per image ``boxes`` (M, 4) x0, y0, x1, y1 in pixels, ``labels`` (M,) in 1..num_classes-1 (and
                ``masks`` (M, H, W) for Mask R-CNN); M may be 0.
            proposals: Per image (P, 4) candidate boxes, for a detector without an RPN.
        """
        if self.training:
            if targets is None:
                raise ValueError(f"{self.model_name} needs targets in training mode (or call model.eval() first)")
            return self.run(images, targets, proposals, detect=False)[1]
        return self.run(images, None, proposals)[0]

    def run(
        self,
        images: torch.Tensor,
        targets: Sequence[dict[str, torch.Tensor]] | None,
        proposals: Sequence[torch.Tensor] | None = None,
        *,
        detect: bool = True,
    ) -> tuple[Detections, dict[str, torch.Tensor]]:
        """Detections and losses from one backbone pass, in whatever mode the modules are.

        In evaluation mode with ``targets`` this gives the test losses alongside the detections: the batch norms use
        their running statistics and the RPN its evaluation proposal counts, as when detecting.
        """
        if not isinstance(images, torch.Tensor) or images.dim() != 4:
            raise ValueError(f"{self.model_name} expects an (N, C, H, W) image tensor; got {_shape(images)}")
        size = tuple(images.shape[-2:])
        if targets is not None:
            if len(targets) != images.shape[0]:
                raise ValueError(f"{self.model_name}: {images.shape[0]} images but {len(targets)} targets")
            targets = check_targets(
                targets,
                num_classes=self.num_classes,
                image_size=size,
                masks=self.roi_heads.has_masks,
                name=self.model_name,
            )
        proposals = self._check_proposals(images, proposals)
        features = self.backbone(images)
        if self.neck is not None:
            features = self.neck(features)
        losses: dict[str, torch.Tensor] = {}
        if self.rpn is not None:
            proposals, losses = self.rpn(size, features, targets)
        assert proposals is not None
        n_roi = len(self.roi_heads.pooler.strides)
        detections, roi_losses = self.roi_heads(features[:n_roi], proposals, size, targets, detect=detect)
        return detections, {**losses, **roi_losses}

    def _check_proposals(
        self, images: torch.Tensor, proposals: Sequence[torch.Tensor] | None
    ) -> list[torch.Tensor] | None:
        if self.rpn is not None:
            if proposals is not None:
                raise ValueError(f"{self.model_name} makes its own proposals with its RPN; pass none")
            return None
        if proposals is None:
            raise ValueError(
                f"{self.model_name} has no RPN and needs proposals: a list of (P, 4) boxes per image, e.g. from "
                "convzoo.detection.selective_search"
            )
        if len(proposals) != images.shape[0] or any(p.dim() != 2 or p.shape[-1] != 4 for p in proposals):
            raise ValueError(
                f"{self.model_name}: proposals must be one (P, 4) tensor per image ({images.shape[0]}); got "
                f"{[tuple(p.shape) for p in proposals]}"
            )
        return [p.to(images.device) for p in proposals]


def _shape(x: Any) -> str:
    return str(tuple(x.shape)) if isinstance(x, torch.Tensor) else type(x).__name__


class FastRCNN(TwoStageDetector):
    """Fast R-CNN (Girshick 2015): one backbone pass per image, RoI max pooling of external proposals, and the
    jointly trained classification and box regression head. ``forward(images, targets, proposals)``."""

    needs = ("boxes", "box_labels", "proposals")


class FasterRCNN(TwoStageDetector):
    """Faster R-CNN (Ren et al. 2015): a region proposal network shares the backbone with the Fast R-CNN head and
    both train end to end with the sum of their losses; with a `FeaturePyramid` neck, Lin et al.'s FPN detector."""


class MaskRCNN(FasterRCNN):
    """Mask R-CNN (He et al. 2017): Faster R-CNN with RoIAlign and a mask head; detections carry ``masks``."""

    needs = ("boxes", "box_labels", "instance_masks")


def build_rpn(channels: int, anchors: AnchorConfig, cfg: RPNConfig) -> RegionProposalNetwork:
    """An RPN over maps of ``channels`` channels with ``anchors`` (one anchor count for every level)."""
    generator = AnchorGenerator(anchors)
    counts = set(generator.num_anchors())
    if len(counts) != 1:
        raise ValueError(f"the RPN head is shared by the levels and needs as many anchors on each; got {counts}")
    return RegionProposalNetwork(generator, RPNHead(channels, counts.pop()), cfg)


def build_roi_heads(
    channels: int,
    strides: Sequence[int],
    num_classes: int,
    cfg: RoIHeadConfig,
    mask: MaskHeadConfig | None = None,
) -> RoIHeads:
    """RoI heads reading maps of ``channels`` channels at ``strides`` (several: a pyramid's RoI levels)."""
    pool_args = {"canonical_size": cfg.canonical_size, "canonical_stride": cfg.canonical_stride}
    pooler = RoIPooler(strides, cfg.output_size, kind=cfg.pooling, sampling_ratio=cfg.sampling_ratio, **pool_args)
    box_head = TwoMLPHead(channels * cfg.output_size**2, cfg.representation_size)
    predictor = FastRCNNPredictor(cfg.representation_size, num_classes)
    mask_pooler = mask_head = None
    if mask is not None:
        mask_pooler = RoIPooler(
            strides, mask.output_size, kind="align", sampling_ratio=mask.sampling_ratio, **pool_args
        )
        mask_head = MaskHead(channels, num_classes, mask)
    return RoIHeads(pooler, box_head, predictor, cfg, mask_pooler=mask_pooler, mask_head=mask_head)


def build_detector(
    kind: type[TwoStageDetector],
    *,
    num_classes: int,
    in_chans: int,
    model_name: str,
    backbone: BackboneConfig,
    roi_heads: RoIHeadConfig,
    anchors: AnchorConfig | None = None,
    rpn: RPNConfig | None = None,
    fpn: FPNConfig | None = None,
    mask_head: MaskHeadConfig | None = None,
) -> TwoStageDetector:
    """Assemble a detector of class ``kind`` from its parts' configurations.

    Without ``rpn`` the detector takes external proposals; with ``fpn`` a feature pyramid sits on the backbone's
    maps, the RPN reads every level and the RoI heads the levels that are not extra.
    """
    body = Backbone(backbone, in_chans=in_chans)
    neck = None
    channels, strides = body.channels, body.strides
    roi_strides = strides
    if fpn is not None:
        neck = FeaturePyramid(channels, strides, fpn)
        channels, strides = neck.channels, neck.strides
        roi_strides = strides[: len(strides) - fpn.extra_levels]
    elif len(channels) != 1:
        raise ValueError(f"{model_name}: {len(channels)} backbone maps need a neck (fpn=...); take one map or add it")
    proposer = None
    if rpn is not None:
        anchors = anchors or AnchorConfig()
        if anchors.levels != len(strides):
            raise ValueError(
                f"{model_name}: the anchors are configured for {anchors.levels} levels but the features have "
                f"{len(strides)} (strides {strides}); give one tuple of sizes per level"
            )
        proposer = build_rpn(channels[0], anchors, rpn)
    heads = build_roi_heads(channels[0], roi_strides, num_classes, roi_heads, mask_head)
    return kind(body, heads, num_classes=num_classes, neck=neck, rpn=proposer, model_name=model_name)


def as_config(value: Any, default: Any, key: str, model_name: str) -> Any:
    """A configuration dataclass from ``value``: an instance, a dict of changes to ``default``, or None."""
    if value is None or dataclasses.is_dataclass(value):
        return value
    if isinstance(value, str) and dataclasses.is_dataclass(default) and key == "backbone":
        return dataclasses.replace(default, name=value)
    if isinstance(value, dict):
        fields = {f.name for f in dataclasses.fields(default)}
        unknown = sorted(set(value) - fields)
        if unknown:
            raise TypeError(f"{model_name}: {key} has no settings {unknown}; its settings: {sorted(fields)}")
        return dataclasses.replace(default, **{k: _tuples(v) for k, v in value.items()})
    raise TypeError(f"{model_name}: {key} must be a {type(default).__name__}, a dict of its settings or None")


def _tuples(value: Any) -> Any:
    return tuple(_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


# -- registration --------------------------------------------------------------------------------------------------

SCENES_MEAN = (0.2440, 0.2380, 0.2358)
SCENES_STD = (0.1858, 0.1683, 0.1768)
"""Pixel statistics of the 64-pixel scenes' training set, which the training engine normalises with."""

_FAST_RCNN = Paper("Ross Girshick", "Fast R-CNN", 2015, "ICCV", "https://arxiv.org/abs/1504.08083")
_FASTER_RCNN = Paper(
    "Shaoqing Ren, Kaiming He, Ross Girshick, Jian Sun",
    "Faster R-CNN: Towards Real-Time Object Detection with Region Proposal Networks",
    2015,
    "NeurIPS",
    "https://arxiv.org/abs/1506.01497",
)
_FPN = Paper(
    "Tsung-Yi Lin, Piotr Dollar, Ross Girshick, Kaiming He, Bharath Hariharan, Serge Belongie",
    "Feature Pyramid Networks for Object Detection",
    2017,
    "CVPR",
    "https://arxiv.org/abs/1612.03144",
)
_MASK_RCNN = Paper(
    "Kaiming He, Georgia Gkioxari, Piotr Dollar, Ross Girshick",
    "Mask R-CNN",
    2017,
    "ICCV",
    "https://arxiv.org/abs/1703.06870",
)


@dataclasses.dataclass(frozen=True)
class DetectorSpec:
    """A registered detector: its class and the default configuration of each part (None: no such part)."""

    kind: type[TwoStageDetector]
    backbone: BackboneConfig
    roi_heads: RoIHeadConfig
    anchors: AnchorConfig | None = None
    rpn: RPNConfig | None = None
    fpn: FPNConfig | None = None
    mask_head: MaskHeadConfig | None = None


_PART_DEFAULTS = {
    "backbone": BackboneConfig(),
    "roi_heads": RoIHeadConfig(),
    "anchors": AnchorConfig(),
    "rpn": RPNConfig(),
    "fpn": FPNConfig(),
    "mask_head": MaskHeadConfig(),
}


def detector_builder(name: str, spec: DetectorSpec) -> Any:
    """The registry builder of ``spec``: parts are overridden by instances, dicts of settings or None.

    ``backbone`` also takes a registered classifier's name; ``backbone_weights`` and ``backbone_indices`` set the
    backbone's weights and tap points. Parts a detector cannot have (an RPN of Fast R-CNN) are not accepted.
    """
    parts = [f.name for f in dataclasses.fields(spec) if f.name != "kind"]
    optional = {"fpn"} | ({"anchors", "rpn"} if spec.rpn is not None else set())
    accepted = [p for p in parts if getattr(spec, p) is not None or p in optional]
    accepted += ["backbone_weights", "backbone_indices"]

    def build(*, num_classes: int, in_chans: int, **overrides: Any) -> TwoStageDetector:
        check_overrides(name, overrides, accepted)
        weights = overrides.pop("backbone_weights", None)
        indices = overrides.pop("backbone_indices", None)
        cfg = {p: getattr(spec, p) for p in parts}
        for key, value in overrides.items():
            cfg[key] = as_config(value, cfg[key] or _PART_DEFAULTS[key], key, name)
        if weights is not None:
            cfg["backbone"] = dataclasses.replace(cfg["backbone"], weights=weights)
        if indices is not None:
            indices = (indices,) if isinstance(indices, int) else tuple(indices)
            cfg["backbone"] = dataclasses.replace(cfg["backbone"], out_indices=indices)
        if cfg["fpn"] is not None and "anchors" in cfg and "anchors" not in overrides and cfg["anchors"] is not None:
            cfg["anchors"] = _pyramid_anchors(
                cfg["anchors"], len(cfg["backbone"].out_indices) + cfg["fpn"].extra_levels
            )
        return build_detector(spec.kind, num_classes=num_classes, in_chans=in_chans, model_name=name, **cfg)

    return build


def _pyramid_anchors(anchors: AnchorConfig, levels: int) -> AnchorConfig:
    """One size per pyramid level (Lin et al.): a single level's sizes spread over the levels when they fit."""
    if anchors.levels == levels:
        return anchors
    sizes = anchors.sizes[0]
    if anchors.levels == 1 and len(sizes) == levels:
        return dataclasses.replace(anchors, sizes=tuple((s,) for s in sizes))
    return anchors


_PYRAMID_BACKBONE = BackboneConfig(out_indices=(-2, -1))
_SPECS = {
    "fast_rcnn": (
        DetectorSpec(FastRCNN, BackboneConfig(), RoIHeadConfig(pooling="pool", bg_iou=(0.1, 0.5))),
        _FAST_RCNN,
        Reported("PASCAL VOC 2007 test", "mAP", 66.9, "Table 1", "VGG-16, selective search, trained on VOC 2007"),
        "RoI max pooling of external proposals (selective search), two FC layers, joint classification and box "
        "regression; background RoIs with IoU in [0.1, 0.5).",
    ),
    "faster_rcnn": (
        DetectorSpec(FasterRCNN, BackboneConfig(), RoIHeadConfig(pooling="pool"), AnchorConfig(), RPNConfig()),
        _FASTER_RCNN,
        Reported("PASCAL VOC 2007 test", "mAP", 69.9, "Table 3", "VGG-16, 300 RPN proposals, trained on VOC 2007"),
        "RPN (3 scales x 3 ratios) and Fast R-CNN head (RoI max pooling) on one backbone map, trained jointly "
        "(roi_heads={'pooling': 'align'} for RoIAlign).",
    ),
    "faster_rcnn_fpn": (
        DetectorSpec(
            FasterRCNN,
            _PYRAMID_BACKBONE,
            RoIHeadConfig(pooling="pool"),
            AnchorConfig(sizes=((8.0,), (16.0,), (32.0,))),
            RPNConfig(),
            FPNConfig(),
        ),
        _FPN,
        Reported("COCO test-dev", "AP", 36.2, "Table 4", "ResNet-101-FPN Faster R-CNN"),
        "Faster R-CNN on a feature pyramid: one anchor size per level (3 ratios), RoIs pooled from the level "
        "their size selects.",
    ),
    "mask_rcnn": (
        DetectorSpec(
            MaskRCNN,
            BackboneConfig(),
            RoIHeadConfig(sampling_ratio=1),
            AnchorConfig(),
            RPNConfig(),
            mask_head=MaskHeadConfig(sampling_ratio=1),
        ),
        _MASK_RCNN,
        Reported("COCO test-dev", "mask AP", 35.7, "Table 1", "ResNet-101-FPN"),
        "Faster R-CNN with RoIAlign (one bilinear sample per bin: the paper finds the number of samples does not "
        "matter) and a small FCN mask head (14x14 RoIAlign, 28x28 masks, one per class); fpn={} adds a pyramid.",
    ),
}

for _name, (_spec, _paper, _reported, _notes) in _SPECS.items():
    register_model(
        ModelCard(
            name=_name,
            family="rcnn",
            paper=_paper,
            input_size=(3, 64, 64),
            num_classes=7,
            mean=SCENES_MEAN,
            std=SCENES_STD,
            reported=(_reported,),
            notes=_notes,
            task="detection",
        ),
        detector_builder(_name, _spec),
    )
