import json
import math
import os
from pathlib import Path

import pytest
import torch

import convzoo

EXPECT = Path(__file__).parent / "expect"


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    yield


@pytest.fixture(autouse=True)
def _weights_registry_restored():
    """Weights a test registers are forgotten after it, so no test sees another's entries."""
    from convzoo.pretrained import entries

    before = dict(entries._builtin())
    yield
    entries._WEIGHTS.clear()
    entries._WEIGHTS.update(before)


@pytest.fixture(autouse=True, scope="session")
def _private_convzoo_home(tmp_path_factory):
    """Caches (downloaded weights, measured step formats) go to a fresh folder, not the user's."""
    mp = pytest.MonkeyPatch()
    mp.setenv("CONVZOO_HOME", str(tmp_path_factory.mktemp("convzoo-home")))
    yield
    mp.undo()


class Golden:
    """Compares a network's outputs with the ones recorded in tests/expect/NAME.json.

    The files are rewritten only when CONVZOO_REGEN_EXPECT=1: a golden output pins an implementation down where no
    installed peer can, so it changes only on purpose.
    """

    def __init__(self, directory: Path, regenerate: bool) -> None:
        self.directory = directory
        self.regenerate = regenerate

    @staticmethod
    def calibrated_logits(name: str, size: int) -> torch.Tensor:
        """float64 logits of a seeded ``name`` (10 classes) whose batch norms were calibrated on the seeded input.

        An untrained network normalises with the initial statistics (mean 0, variance 1); one training-mode pass with
        momentum 1 sets them to the batch's, so the golden logits exercise every layer at a realistic scale.
        """
        torch.manual_seed(0)
        model = convzoo.create_model(name, num_classes=10).double()
        x = torch.randn(2, 3, size, size, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.momentum = 1.0
        with torch.no_grad():
            model.train()(x)
            return model.eval()(x)

    def path(self, name: str) -> Path:
        return self.directory / f"{name}.json"

    def __call__(self, name: str, outputs: dict[str, torch.Tensor], **meta: object) -> None:
        """Check ``outputs`` against the record of ``name``.

        float64 outputs must agree to rtol 1e-7, atol 1e-9; float32 ones to rtol 1e-4 and an atol of 1e-4 times the
        largest recorded value. ``meta`` (the model name, the input shape) must equal what was recorded.
        """
        record = {**meta, **{key: value.tolist() for key, value in outputs.items()}}
        path = self.path(name)
        if self.regenerate:
            path.parent.mkdir(exist_ok=True)
            path.write_text(json.dumps(record) + "\n")
        expected = json.loads(path.read_text())
        assert set(expected) == set(record), f"{path.name} records {sorted(expected)}; the test made {sorted(record)}"
        for key, value in meta.items():
            assert expected[key] == value, f"{path.name}: {key} was {expected[key]!r}, now {value!r}"
        for key, value in outputs.items():
            want = torch.tensor(expected[key], dtype=value.dtype)
            if value.dtype == torch.float64:
                torch.testing.assert_close(value, want, rtol=1e-7, atol=1e-9, msg=key)
            else:
                scale = want.abs().max().item()
                assert math.isfinite(scale) and scale > 0, f"{path.name}: {key} recorded as all zeros or not finite"
                torch.testing.assert_close(value, want, rtol=1e-4, atol=1e-4 * scale, msg=key)


@pytest.fixture
def golden() -> Golden:
    """Checks outputs against tests/expect/ (rewritten only with CONVZOO_REGEN_EXPECT=1)."""
    return Golden(EXPECT, os.environ.get("CONVZOO_REGEN_EXPECT") == "1")
