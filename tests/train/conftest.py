from collections.abc import Callable

import pytest

from convzoo.train import TrainConfig

# Small and fast: ResNet-20 on 16x16 digits, 2 epochs.
FAST = {"epochs": 2, "batch_size": 64}


@pytest.fixture
def fast_config(tmp_path) -> Callable[..., TrainConfig]:
    """Settings of a small, fast, deterministic run in a folder ``name`` of the test's temporary folder.

    Keywords replace the defaults: ResNet-20 on 16x16 digits for 2 epochs, no progress bar.
    """

    def make(name: str = "run", **kwargs) -> TrainConfig:
        settings = {
            "model": "resnet20",
            "data": "digits",
            "image_size": 16,
            "recipe_overrides": dict(FAST),
            "out": str(tmp_path / name),
            "progress": False,
            "deterministic": True,
        }
        settings.update(kwargs)
        return TrainConfig(**settings)

    return make
