"""Weights entries: the registry, torchvision's entries, the shipped files, preprocessing, publishing a run."""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
import torchvision.models as tvm
from PIL import Image

import convzoo
from convzoo.cli import main
from convzoo.pretrained import Preprocessing, WeightsEntry, default_weights, get_weights, list_weights, package_file
from convzoo.pretrained.peers import TORCHVISION_JSON, shared_models, torchvision_entries
from convzoo.pretrained.publish import load_entries, publish_checkpoint, write_entries
from convzoo.weights import WeightsError, cached_path

SHIPPED = [w for w in list_weights() if w.shipped]


def _tv_weights(entry: WeightsEntry):
    return next(w for w in tvm.get_model_weights(entry.model) if entry.name.endswith(".tv_" + w.name.lower()))


# -- torchvision's entries -------------------------------------------------------------------------------------------


def test_torchvision_entries_are_those_torchvision_publishes():
    stored = json.loads(TORCHVISION_JSON.read_text())
    live = {e.name: e for e in torchvision_entries()}
    ours = {w.name: w for w in list_weights() if w.name.split(".", 1)[1].startswith("tv_")}
    if stored["torchvision"] == torchvision.__version__.split("+")[0]:
        assert set(ours) == set(live)
    assert len(ours) >= 28 and set(ours) & set(live)
    for name in set(ours) & set(live):
        assert ours[name] == live[name], name
    defaults = {w.model for w in ours.values() if w.default}
    assert defaults == set(shared_models())


def test_every_torchvision_entry_fits_its_model():
    # Shapes only, on the meta device: building 28 ImageNet networks for real would take minutes.
    for model in shared_models():
        for entry in list_weights(model):
            if not entry.name.startswith(f"{model}.tv_"):
                continue
            with torch.device("meta"), warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # torchvision's note on its Inception initialisation
                ours = convzoo.create_model(model, **entry.model_args)
                theirs = tvm.get_model(model)
            state = theirs.state_dict()
            state = ours.remap_state_dict(state) if hasattr(ours, "remap_state_dict") else state
            own = ours.state_dict()
            assert set(state) == set(own), entry.name
            assert all(state[k].shape == own[k].shape for k in own), entry.name


def test_entry_preprocessing_equals_torchvision_transforms():
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (300, 411, 3), dtype=np.uint8))
    tensor = torch.randint(0, 256, (3, 257, 301), dtype=torch.uint8)
    batch = torch.rand(2, 3, 250, 260)
    for name in ("resnet50.tv_imagenet1k_v2", "inception_v3.tv_imagenet1k_v1", "mobilenet_v2.tv_imagenet1k_v2"):
        entry = get_weights(name)
        ours, theirs = entry.transforms(), _tv_weights(entry).transforms()
        for x in (image, tensor, batch):
            torch.testing.assert_close(ours(x), theirs(x), atol=0, rtol=0)
    assert convzoo.get_weights("inception_v3.tv_imagenet1k_v1").preprocessing.crop_size == 299


def test_preprocessing_converts_grey_and_rejects_wrong_input():
    grey = Preprocessing(crop_size=28, resize_size=32, mean=(0.5,), std=(0.5,), channels=1)
    out = grey.transforms()(Image.new("RGB", (64, 48), (255, 255, 255)))
    assert out.shape == (1, 28, 28) and torch.allclose(out, torch.ones_like(out))
    colour = Preprocessing(crop_size=32, resize_size=32)
    with pytest.raises(ValueError, match="3-channel images; got 1 channels"):
        colour.transforms()(torch.zeros(1, 40, 40))
    with pytest.raises(TypeError, match="PIL image or a tensor; got list"):
        colour.transforms()([1, 2])
    with pytest.raises(ValueError, match="resize_size .* at least crop_size"):
        Preprocessing(crop_size=224, resize_size=200)
    card = convzoo.get_model_card("resnet50")
    assert (Preprocessing.for_card(card).resize_size, Preprocessing.for_card(card).crop_size) == (256, 224)
    small = Preprocessing.for_card(convzoo.get_model_card("resnet20"))
    assert (small.resize_size, small.crop_size) == (32, 32)


def test_inception_entries_turn_on_the_input_convention_they_need():
    model = convzoo.create_model("googlenet", weights=_fake_tv_file_for("googlenet"))
    assert model.cfg.transform_input is False  # a plain file: nothing known about it
    entry = get_weights("googlenet.tv_imagenet1k_v1")
    assert entry.model_args == {"transform_input": True}


def _fake_tv_file_for(model: str):
    import tempfile

    path = tempfile.mkdtemp() + f"/{model}.pth"
    torch.save(convzoo.create_model(model).state_dict(), path)
    return path


# -- loading registered entries: package, caches, download, hashes ----------------------------------------------------


def test_registered_url_entries_load_from_the_caches_and_refuse_a_bad_hash(tmp_path, monkeypatch):
    net = convzoo.create_model("resnet20")
    good = tmp_path / "good.pth"
    torch.save(net.state_dict(), good)
    digest = hashlib.sha256(good.read_bytes()).hexdigest()
    url = f"https://example.invalid/models/resnet20-{digest[:8]}.pth"
    convzoo.register_weights("resnet20.cached", model="resnet20", source=url, sha256=digest[:8])
    # Not cached anywhere and no network: the error says which file to get and where to put it.
    with pytest.raises(WeightsError, match=r"could not download weights from https://example.invalid[\s\S]*put it at"):
        convzoo.create_model("resnet20", weights="resnet20.cached")
    # In torch hub's cache, where torchvision keeps what it downloaded.
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    hub = tmp_path / "torch" / "hub" / "checkpoints" / f"resnet20-{digest[:8]}.pth"
    hub.parent.mkdir(parents=True)
    hub.write_bytes(good.read_bytes())
    loaded = convzoo.create_model("resnet20", weights="resnet20.cached")
    torch.testing.assert_close(loaded.state_dict(), net.state_dict())
    assert loaded.weights_entry.name == "resnet20.cached"
    hub.unlink()
    # In convzoo's own cache; a damaged copy there is refused and removed, so the next call fetches it again.
    cached = cached_path(url)
    cached.parent.mkdir(parents=True, exist_ok=True)
    cached.write_bytes(good.read_bytes()[:-100])
    with pytest.raises(WeightsError, match="SHA-256 mismatch.*refusing to load it.*deleted"):
        convzoo.create_model("resnet20", weights="resnet20.cached")
    assert not cached.exists()


def test_weights_of_another_model_and_unknown_names_are_refused():
    with pytest.raises(
        WeightsError, match="registered for resnet50, not for resnet18; weights registered for resnet18"
    ):
        convzoo.create_model("resnet18", weights="resnet50.tv_imagenet1k_v2")
    with pytest.raises(FileNotFoundError, match="did you mean resnet50.tv_imagenet1k_v2"):
        convzoo.create_model("resnet50", weights="resnet50.tv_imagenet1k_v3")
    with pytest.raises(KeyError, match="unknown weights 'resnet50.tv'; did you mean resnet50.tv_imagenet1k_v"):
        get_weights("resnet50.tv")


def test_entries_from_json_files_and_their_unknown_fields(tmp_path):
    with pytest.raises(ValueError, match="unknown fields \\['acuracy'\\]"):
        WeightsEntry.from_dict({"name": "x.y", "model": "resnet20", "acuracy": 1})
    net = convzoo.create_model("resnet20")
    path = convzoo.save_weights(net, tmp_path / "mine.safetensors")
    entry = WeightsEntry(
        name="resnet20.mine",
        model="resnet20",
        file_name=path.name,
        sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
        dataset="digits",
        num_classes=10,
        preprocessing=Preprocessing(crop_size=32, resize_size=32),
    )
    write_entries([entry], tmp_path / "entries.json")
    (registered,) = load_entries(tmp_path / "entries.json")
    assert registered.source == str(path) and registered.preprocessing == entry.preprocessing
    loaded = convzoo.create_model("resnet20", weights="resnet20.mine")
    torch.testing.assert_close(loaded.state_dict(), net.state_dict())
    path.write_bytes(path.read_bytes()[:-8] + b"01234567")  # tampered after it was registered
    with pytest.raises(WeightsError, match="SHA-256 mismatch"):
        convzoo.create_model("resnet20", weights="resnet20.mine")
    assert path.exists()  # the user's own file is never deleted


# -- the weights shipped in the package -----------------------------------------------------------------------------


def test_shipped_weights_cover_the_cifar_resnets_and_a_wide_resnet():
    models = {w.model for w in SHIPPED}
    assert {"resnet20", "resnet32", "resnet44", "resnet56"} <= models
    assert models & {"wrn40_1", "wrn40_2", "wrn16_8", "densenet_40_12", "densenet_bc_100_12"}
    for model in models:
        assert default_weights(model).shipped


@pytest.mark.parametrize("entry", SHIPPED, ids=[w.name for w in SHIPPED])
def test_shipped_weights_load_offline_and_state_their_evidence(entry):
    path = package_file(entry)
    assert path.is_file() and hashlib.sha256(path.read_bytes()).hexdigest() == entry.sha256
    model = convzoo.create_model(entry.model, pretrained=True)
    assert model.weights_entry is entry
    assert entry.dataset == "CIFAR-10" and entry.classes[0] == "airplane" and len(entry.classes) == 10
    assert 80 < entry.metrics["top1"] < 100 and "test set, 10000 images" in entry.evaluation
    assert "epochs" in entry.recipe and entry.license and entry.preprocessing.crop_size == 32


def test_docs_table_is_that_of_the_shipped_entries():
    from convzoo.pretrained.publish import weights_table

    docs = (Path(__file__).resolve().parents[1] / "docs" / "weights.md").read_text()
    start = docs.index("<!-- weights-table")
    table = docs[docs.index("\n", start) + 1 : docs.index("<!-- end weights-table -->")]
    assert table.strip() == weights_table(SHIPPED).strip()


CIFAR10 = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10"


@pytest.mark.slow
@pytest.mark.parametrize("entry", SHIPPED, ids=[w.name for w in SHIPPED])
def test_shipped_weights_reach_their_recorded_accuracy_on_real_cifar10(entry):
    if not (CIFAR10 / "test.npz").is_file():
        pytest.skip(f"the real CIFAR-10 is not at {CIFAR10} on this machine")
    from convzoo.data import Augment, FastLoader, load_dataset
    from convzoo.train import evaluate

    _, test = load_dataset(str(CIFAR10), image_size=32)
    spec = entry.preprocessing
    loader = FastLoader(test, batch_size=500, shuffle=False, augment=Augment(mean=spec.mean, std=spec.std))
    model = convzoo.create_model(entry.model, weights=entry.name).eval()
    result = evaluate(model, loader, device=torch.device("cpu"))
    assert result["n"] == 10_000 and abs(result["top1"] - entry.metrics["top1"]) < 0.02


def test_predict_and_info_use_the_shipped_weights(tmp_path, capsys):
    image = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(image)
    assert main(["predict", "resnet20", str(image), "--top-k", "3"]) == 0
    line = capsys.readouterr().out.strip()
    names = [part.rsplit(" ", 1)[0] for part in line.split(": ", 1)[1].split(", ")]
    assert len(names) == 3 and set(names) <= set(get_weights("resnet20.cifar10").classes)
    assert main(["predict", "resnet20", "--weights", "resnet50.tv_imagenet1k_v2", str(image)]) == 2
    assert "registered for resnet50, not for resnet20" in capsys.readouterr().err
    assert main(["info", "resnet20"]) == 0
    assert "weights:    resnet20.cifar10 (CIFAR-10, top-1 " in capsys.readouterr().out


# -- publishing a run, the CLI ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fast_run(tmp_path_factory):
    """A finished two-epoch run of ResNet-20 on 16x16 digits."""
    from convzoo.train import TrainConfig, train

    out = tmp_path_factory.mktemp("runs") / "digits"
    config = TrainConfig(
        model="resnet20",
        data="digits",
        image_size=16,
        recipe_overrides={"epochs": 2, "batch_size": 64},
        out=str(out),
        progress=False,
        deterministic=True,
    )
    train(config)
    return out


def test_a_finished_run_becomes_an_entry_with_its_measured_accuracy(tmp_path, fast_run, capsys):
    entry = publish_checkpoint(fast_run / "last.pt", "resnet20.digits_test", dataset="digits", folder=tmp_path)
    assert entry.metrics["top1"] > 50 and entry.sha256 == hashlib.sha256(package_path(tmp_path, entry)).hexdigest()
    assert len(entry.classes) == 10 and entry.preprocessing.crop_size == 16 and "epochs 2" in entry.recipe
    write_entries([entry], tmp_path / "entries.json")
    load_entries(tmp_path / "entries.json")
    assert main(["eval", "resnet20", "--weights", "resnet20.digits_test", "--data", "digits"]) == 0
    out = capsys.readouterr().out
    assert f"top-1 accuracy {entry.metrics['top1']:.2f}%" in out


def package_path(folder, entry):
    return (folder / entry.file_name).read_bytes()


def test_weights_command_lists_and_shows_entries(capsys):
    assert main(["weights", "list", "resnet50"]) == 0
    out = capsys.readouterr().out
    assert "resnet50.tv_imagenet1k_v2  ImageNet-1K  80.86    224" in out and "(default)" in out
    assert main(["weights", "show", "googlenet.tv_imagenet1k_v1"]) == 0
    out = capsys.readouterr().out
    assert "transform_input" in out and "resize 256 (bilinear), centre crop 224" in out and "top-1:" in out
    assert main(["weights", "show", "resnet50.tv"]) == 2
    assert "did you mean resnet50.tv_imagenet1k_v" in capsys.readouterr().err
    assert main(["weights", "list", "nothing*"]) == 2
    assert main(["info", "resnet50"]) == 0
    assert "weights:    resnet50.tv_imagenet1k_v2 (ImageNet-1K, top-1 80.86%) (default" in capsys.readouterr().out
