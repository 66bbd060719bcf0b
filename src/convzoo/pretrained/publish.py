"""Turn a finished training run into a weights entry: a safetensors file, its SHA-256, and its measured accuracy.

The weights shipped with convzoo were made this way from runs of ``convzoo train`` on the real CIFAR-10; anyone can
do the same for their own runs and register the result (`register_weights` with the entry's fields, or a JSON file
of entries read by `load_entries`).
"""

from __future__ import annotations

import datetime
import json
import os
import platform
from pathlib import Path
from typing import Any

import torch

from convzoo._files import write_atomically
from convzoo.pretrained.entries import Preprocessing, WeightsEntry

CONVZOO_JSON = Path(__file__).resolve().parent / "convzoo.json"


def _recipe_text(state: dict[str, Any]) -> str:
    recipe = state.get("recipe", {})
    config = state.get("config", {})
    overrides = config.get("recipe_overrides", {})
    keys = ("optimizer", "lr", "momentum", "nesterov", "weight_decay", "batch_size", "epochs", "schedule")
    keys += ("warmup_epochs", "label_smoothing", "crop_padding", "flip")
    settings = ", ".join(f"{k} {recipe[k]}" for k in keys if k in recipe)
    changed = f" (the {config.get('recipe')!r} recipe with {overrides})" if overrides else ""
    return f"convzoo train{changed}: {settings}; seed {config.get('seed', 0)}"


def publish_checkpoint(
    checkpoint: str | os.PathLike[str],
    name: str,
    *,
    dataset: str,
    folder: str | os.PathLike[str],
    test_data: str | os.PathLike[str] | None = None,
    data_root: str | os.PathLike[str] | None = None,
    default: bool = False,
    license: str = "BSD-3-Clause",
    description: str = "",
) -> WeightsEntry:
    """Write a run's final weights as ``<folder>/<name>.safetensors`` and return their entry, accuracy measured now.

    Args:
        checkpoint: The run's ``last.pt`` (its final weights; ``best.pt`` would be chosen on the test set).
        name: The entry's name, ``"<model>.<tag>"``.
        dataset: The data set's name as people know it (``"CIFAR-10"``).
        folder: Where the safetensors file goes.
        test_data: The data set to measure on (default: the run's).
        data_root: Folder holding a named data set.
        default: Mark the entry as the model's default (``pretrained=True``).
        license: Licence of the weights.
        description: Free text; the training time and hardware are added.
    """
    from convzoo.data import Augment, FastLoader, load_dataset
    from convzoo.train import evaluate, load_checkpoint, load_trained
    from convzoo.weights import file_sha256, save_weights

    model, data = load_trained(checkpoint)
    state = load_checkpoint(checkpoint)
    channels, size = data["image_size"][0], data["image_size"][-1]
    _, test = load_dataset(test_data or data["name"], root=data_root, image_size=size, in_chans=channels)
    if list(test.classes) != list(data["classes"]):
        raise ValueError(f"the test set's classes {test.classes} differ from the run's {data['classes']}")
    augment = Augment(mean=tuple(data["mean"]), std=tuple(data["std"]), out_size=size)
    loader = FastLoader(test, batch_size=256, shuffle=False, augment=augment, device=torch.device("cpu"))
    result = evaluate(model, loader, device=torch.device("cpu"))
    path = save_weights(model, Path(folder) / f"{name}.safetensors", metadata={"weights_name": name})
    digest = file_sha256(path)
    history = state.get("history", [])
    seconds = sum(float(row.get("seconds", 0)) for row in history)
    epochs = len(history)
    today = datetime.date.today().isoformat()
    info = state["model"]
    trained = (
        f"Trained {epochs} epochs in {seconds / 60:.0f} min on {platform.machine()} CPU ({today}); the final epoch's "
        f"weights."
    )
    return WeightsEntry(
        name=name,
        model=info["name"],
        file_name=path.name,
        sha256=digest,
        model_args=dict(info.get("model_args", {})),
        dataset=dataset,
        num_classes=int(info["num_classes"]),
        classes=tuple(data["classes"]),
        metrics={"top1": round(float(result["top1"]), 2), "top5": round(float(result["top5"]), 2)},
        evaluation=f"{dataset} test set, {int(result['n'])} images, one {size}x{size} view, measured {today}",
        preprocessing=Preprocessing(
            crop_size=size, resize_size=size, mean=tuple(data["mean"]), std=tuple(data["std"]), channels=channels
        ),
        recipe=_recipe_text(state),
        license=license,
        description=" ".join(part for part in (description, trained) if part),
        default=default,
    )


def write_entries(entries: list[WeightsEntry], path: str | os.PathLike[str] = CONVZOO_JSON) -> Path:
    """Write entries as a JSON file of the form the built-in ones use, replacing rows of the same name."""
    path = Path(path)
    rows = json.loads(path.read_text())["weights"] if path.is_file() else []
    new = {e.name: e.as_dict() for e in entries}
    rows = [new.pop(row["name"], row) for row in rows] + list(new.values())
    text = json.dumps({"weights": rows}, indent=1) + "\n"
    return write_atomically(path, lambda tmp: Path(tmp).write_text(text))


def load_entries(path: str | os.PathLike[str]) -> list[WeightsEntry]:
    """Register the entries of a JSON file written by `write_entries`; relative file names resolve beside it.

    Returns:
        The registered entries.
    """
    from convzoo.pretrained.entries import _add

    path = Path(path)
    out = []
    for row in json.loads(path.read_text())["weights"]:
        entry = WeightsEntry.from_dict(row)
        if entry.shipped:  # a file of one's own: make it a local source beside the JSON
            entry = WeightsEntry.from_dict({**row, "source": os.fspath(path.parent / entry.file_name)})
        out.append(_add(entry))
    return out


def weights_table(entries: list[WeightsEntry]) -> str:
    """A Markdown table of entries beside their papers' reported accuracy (docs/weights.md holds it for ours)."""
    from convzoo.analysis import count_params
    from convzoo.registry import get_model_card

    rows = [
        "| weights | parameters | top-1 (%) | paper's top-1 (%) | short of the paper | recipe |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for entry in entries:
        card = get_model_card(entry.model)
        paper = card.top1_accuracy()
        top1 = entry.metrics.get("top1")
        gap = f"{paper - top1:.2f}" if paper is not None and top1 is not None else "-"
        paper_text = f"{paper:.2f}" if paper is not None else "-"
        epochs = next((part for part in entry.recipe.split(", ") if part.startswith("epochs ")), "")
        rows.append(
            f"| `{entry.name}` | {count_params(entry.model):,} | {top1:.2f} | {paper_text} | {gap} | {epochs} |"
        )
    return "\n".join(rows) + "\n"
