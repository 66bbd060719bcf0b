"""Training checkpoints: written atomically, read without unpickling anything but tensors and plain containers.

`Checkpoints` gathers everything a run needs to continue bit for bit (weights, optimiser, loss scaler, schedule,
random streams, history) into one state and puts it back; `load_trained` rebuilds the trained model from it.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from convzoo._files import write_atomically
from convzoo.train.config import RESUMABLE_CHANGES, TrainConfig, check_same_settings
from convzoo.train.recipes import LearningRate, Recipe
from convzoo.train.tuning import StepFormat
from convzoo.weights import WeightsError, classifier_prefix, describe_file_start, is_torch_save_file, load_weights

__all__ = [
    "Checkpoints",
    "Progress",
    "load_checkpoint",
    "load_trained",
    "resume_config",
    "resume_state",
    "save_checkpoint",
]

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
    with path.open("rb") as f:
        head = f.read(64)
    if not is_torch_save_file(head):
        raise WeightsError(
            f"{path} is not a convzoo training checkpoint (a torch.save file): {describe_file_start(head)}"
        )
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


def resume_state(config: TrainConfig, out: Path) -> dict[str, Any] | None:
    """The state to resume from when ``config.resume``, after checking the run folder; None for a new run.

    Raises:
        FileNotFoundError: Resuming, but the folder holds no ``last.pt``.
        ValueError: Resuming with settings other than the checkpoint's.
        FileExistsError: Starting a new run in a folder that already holds files.
    """
    if config.resume:
        last = out / "last.pt"
        if not last.is_file():
            raise FileNotFoundError(f"cannot resume: {last} does not exist (give the run folder with --out)")
        state = load_checkpoint(last)
        check_same_settings(state["config"], config)
        return state
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(
            f"run folder {out} already holds files; pass --resume to continue that run or choose another --out"
        )
    return None


def resume_config(out: str | os.PathLike[str], explicit: Mapping[str, Any] | None = None) -> TrainConfig:
    """The settings to resume the run in ``out`` with: those saved in its ``last.pt``, checked against ``explicit``.

    A command that resumes names only the run folder; every setting it does not give comes from the checkpoint, not
    from the defaults. A setting it gives must equal the saved one, except those `RESUMABLE_CHANGES` names
    (``progress``, ``tensorboard``), which replace the saved values.

    Args:
        out: The run folder.
        explicit: The settings the user gave, as `TrainConfig` fields; ``recipe_overrides`` and ``model_args`` hold
            only the keys given, each compared with the saved run's value (for a recipe setting, the value the run
            trained with, whether it came from the recipe or an override). ``out`` and ``resume`` are ignored.

    Returns:
        The saved settings with ``out`` and ``resume=True``, and the resumable changes applied.

    Raises:
        FileNotFoundError: The folder holds no ``last.pt``.
        ValueError: An unknown setting, or explicit settings that differ from the saved ones (all named, with the
            saved and the given value).
    """
    out = Path(out)
    last = out / "last.pt"
    if not last.is_file():
        raise FileNotFoundError(f"cannot resume: {last} does not exist (give the run folder with --out)")
    state = load_checkpoint(last)
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    saved = {k: v for k, v in state["config"].items() if k in fields}
    explicit = dict(explicit or {})
    unknown = sorted(set(explicit) - fields)
    if unknown:
        raise ValueError(f"unknown setting(s) {unknown}; accepted: {sorted(fields)}")
    trained_with = {**state.get("recipe", {}), **saved.get("recipe_overrides", {})}
    changed, changes = [], {}
    for key, value in explicit.items():
        if key in ("out", "resume"):
            continue
        if key in RESUMABLE_CHANGES:
            changes[key] = value
        elif key in ("recipe_overrides", "model_args"):
            given = trained_with if key == "recipe_overrides" else saved.get(key, {})
            changed += [
                f"{k}: {given.get(k)!r} -> {v!r}" for k, v in sorted((value or {}).items()) if given.get(k) != v
            ]
        elif saved.get(key) != value:
            changed.append(f"{key}: {saved.get(key)!r} -> {value!r}")
    if changed:
        raise ValueError(
            f"cannot resume {out} with changed settings (start a new run to change them):\n  " + "\n  ".join(changed)
        )
    return TrainConfig(**{**saved, **changes, "out": str(out), "resume": True})


@dataclass
class Progress:
    """Where a run stands, as a checkpoint records it.

    Attributes:
        epoch: Epochs finished.
        step: Optimiser steps done.
        step_in_epoch: Batches of the unfinished epoch already trained on (0 between epochs).
        history: One row of metrics.csv per finished epoch.
        best: The best value so far of the task's ``best_metric`` (None before the first evaluation).
    """

    epoch: int = 0
    step: int = 0
    step_in_epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best: float | None = None


class Checkpoints:
    """Saves a run's whole state in its folder and restores it.

    Args:
        folder: The run folder.
        config: The run's settings.
        recipe: The recipe it follows.
        model: The network (unwrapped).
        ema: Its averaged copy, if the run keeps one.
        optimizer: The optimiser.
        scaler: The fp16 loss scaler.
        schedule: The learning rate schedule.
        step_format: The precision and memory format of the training step.
        model_info: How to rebuild the model besides its weights: ``num_classes`` and ``in_chans``.
        data_info: What predicting needs to know of the data: classes, image size, mean and standard deviation.
        best_key: The key of the best metric's value in the state, e.g. ``"best_top1"``.
        writes: Whether this process writes (the main process of a distributed run).
    """

    def __init__(
        self,
        folder: Path,
        *,
        config: TrainConfig,
        recipe: Recipe,
        model: nn.Module,
        ema: nn.Module | None,
        optimizer: torch.optim.Optimizer,
        scaler: torch.amp.GradScaler,
        schedule: LearningRate,
        step_format: StepFormat,
        model_info: dict[str, Any],
        data_info: dict[str, Any],
        best_key: str,
        writes: bool,
    ) -> None:
        self.folder = folder
        self.config, self.recipe = config, recipe
        self.model, self.ema = model, ema
        self.optimizer, self.scaler, self.schedule = optimizer, scaler, schedule
        self.step_format = step_format
        self.model_info, self.data_info = model_info, data_info
        self.best_key = best_key
        self.writes = writes

    def state(self, progress: Progress) -> dict[str, Any]:
        """Everything the run needs to continue from ``progress``."""
        state = {
            "config": self.config.as_dict(),
            "recipe": self.recipe.as_dict(),
            "model": {
                "name": self.config.model,
                **self.model_info,
                "model_args": dict(self.config.model_args),
                "state_dict": self.model.state_dict(),
                "classifier": classifier_prefix(self.model),
            },
            "data": {"name": self.config.data, **self.data_info},
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "schedule": self.schedule.state_dict(),
            "epoch": progress.epoch,
            "step": progress.step,
            "step_in_epoch": progress.step_in_epoch,
            "step_format": self.step_format.as_dict(),
            "rng": {"torch": torch.get_rng_state()},
            "history": progress.history,
            self.best_key: progress.best,
        }
        if torch.cuda.is_available():
            state["rng"]["cuda"] = torch.cuda.get_rng_state_all()
        if self.ema is not None:
            state["ema"] = self.ema.state_dict()
        return state

    def save(self, name: str, progress: Progress) -> None:
        """Write the state at ``progress`` as ``name`` in the run folder."""
        if self.writes:
            save_checkpoint(self.state(progress), self.folder / name)

    def restore(self, state: dict[str, Any]) -> Progress:
        """Put a saved state back into the run's objects and random streams; where the run stood."""
        self.model.load_state_dict(state["model"]["state_dict"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.schedule.load_state_dict(state["schedule"])
        torch.set_rng_state(state["rng"]["torch"])
        if "cuda" in state["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])
        return Progress(
            epoch=int(state["epoch"]),
            step=int(state["step"]),
            step_in_epoch=int(state["step_in_epoch"]),
            history=list(state["history"]),
            best=state[self.best_key],
        )


def load_trained(path: str | os.PathLike[str], *, ema: bool = True) -> tuple[nn.Module, dict[str, Any]]:
    """A model rebuilt from a training checkpoint, and the checkpoint's data description.

    Args:
        path: A ``last.pt`` or ``best.pt``.
        ema: Use the averaged weights when the run kept them.
    """
    from convzoo.factory import create_model

    state = load_checkpoint(path)
    info = state["model"]
    model = create_model(info["name"], num_classes=info["num_classes"], in_chans=info["in_chans"], **info["model_args"])
    weights = info["state_dict"]
    if ema and "ema" in state:
        prefix = "module."
        weights = {k[len(prefix) :]: v for k, v in state["ema"].items() if k.startswith(prefix)}
    load_weights(model, weights)
    model.eval()
    return model, state["data"]
