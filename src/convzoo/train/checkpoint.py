"""Training checkpoints: written atomically, read without unpickling anything but tensors and plain containers."""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import torch

from convzoo._files import write_atomically
from convzoo.weights import WeightsError

FORMAT = "convzoo-checkpoint-1"


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write ``state`` to ``path`` through a temporary file and a rename, so a crash never leaves half a file.

    ``state`` must hold only tensors, numbers, strings, None and lists/tuples/dicts of them.
    """
    return write_atomically(path, lambda tmp: torch.save({"format": FORMAT, **state}, tmp))


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a checkpoint written by `save_checkpoint`.

    Raises:
        FileNotFoundError: No such file.
        WeightsError: A truncated or corrupt file, a file holding arbitrary objects, or not a convzoo checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise WeightsError(
            f"{path} is corrupt or holds Python objects other than tensors; refusing to unpickle it ({e})"
        ) from e
    except Exception as e:  # a damaged file can fail anywhere inside the unpickler
        raise WeightsError(f"{path} is not a readable checkpoint (truncated or corrupt?): {e}") from e
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise WeightsError(
            f"{path} is not a convzoo training checkpoint (no '{FORMAT}' marker); for plain weights use "
            f"create_model(name, weights=path)"
        )
    return state
