"""Activation maximisation: the image that most excites a unit, a channel, a layer or a class.

Gradient ascent on the input from a grey or faintly noisy start, with the regularisers of Olah, Mordvintsev and
Schubert, "Feature Visualization" (Distill, 2017), without which the ascent finds high-frequency patterns that
excite the network but mean nothing to a reader:

- transformation robustness: every step sees the image jittered, rescaled and rotated a little, so a pattern only
  helps if it works wherever it lands;
- a preconditioned parameterisation: the image is held as a Fourier spectrum scaled by 1/frequency (so that every
  frequency is learned at a similar rate, instead of the high ones first) in a decorrelated colour space;
- optional penalties on total variation and on the distance from grey (off by default: the Fourier
  parameterisation already keeps the image smooth; the pixel one gains most from them).
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from convzoo.models.base import main_logits
from convzoo.pretrained.entries import Preprocessing
from convzoo.viz._load import Network

__all__ = [
    "MaximizeConfig",
    "Maximized",
    "Objective",
    "as_network",
    "evaluate_objective",
    "evaluating",
    "maximize",
    "resolve_layer",
]

KINDS = ("unit", "channel", "layer", "class")
PARAMETERISATIONS = ("fourier", "pixel")

# Square roots of the RGB covariance of ImageNet pixels, from its principal components (the eigenvalues and vectors
# of AlexNet's colour augmentation, Krizhevsky et al. 2012): optimising in this basis lets the ascent move along the
# colour directions natural images vary in, instead of creating saturated colour noise.
_EIGVALS = (0.2175, 0.0188, 0.0045)
_EIGVECS = ((-0.5675, 0.7192, 0.4009), (-0.5808, -0.0045, -0.8140), (-0.5836, -0.6948, 0.4203))


@dataclass(frozen=True)
class Objective:
    """What to maximise. Build one with `Objective.unit`, `channel_mean`, `whole_layer` or `logit`.

    Attributes:
        kind: ``"unit"`` (one channel at one position), ``"channel"`` (mean of a channel), ``"layer"`` (mean of the
            squared activations of a whole layer, as in "deep dream") or ``"class"`` (a class logit).
        layer: Qualified module name (see ``model.named_modules()``), for all kinds but ``"class"``.
        channel: Channel index, for ``"unit"`` and ``"channel"``.
        position: (row, column) in the layer's map, for ``"unit"``; None: the centre.
        target: Class index, for ``"class"``.
    """

    kind: str
    layer: str | None = None
    channel: int | None = None
    position: tuple[int, int] | None = None
    target: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"objective kind must be one of {KINDS}; got {self.kind!r}")
        if (self.kind == "class") != (self.layer is None):
            raise ValueError("a class objective takes a target and no layer; the others take a layer")
        if self.kind in ("unit", "channel") and (self.channel is None or self.channel < 0):
            raise ValueError(f"a {self.kind} objective needs a channel index (0 or more); got {self.channel}")
        if self.kind == "class" and (self.target is None or self.target < 0):
            raise ValueError(f"a class objective needs a class index (0 or more); got {self.target}")

    @classmethod
    def unit(cls, layer: str, channel: int, position: tuple[int, int] | None = None) -> Objective:
        return cls("unit", layer=layer, channel=channel, position=position)

    @classmethod
    def channel_mean(cls, layer: str, channel: int) -> Objective:
        return cls("channel", layer=layer, channel=channel)

    @classmethod
    def whole_layer(cls, layer: str) -> Objective:
        return cls("layer", layer=layer)

    @classmethod
    def logit(cls, target: int) -> Objective:
        return cls("class", target=target)

    def describe(self) -> str:
        """A short name, used in file names and titles: ``layer3.c5``, ``layer3.c5@4,4``, ``layer3``, ``class3``."""
        if self.kind == "class":
            return f"class{self.target}"
        if self.kind == "layer":
            return str(self.layer)
        at = f"@{self.position[0]},{self.position[1]}" if self.position else ("@centre" if self.kind == "unit" else "")
        return f"{self.layer}.c{self.channel}{at}"


@dataclass
class MaximizeConfig:
    """Settings of `maximize`.

    Attributes:
        steps: Gradient-ascent steps.
        lr: Adam's learning rate on the image parameters.
        seed: Seed of the starting image and of the random transforms.
        image_size: Side of the square image (None: the network's input size).
        param: ``"fourier"`` (a 1/frequency-scaled spectrum) or ``"pixel"`` (one value per pixel).
        decorrelate: Optimise in a decorrelated colour space (colour networks only).
        init: ``"noise"`` (faint noise around grey) or ``"blank"`` (uniform grey).
        jitter: Largest random shift per step, in pixels (None: a sixteenth of the image side, at least 1).
        scales: Scale factors one is drawn from at every step.
        rotate: Largest random rotation per step, in degrees.
        tv_weight: Weight of the total-variation penalty (mean absolute difference of neighbouring pixels in
            [0, 1]); 0 disables it.
        l2_weight: Weight of the penalty on the mean squared distance of the pixels from grey (0.5); 0 disables it.
    """

    steps: int = 256
    lr: float = 0.05
    seed: int = 0
    image_size: int | None = None
    param: str = "fourier"
    decorrelate: bool = True
    init: str = "noise"
    jitter: int | None = None
    scales: tuple[float, ...] = (0.95, 0.975, 1.0, 1.025, 1.05)
    rotate: float = 5.0
    tv_weight: float = 0.0
    l2_weight: float = 0.0

    def __post_init__(self) -> None:
        if self.param not in PARAMETERISATIONS:
            raise ValueError(f"param must be one of {PARAMETERISATIONS}; got {self.param!r}")
        if self.init not in ("noise", "blank"):
            raise ValueError(f"init must be 'noise' or 'blank'; got {self.init!r}")
        if self.steps < 1 or self.lr <= 0:
            raise ValueError(f"steps must be positive and lr above 0; got {self.steps} and {self.lr}")
        if self.tv_weight < 0 or self.l2_weight < 0 or self.rotate < 0 or (self.jitter or 0) < 0:
            raise ValueError("tv_weight, l2_weight, rotate and jitter must be 0 or more")
        if not self.scales or min(self.scales) <= 0:
            raise ValueError(f"scales must be positive numbers; got {self.scales}")


@dataclass
class Maximized:
    """What `maximize` found.

    Attributes:
        image: The image, float32 (H, W, C) in [0, 1].
        curve: The objective at every step (on that step's transformed image, before the penalties).
        start: The objective on the starting image, untransformed.
        value: The objective on the final image, untransformed.
        objective: What was maximised.
    """

    image: np.ndarray
    curve: np.ndarray
    start: float
    value: float
    objective: Objective

    def uint8(self) -> np.ndarray:
        """The image as uint8 (H, W, C)."""
        return (self.image * 255).round().clip(0, 255).astype(np.uint8)


def as_network(model: nn.Module | Network, *, image_size: int | None = None, in_chans: int | None = None) -> Network:
    """``model`` as a `Network`; a bare module is taken to read images in [0, 1] unnormalised.

    Args:
        model: A `Network` (returned as it is) or a module.
        image_size: The module's input side (None: 32).
        in_chans: Its input channels (None: those of its first convolution, else 3).
    """
    if isinstance(model, Network):
        return model
    if in_chans is None:
        first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
        in_chans = first.in_channels if first is not None else 3
    image_size = image_size or 32
    num_classes = getattr(model, "num_classes", 0)
    preprocessing = Preprocessing(
        crop_size=image_size, mean=(0.0,) * in_chans, std=(1.0,) * in_chans, channels=in_chans
    )
    name = getattr(model, "model_name", type(model).__name__)
    return Network(model, name, name, [str(i) for i in range(num_classes)], preprocessing)


def resolve_layer(model: nn.Module, name: str) -> nn.Module:
    """The module ``name`` of ``model``.

    Raises:
        KeyError: No such module; the message lists the close matches and the names to choose from.
    """
    modules = dict(model.named_modules())
    modules.pop("", None)
    if name in modules:
        return modules[name]
    # A bare name inside a block (c3 for features.c3) is the commonest slip; difflib alone would miss it.
    inside = [n for n in modules if n.endswith("." + name)]
    close = list(dict.fromkeys(inside + difflib.get_close_matches(name, list(modules), n=5)))[:5]
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    if len(modules) <= 40:
        choices = f"valid names: {', '.join(modules)}"
    else:
        taps = [f.module for f in getattr(model, "feature_info", [])]
        top = [n for n, _ in model.named_children()]
        choices = (f"tap points: {', '.join(taps)}; " if taps else "") + (
            f"top-level modules: {', '.join(top)} (and the {len(modules)} names of model.named_modules())"
        )
    raise KeyError(f"no layer named {name!r}{hint}; {choices}")


def model_device(model: nn.Module) -> torch.device:
    return next((p.device for p in model.parameters()), torch.device("cpu"))


class _Reached(Exception):
    """Raised by the hook once the layer's output is captured: the rest of the forward pass is not needed."""


class _Reader:
    """Runs the network on an input in [0, 1] and returns the objective's value (a scalar tensor)."""

    def __init__(self, network: Network, objective: Objective) -> None:
        self.network, self.objective = network, objective
        self.module = resolve_layer(network.model, objective.layer) if objective.layer is not None else None
        device = model_device(network.model)
        p = network.preprocessing
        self.mean = torch.tensor(p.mean, device=device).view(1, -1, 1, 1)
        self.std = torch.tensor(p.std, device=device).view(1, -1, 1, 1)

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        x = (image - self.mean) / self.std
        if self.module is None:
            logits = main_logits(self.network.model(x))
            return self._class_value(logits)
        captured: list[torch.Tensor] = []

        def hook(_module: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
            # A module called twice in one pass (a shared activation) is read at its first call.
            captured.append(output)
            raise _Reached

        handle = self.module.register_forward_hook(hook)
        try:
            self.network.model(x)
        except _Reached:
            pass
        finally:
            handle.remove()
        return self._layer_value(captured[0])

    def _class_value(self, logits: torch.Tensor) -> torch.Tensor:
        target = self.objective.target
        if target >= logits.shape[1]:
            raise ValueError(f"class {target} is out of range: the network has {logits.shape[1]} classes")
        return logits[0, target]

    def _layer_value(self, out: torch.Tensor) -> torch.Tensor:
        if not isinstance(out, torch.Tensor):
            raise ValueError(f"layer {self.objective.layer!r} does not output a tensor; pick another layer")
        kind, channel = self.objective.kind, self.objective.channel
        if kind == "layer":
            return out.pow(2).mean()
        if channel >= out.shape[1]:
            raise ValueError(
                f"channel {channel} is out of range: layer {self.objective.layer!r} has {out.shape[1]} channels"
            )
        if kind == "channel":
            return out[0, channel].mean()
        if out.dim() != 4:
            raise ValueError(f"layer {self.objective.layer!r} outputs shape {tuple(out.shape)}: it has no positions")
        h, w = out.shape[-2:]
        row, col = self.objective.position or (h // 2, w // 2)
        if not (0 <= row < h and 0 <= col < w):
            raise ValueError(f"position ({row}, {col}) is outside the {h}x{w} map of {self.objective.layer!r}")
        return out[0, channel, row, col]


def _colour_matrix(channels: int, device: torch.device) -> torch.Tensor:
    if channels != 3:
        return torch.eye(channels, device=device)
    root = torch.tensor(_EIGVECS) * torch.tensor(_EIGVALS).sqrt()
    # Scaled so that the strongest direction (brightness) moves at the rate a plain pixel would.
    return (root / root.norm(dim=0).max()).to(device)


class _Image(nn.Module):
    """The parameterised image: a spectrum or pixels, in a decorrelated colour space, squashed into [0, 1]."""

    def __init__(
        self, config: MaximizeConfig, channels: int, size: int, device: torch.device, *, seed: int, noise: float
    ) -> None:
        super().__init__()
        self.size, self.fourier = size, config.param == "fourier"
        if self.fourier:
            fy = torch.fft.fftfreq(size).view(-1, 1)
            fx = torch.fft.rfftfreq(size).view(1, -1)
            # Natural images have power falling as 1/f^2; scaling the spectrum by 1/f makes a unit step on every
            # coefficient change the image about as much as the statistics of such images predict.
            scale = 1.0 / torch.sqrt(fx**2 + fy**2).clamp(min=1.0 / size)
            self.register_buffer("scale", scale.to(device))
            shape = (channels, size, size // 2 + 1, 2)
        else:
            shape = (channels, size, size)
        colour = _colour_matrix(channels, device) if config.decorrelate else torch.eye(channels, device=device)
        self.register_buffer("colour", colour)
        self.values = nn.Parameter(torch.randn(shape, generator=torch.Generator().manual_seed(seed)).to(device))
        with torch.no_grad():
            # The noise is set in image space (before the sigmoid), the same whatever the parameterisation.
            self.values.mul_(noise / self.logits().std())

    def logits(self) -> torch.Tensor:
        """The image before the sigmoid (C, H, W)."""
        if self.fourier:
            spectrum = torch.view_as_complex(self.values) * self.scale
            # The 1/4 keeps the first steps from saturating the sigmoid (the spectrum's DC term alone spans the range).
            t = torch.fft.irfft2(spectrum, s=(self.size, self.size), norm="ortho") / 4
        else:
            t = self.values
        return torch.einsum("ij,jhw->ihw", self.colour, t)

    def forward(self) -> torch.Tensor:
        return torch.sigmoid(self.logits()).unsqueeze(0)


def _random_view(image: torch.Tensor, config: MaximizeConfig, generator: torch.Generator, jitter: int) -> torch.Tensor:
    """``image`` shifted, rescaled and rotated at random, at the same size (borders filled by reflection)."""
    size = image.shape[-1]
    dx, dy = (torch.randint(-jitter, jitter + 1, (2,), generator=generator) * 2 / size).tolist()
    scale = config.scales[int(torch.randint(len(config.scales), (1,), generator=generator))]
    angle = math.radians((torch.rand((), generator=generator).item() * 2 - 1) * config.rotate)
    cos, sin = math.cos(angle) / scale, math.sin(angle) / scale
    theta = torch.tensor([[[cos, -sin, dx], [sin, cos, dy]]], dtype=image.dtype, device=image.device)
    grid = F.affine_grid(theta, list(image.shape), align_corners=False)
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def _total_variation(image: torch.Tensor) -> torch.Tensor:
    return (image[..., 1:, :] - image[..., :-1, :]).abs().mean() + (image[..., 1:] - image[..., :-1]).abs().mean()


def _noisy_start(
    config: MaximizeConfig, channels: int, size: int, device: torch.device, reader: _Reader, fallback: _Image
) -> _Image:
    """The most excited of eight strongly noisy starts (``fallback`` if none excites the objective at all)."""
    best, best_value = fallback, 0.0
    for k in range(1, 9):
        candidate = _Image(config, channels, size, device, seed=config.seed + 7919 * k, noise=1.0)
        with torch.no_grad():
            value = float(reader(candidate()))
        if value > best_value:
            best, best_value = candidate, value
    return best


def evaluate_objective(network: Network | nn.Module, objective: Objective, image: np.ndarray | torch.Tensor) -> float:
    """The objective's value on an image, float (H, W, C) in [0, 1] (as `Maximized.image`) or a tensor (1, C, H, W)."""
    network = as_network(network)
    device = model_device(network.model)
    x = torch.as_tensor(image, dtype=torch.float32)
    if x.dim() == 3:
        x = x.permute(2, 0, 1).unsqueeze(0)
    with torch.no_grad(), evaluating(network.model):
        return float(_Reader(network, objective)(x.to(device)))


@contextlib.contextmanager
def evaluating(model: nn.Module) -> Iterator[None]:
    """Eval mode and frozen parameters for the duration; both restored after."""
    training = model.training
    params = [p for p in model.parameters() if p.requires_grad]
    model.eval()
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        model.train(training)
        for p in params:
            p.requires_grad_(True)


def maximize(
    network: Network | nn.Module,
    objective: Objective,
    config: MaximizeConfig | None = None,
    *,
    callback: Callable[[int, float], None] | None = None,
    **settings: Any,
) -> Maximized:
    """Gradient ascent on an image to maximise ``objective``.

    The network runs on its own device in eval mode; its parameters get no gradient (they are frozen for the
    duration and restored after).

    Args:
        network: A `Network` (see `convzoo.viz._load.load_network`) or a module reading images in [0, 1].
        objective: What to maximise.
        config: The settings (default: `MaximizeConfig()`).
        callback: Called after every step with the step's index and objective value (e.g. a progress bar).
        **settings: Fields of `MaximizeConfig` replacing those of ``config``.

    Returns:
        The image, the objective curve and the objective's value before and after.

    Raises:
        KeyError: An unknown layer (the message lists valid names).
        ValueError: A channel, position or class out of range, or invalid settings.
        TypeError: An unknown setting.
    """
    fields = {f.name for f in dataclasses.fields(MaximizeConfig)}
    if unknown := sorted(set(settings) - fields):
        raise TypeError(f"maximize: unknown settings {unknown}; accepted: {sorted(fields)}")
    config = dataclasses.replace(config or MaximizeConfig(), **settings)
    network = as_network(network, image_size=config.image_size)
    reader = _Reader(network, objective)
    device = model_device(network.model)
    size = config.image_size or network.image_size
    jitter = config.jitter if config.jitter is not None else max(1, size // 16)
    noise = 0.01 if config.init == "noise" else 0.0
    image = _Image(config, network.in_chans, size, device, seed=config.seed, noise=noise)
    generator = torch.Generator().manual_seed(config.seed + 1)
    curve = []
    with evaluating(network.model):
        start = reader(image())
        if not torch.autograd.grad(start, [image.values])[0].any():
            # A unit silent (0 after a ReLU) on the start has no gradient to follow: start instead from the best
            # of a few noisy images.
            image = _noisy_start(config, network.in_chans, size, device, reader, image)
            start = reader(image())
        start = float(start.detach())
        optimizer = torch.optim.Adam(image.parameters(), lr=config.lr)
        for step in range(config.steps):
            current = image()
            value = reader(_random_view(current, config, generator, jitter))
            loss = -value
            if config.tv_weight:
                loss = loss + config.tv_weight * _total_variation(current)
            if config.l2_weight:
                loss = loss + config.l2_weight * (current - 0.5).pow(2).mean()
            # Only the image's parameters are differentiated: the network's own gradients stay untouched.
            (grad,) = torch.autograd.grad(loss, [image.values])
            image.values.grad = grad
            optimizer.step()
            curve.append(float(value.detach()))
            if callback is not None:
                callback(step, curve[-1])
        with torch.no_grad():
            final = image()
            value_end = float(reader(final))
    array = final[0].permute(1, 2, 0).float().cpu().numpy()
    return Maximized(array, np.asarray(curve), start, value_end, objective)
