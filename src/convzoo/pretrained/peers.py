"""torchvision's ImageNet weights as convzoo entries, read from torchvision's own weight metadata.

``torchvision.json`` beside this module is written by this module from the installed torchvision
(``python -m convzoo.pretrained.peers``) and checked against it by the tests, so the URLs, hash prefixes, accuracies
and preprocessing stay exactly those torchvision publishes.
"""

from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path
from typing import Any

from convzoo.pretrained.entries import Preprocessing, WeightsEntry

TORCHVISION_JSON = Path(__file__).resolve().parent / "torchvision.json"
# torchvision turns the input convention of its TensorFlow-converted Inception weights on whenever it loads them.
_MODEL_ARGS = {"googlenet": {"transform_input": True}, "inception_v3": {"transform_input": True}}
_HASH_IN_NAME = re.compile(r"-([0-9a-f]{8,64})\.[A-Za-z0-9.]+$")


def shared_models() -> list[str]:
    """The models convzoo registers under the same name as a torchvision classification model."""
    import torchvision.models as tvm

    from convzoo.registry import list_models

    return sorted(set(list_models()) & set(tvm.list_models(module=tvm)))


def _entry(model: str, weights: Any, default: Any) -> WeightsEntry:
    meta = weights.meta
    transform = weights.transforms()
    file_name = weights.url.rsplit("/", 1)[-1]
    match = _HASH_IN_NAME.search(file_name)
    published = meta.get("_metrics", {}).get("ImageNet-1K", {})
    # NaN marks a metric that does not apply (VGG-16's feature-only weights have no valid classifier).
    metrics = {key.replace("acc@", "top"): float(v) for key, v in published.items() if not math.isnan(float(v))}
    categories = meta.get("categories") or ()
    preprocessing = Preprocessing(
        crop_size=int(transform.crop_size[0]),
        resize_size=int(transform.resize_size[0]),
        interpolation=transform.interpolation.value,
        mean=tuple(float(v) for v in transform.mean),
        std=tuple(float(v) for v in transform.std),
    )
    tag = weights.name.lower()
    return WeightsEntry(
        name=f"{model}.tv_{tag}",
        model=model,
        source=weights.url,
        file_name=file_name,
        sha256=match.group(1) if match else None,
        model_args=dict(_MODEL_ARGS.get(model, {})),
        dataset="ImageNet-1K",
        num_classes=1000,
        classes=tuple(categories),
        metrics=metrics,
        evaluation=(
            f"ImageNet-1K validation set, single centre crop {preprocessing.crop_size} after resizing to "
            f"{preprocessing.resize_size}; as published by torchvision ({type(weights).__name__}.{weights.name})"
        ),
        preprocessing=preprocessing,
        recipe=str(meta.get("recipe", "")),
        license="BSD-3-Clause (torchvision); trained on ImageNet, whose terms of access apply",
        description=" ".join(str(meta.get("_docs", "")).split()),
        default=weights is default,
    )


def torchvision_entries() -> list[WeightsEntry]:
    """An entry for every ImageNet weights of torchvision's for the models both packages share."""
    import torchvision.models as tvm

    entries = []
    for model in shared_models():
        enum = tvm.get_model_weights(model)
        default = enum.DEFAULT
        entries += [_entry(model, weights, default) for weights in enum]
    return entries


def write_torchvision_json(path: Path = TORCHVISION_JSON) -> Path:
    """Write the entries of `torchvision_entries` as JSON, with the torchvision version they come from."""
    import torchvision

    rows = [entry.as_dict() for entry in torchvision_entries()]
    # The 1,000 ImageNet class names are stored once and named by the rows that use them.
    imagenet = next(row["classes"] for row in rows if row["classes"])
    for row in rows:
        row["classes"] = "imagenet1k" if row["classes"] == imagenet else row["classes"]
    document = {"torchvision": torchvision.__version__.split("+")[0], "class_lists": {"imagenet1k": imagenet}}
    text = json.dumps({**document, "weights": rows}, indent=1)
    path.write_text(text + "\n")
    return path


if __name__ == "__main__":
    print(f"wrote {write_torchvision_json(Path(sys.argv[1]) if len(sys.argv) > 1 else TORCHVISION_JSON)}")
