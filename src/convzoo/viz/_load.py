"""The network a visualisation looks at, and images prepared the way it was trained to see them."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from convzoo.pretrained.entries import Preprocessing

__all__ = ["Network", "load_network", "read_image"]


@dataclass
class Network:
    """A network in evaluation mode, with what feeding it and naming its outputs needs.

    Attributes:
        model: The network (eval mode).
        label: What was loaded: a checkpoint's path, a weights entry's name or file, or ``"<model> (random weights)"``.
        arch: Its registered model name.
        classes: Class names in output order.
        preprocessing: Input size, channels, mean and standard deviation of its training data.
        trained: False for a registered model without weights, built with random weights.
    """

    model: nn.Module
    label: str
    arch: str
    classes: list[str]
    preprocessing: Preprocessing
    trained: bool = True

    @property
    def image_size(self) -> int:
        return self.preprocessing.crop_size

    @property
    def in_chans(self) -> int:
        return self.preprocessing.channels

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 images (N, C, H, W) as the network's input: resized to its input size, scaled and normalised, on
        the network's device."""
        from convzoo.data import convert_channels, resize_images

        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(f"expected uint8 images (N, C, H, W); got {images.dtype} of shape {tuple(images.shape)}")
        images = resize_images(convert_channels(images, self.in_chans), self.image_size)
        mean = torch.tensor(self.preprocessing.mean).view(1, -1, 1, 1)
        std = torch.tensor(self.preprocessing.std).view(1, -1, 1, 1)
        device = next(self.model.parameters()).device
        return ((images.float() / 255 - mean) / std).to(device)

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        """Network inputs back to images in [0, 1] (N, C, H, W) for display."""
        mean = torch.tensor(self.preprocessing.mean, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.preprocessing.std, device=x.device).view(1, -1, 1, 1)
        return (x * std + mean).clamp(0, 1)


def load_network(target: str | os.PathLike[str], *, weights: str | os.PathLike[str] | None = None) -> Network:
    """A training checkpoint (``best.pt``/``last.pt``), or a registered model: with ``weights`` (a registered name,
    a file or a URL), else its default registered weights, else random weights (with a warning).

    Raises:
        FileNotFoundError: A checkpoint or weights file that is not there.
        KeyError: An unknown model name (with close matches).
        WeightsError: Weights that cannot be read or do not fit.
    """
    from convzoo.factory import create_model
    from convzoo.inference import is_training_checkpoint, load_classifier
    from convzoo.pretrained import default_weights
    from convzoo.registry import get_model_card
    from convzoo.weights import WeightsDownloadError

    text = os.fspath(target)
    explicit = is_training_checkpoint(text) or weights is not None
    if explicit or default_weights(text) is not None:
        try:
            loaded = load_classifier(text, weights=weights)
        except WeightsDownloadError as e:
            if explicit:
                raise
            why = f"its default weights are not on this machine ({e})"
        else:
            arch = getattr(loaded.model, "model_name", text)
            return Network(loaded.model.eval(), loaded.source, arch, list(loaded.classes), loaded.preprocessing)
    else:
        why = "it has no registered weights"
    card = get_model_card(text)  # an unknown name raises KeyError with the closest names
    warnings.warn(
        f"{text}: {why}; looking at a randomly initialised network (give --weights or a training checkpoint to see a "
        "trained one)",
        stacklevel=2,
    )
    model = create_model(text).eval()
    classes = [str(i) for i in range(card.num_classes)]
    return Network(model, f"{text} (random weights)", text, classes, Preprocessing.for_card(card), trained=False)


def read_image(path: str | os.PathLike[str]) -> torch.Tensor:
    """An image file as uint8 (1, C, H, W), RGB or grey as stored.

    Raises:
        FileNotFoundError: No such file.
        ValueError: A file that is not a readable image (the message names it).
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such image: {path}")
    try:
        with Image.open(path) as image:
            image = image.convert("L" if image.mode in ("1", "L", "I;16", "I") else "RGB")
            data = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
            channels = 1 if image.mode == "L" else 3
            return data.view(image.height, image.width, channels).permute(2, 0, 1).unsqueeze(0).contiguous()
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"{path} is not a readable image: {e}") from e
