"""The input size of an analysis, in every form a user may give it: one parser for the library and the command.

Accepted forms: an int (a square image), (H, W), (C, H, W), torchinfo's batch-included (N, C, H, W), and the same
as text, ``"224"``, ``"32x32"``, ``"3x224x224"`` or ``"1x3x224x224"`` (commas work as separators too). Where the
channels are not given they are the model's ``in_chans``. Every figure of an analysis is per image, so a batch size
is accepted and dropped.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import torch.nn as nn

__all__ = ["INPUT_SIZE_FORMS", "model_in_chans", "parse_input_size"]

INPUT_SIZE_FORMS = "(C, H, W), (N, C, H, W), (H, W) or an int for a square image; as text CxHxW such as 3x224x224"


def model_in_chans(model: nn.Module) -> int | None:
    """The image channels ``model`` takes: its ``in_chans``, else its first convolution's input channels."""
    in_chans = getattr(model, "in_chans", None)
    if isinstance(in_chans, int) and not isinstance(in_chans, bool):
        return in_chans
    first = next((m for m in model.modules() if isinstance(m, nn.modules.conv._ConvNd)), None)
    return None if first is None else first.in_channels


def _dimension(value: object, given: object) -> int:
    if isinstance(value, str):
        value = value.strip()
        if not value.isdigit():
            raise ValueError(f"input size {given!r} has a dimension {value!r} that is not a whole number")
        return int(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        if isinstance(value, numbers.Real) and float(value).is_integer():
            return int(value)
        raise ValueError(f"input size {given!r} has a dimension {value!r} that is not a whole number")
    return int(value)


def parse_input_size(value: int | str | Sequence[int], *, in_chans: int | None = None) -> tuple[int, int, int]:
    """(C, H, W) of one image from any accepted form of an input size.

    Args:
        value: An int (square image), (H, W), (C, H, W) or (N, C, H, W), as numbers, a ``torch.Size`` or text
            such as ``"3x224x224"``, ``"1x3x224x224"``, ``"32x32"`` or ``"224"``.
        in_chans: Channels of the forms that leave them out; default 3.

    Raises:
        ValueError: For a size that is none of the accepted forms, or has a size below 1; the message lists the forms.
        TypeError: For a value that is neither a number, text nor a sequence.
    """
    given = value
    if isinstance(value, str):
        parts = value.lower().replace(",", "x").replace("(", "").replace(")", "").split("x")
        dims = [_dimension(p, given) for p in parts]
    elif isinstance(value, numbers.Number) and not isinstance(value, bool):
        dims = [_dimension(value, given)]
    elif isinstance(value, Sequence) and not isinstance(value, bytes):
        dims = [_dimension(v, given) for v in value]
    else:
        raise TypeError(f"input size must be {INPUT_SIZE_FORMS}; got {type(value).__name__} {given!r}")
    if not 1 <= len(dims) <= 4:
        raise ValueError(f"input size must be {INPUT_SIZE_FORMS}; got {given!r} ({len(dims)} dimensions)")
    if min(dims) < 1:
        raise ValueError(f"input size {given!r} has a size below 1; every dimension must be positive")
    if len(dims) == 1:
        dims = dims * 2
    if len(dims) == 2:
        chans = 3 if in_chans is None else in_chans
        dims = [chans, *dims]
    return (dims[-3], dims[-2], dims[-1])
