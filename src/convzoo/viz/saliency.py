"""Which pixels a prediction rests on: vanilla gradients, SmoothGrad and Grad-CAM, computed with captum.

- ``"gradient"``: the largest absolute gradient of the class score over the colour channels of each pixel
  (Simonyan, Vedaldi and Zisserman 2014).
- ``"smoothgrad"``: the same, averaged over copies of the image with Gaussian noise added (Smilkov et al. 2017), which
  removes much of the gradient's pixel-to-pixel noise.
- ``"gradcam"``: a layer's feature maps weighted by the spatially averaged gradient of the class score, summed,
  passed through a ReLU and upsampled to the image (Selvaraju et al. 2017): coarse, but class-discriminative.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn

from convzoo.models.base import main_logits
from convzoo.viz._load import Network
from convzoo.viz.maximize import as_network, evaluating, resolve_layer

__all__ = ["METHODS", "Attribution", "attribute", "default_layer", "overlay"]

METHODS = ("gradient", "smoothgrad", "gradcam")


@dataclass
class Attribution:
    """One image's attribution map.

    Attributes:
        map: float32 (H, W) in [0, 1], at the network's input size.
        image: The image as the network saw it (resized, its channels converted), uint8 (H, W, C).
        target: The class explained.
        predicted: The class the network predicts.
        probability: The network's probability of ``target``.
        method: ``"gradient"``, ``"smoothgrad"`` or ``"gradcam"``.
        layer: The layer Grad-CAM looked at (None for the other methods).
    """

    map: np.ndarray
    image: np.ndarray
    target: int
    predicted: int
    probability: float
    method: str
    layer: str | None = None

    def overlay(self, alpha: float = 0.5, cmap: str = "jet") -> np.ndarray:
        """The map as a heat map blended on the image, uint8 (H, W, 3)."""
        return overlay(self.image, self.map, alpha=alpha, cmap=cmap)


def overlay(image: np.ndarray, heat: np.ndarray, *, alpha: float = 0.5, cmap: str = "jet") -> np.ndarray:
    """A heat map in [0, 1] (H, W), coloured with a matplotlib colour map, blended on an image (H, W, C) uint8.

    Args:
        image: uint8 (H, W, 1) or (H, W, 3).
        heat: Values in [0, 1] of the same height and width.
        alpha: Weight of the heat map (0: the image alone, 1: the heat map alone).
        cmap: Name of a matplotlib colour map.

    Returns:
        uint8 (H, W, 3).
    """
    import matplotlib

    if image.shape[:2] != heat.shape:
        raise ValueError(f"image {image.shape[:2]} and heat map {heat.shape} differ in size")
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha must lie in [0, 1]; got {alpha}")
    colours = matplotlib.colormaps[cmap](np.clip(heat, 0, 1))[..., :3]
    base = image.astype(np.float32) / 255
    if base.shape[-1] == 1:
        base = np.repeat(base, 3, axis=-1)
    blended = (1 - alpha) * base + alpha * colours
    return (blended * 255).round().clip(0, 255).astype(np.uint8)


def default_layer(model: nn.Module) -> str:
    """Grad-CAM's default layer: the last tap point of ``feature_info`` (the output of the trunk), else the last
    convolution of a module without one."""
    if info := getattr(model, "feature_info", None):
        return info[-1].module
    convs = [name for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError(f"{type(model).__name__} has no feature_info and no convolution; give a layer for Grad-CAM")
    return convs[-1]


def _normalise(maps: torch.Tensor) -> torch.Tensor:
    """Each map (N, H, W) stretched to [0, 1]; a constant map becomes zeros."""
    low = maps.flatten(1).amin(1).view(-1, 1, 1)
    span = maps.flatten(1).amax(1).view(-1, 1, 1) - low
    return torch.where(span > 0, (maps - low) / span.clamp(min=1e-12), torch.zeros_like(maps))


def attribute(
    network: Network | nn.Module,
    images: torch.Tensor,
    *,
    method: str = "gradient",
    target: int | Sequence[int] | None = None,
    layer: str | None = None,
    samples: int = 25,
    noise: float = 0.15,
    seed: int = 0,
    image_size: int | None = None,
) -> list[Attribution]:
    """Attribution maps of images for a class: the predicted one, or ``target``.

    The network runs on its own device in eval mode, its parameters frozen (both restored after); only the input
    is differentiated.

    Args:
        network: A `Network` (see `convzoo.viz._load.load_network`) or a module reading images in [0, 1].
        images: uint8 (N, C, H, W) or (C, H, W), e.g. from `convzoo.viz._load.read_image`; resized and converted to
            the network's input.
        method: ``"gradient"``, ``"smoothgrad"`` or ``"gradcam"``.
        target: The class to explain, for every image or one per image (None: the predicted class).
        layer: Grad-CAM's layer, a name from ``model.named_modules()`` (None: `default_layer`).
        samples: SmoothGrad's noisy copies per image.
        noise: SmoothGrad's noise standard deviation, as a fraction of the input's range.
        seed: Seed of SmoothGrad's noise.
        image_size: For a bare module: its input side (default 32).

    Returns:
        One `Attribution` per image.

    Raises:
        KeyError: An unknown layer (the message lists valid names).
        ValueError: An unknown method, a target out of range, or a layer without a spatial map.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}; got {method!r}")
    if samples < 1 or noise < 0:
        raise ValueError(f"samples must be positive and noise 0 or more; got {samples} and {noise}")
    network = as_network(network, image_size=image_size)
    model = network.model
    if images.dim() == 3:
        images = images.unsqueeze(0)
    x = network.normalize(images)
    with evaluating(model):
        with torch.no_grad():
            probabilities = main_logits(model(x)).float().softmax(1)
        predicted = probabilities.argmax(1).tolist()
        targets = _targets(target, predicted, probabilities.shape[1])
        if method == "gradcam":
            layer = layer or default_layer(model)
            maps = _gradcam(model, x, targets, layer)
        else:
            layer = None
            maps = _gradients(
                model, x, targets, samples=samples if method == "smoothgrad" else 0, noise=noise, seed=seed
            )
    maps = _normalise(maps.detach().float()).cpu().numpy()
    shown = (network.denormalize(x) * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()
    return [
        Attribution(maps[i], shown[i], targets[i], predicted[i], float(probabilities[i, targets[i]]), method, layer)
        for i in range(len(maps))
    ]


def _gradcam(model: nn.Module, x: torch.Tensor, targets: list[int], layer: str) -> torch.Tensor:
    """Grad-CAM maps (N, H, W) of ``layer``, upsampled to the input."""
    from captum.attr import LayerAttribution, LayerGradCam

    module = resolve_layer(model, layer)
    cam = LayerGradCam(lambda inputs: main_logits(model(inputs)), module).attribute(
        x.clone().requires_grad_(True), target=targets, relu_attributions=True
    )
    if cam.dim() != 4:
        raise ValueError(f"layer {layer!r} has no spatial map (Grad-CAM gave shape {tuple(cam.shape)})")
    return LayerAttribution.interpolate(cam, tuple(x.shape[-2:]), interpolate_mode="bilinear")[:, 0]


def _gradients(
    model: nn.Module, x: torch.Tensor, targets: list[int], *, samples: int, noise: float, seed: int
) -> torch.Tensor:
    """The largest absolute input gradient over the channels (N, H, W); averaged over ``samples`` noisy copies of
    the input when ``samples`` is above 0 (SmoothGrad)."""
    from captum.attr import NoiseTunnel, Saliency

    saliency = Saliency(lambda inputs: main_logits(model(inputs)))
    inputs = x.clone().requires_grad_(True)
    if not samples:
        return saliency.attribute(inputs, target=targets, abs=True).amax(1)
    spread = float(noise * (x.amax() - x.amin()))
    devices = [x.device] if x.device.type == "cuda" else []
    # captum draws the noise from the global generator: seed a forked copy so the caller's stream is left as it
    # was and the map is reproducible.
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        grads = NoiseTunnel(saliency).attribute(
            inputs,
            nt_type="smoothgrad",
            nt_samples=samples,
            nt_samples_batch_size=min(samples, 32),
            stdevs=spread,
            target=targets,
            abs=True,
        )
    return grads.amax(1)


def _targets(target: int | Sequence[int] | None, predicted: list[int], num_classes: int) -> list[int]:
    if target is None:
        return predicted
    targets = [int(target)] * len(predicted) if isinstance(target, int) else [int(t) for t in target]
    if len(targets) != len(predicted):
        raise ValueError(f"got {len(targets)} targets for {len(predicted)} images")
    if bad := [t for t in targets if not 0 <= t < num_classes]:
        raise ValueError(f"target class {bad[0]} is out of range: the network has {num_classes} classes")
    return targets
