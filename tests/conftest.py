import pytest
import torch


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    yield


@pytest.fixture(autouse=True, scope="session")
def _private_convzoo_home(tmp_path_factory):
    """Caches (downloaded weights, measured step formats) go to a fresh folder, not the user's."""
    mp = pytest.MonkeyPatch()
    mp.setenv("CONVZOO_HOME", str(tmp_path_factory.mktemp("convzoo-home")))
    yield
    mp.undo()
