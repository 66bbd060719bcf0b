"""Reading, checking and writing weights: formats, wrappers, mismatches, corrupt and unsafe files."""

import collections
import hashlib
import os

import pytest
import torch

import convzoo
from convzoo.weights import WeightsError, read_state_dict, register_weights


@pytest.fixture
def net():
    torch.manual_seed(0)
    return convzoo.create_model("resnet20").eval()


def same_outputs(a, b):
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        return torch.equal(a.eval()(x), b.eval()(x))


def test_safetensors_round_trip(tmp_path, net):
    path = convzoo.save_weights(net, tmp_path / "r20.safetensors")
    assert [p.name for p in tmp_path.iterdir()] == ["r20.safetensors"]  # no temporary file left behind
    loaded = convzoo.create_model("resnet20", weights=path)
    assert same_outputs(net, loaded)
    from safetensors import safe_open

    with safe_open(os.fspath(path), "pt") as f:
        assert f.metadata()["model_name"] == "resnet20"


def test_save_requires_safetensors_suffix(tmp_path, net):
    with pytest.raises(ValueError, match="ending in .safetensors"):
        convzoo.save_weights(net, tmp_path / "r20.pth")


@pytest.mark.parametrize(
    "wrap",
    [
        lambda sd: sd,
        lambda sd: {"state_dict": sd, "epoch": 3},
        lambda sd: {"model": sd, "optimizer": {"lr": 0.1}},
        lambda sd: {"state_dict": {f"module.{k}": v for k, v in sd.items()}},
        lambda sd: collections.OrderedDict((f"_orig_mod.{k}", v) for k, v in sd.items()),
    ],
    ids=["bare", "state_dict", "model", "dataparallel", "compiled"],
)
def test_pytorch_checkpoints_and_wrappers(tmp_path, net, wrap):
    path = tmp_path / "ckpt.pth"
    torch.save(wrap(net.state_dict()), path)
    assert same_outputs(net, convzoo.create_model("resnet20", weights=path))


def test_mismatch_lists_missing_unexpected_and_shapes(tmp_path):
    other = convzoo.create_model("resnet32")
    path = tmp_path / "r32.pth"
    torch.save(other.state_dict(), path)
    with pytest.raises(WeightsError) as info:
        convzoo.create_model("resnet20", weights=path)
    message = str(info.value)
    assert "do not fit resnet20" in message
    assert "unexpected in the checkpoint (72)" in message and "layer1.3.conv1.weight" in message
    wide = convzoo.create_model("resnet20", shortcut="B").state_dict()
    with pytest.raises(WeightsError, match=r"missing from the checkpoint \(12\)[\s\S]*layer2.0.downsample.0.weight"):
        convzoo.load_weights(
            convzoo.create_model("resnet20", shortcut="B"), {k: v for k, v in wide.items() if "downsample" not in k}
        )
    bad = dict(wide)
    bad["conv1.weight"] = torch.zeros(16, 1, 3, 3)
    with pytest.raises(
        WeightsError, match=r"wrong shape \(1\):\s+conv1.weight: checkpoint \(16, 1, 3, 3\) vs model \(16, 3, 3, 3\)"
    ):
        convzoo.load_weights(convzoo.create_model("resnet20", shortcut="B"), bad)


def test_checkpoint_with_other_classes_loads_backbone(tmp_path, net):
    path = convzoo.save_weights(net, tmp_path / "r20.safetensors")
    with pytest.warns(UserWarning, match="classifier has another number of classes"):
        model = convzoo.create_model("resnet20", num_classes=100, weights=path)
    assert model.fc.out_features == 100
    assert torch.equal(model.conv1.weight, net.conv1.weight)
    features = convzoo.create_model("resnet20", features_only=True, weights=path)
    assert torch.equal(features.model.layer3[2].conv2.weight, net.layer3[2].conv2.weight)


def test_truncated_and_corrupt_files(tmp_path, net):
    good = convzoo.save_weights(net, tmp_path / "r20.safetensors")
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(WeightsError, match="not a readable safetensors file"):
        convzoo.create_model("resnet20", weights=cut)
    pth = tmp_path / "r20.pth"
    torch.save(net.state_dict(), pth)
    cut_pth = tmp_path / "cut.pth"
    cut_pth.write_bytes(pth.read_bytes()[:1000])
    with pytest.raises(WeightsError, match="not a readable PyTorch checkpoint"):
        read_state_dict(cut_pth)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"this is not a checkpoint")
    with pytest.raises(WeightsError):
        read_state_dict(garbage)


class Payload:
    """An arbitrary Python object: loading it would run code of the file's choosing."""

    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_arbitrary_objects_are_not_unpickled(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "extra": Payload()}, path)
    with pytest.raises(WeightsError, match="refusing to unpickle"):
        read_state_dict(path)


def test_missing_file_and_unknown_name():
    with pytest.raises(FileNotFoundError, match="neither an existing file nor a registered weights name"):
        convzoo.create_model("resnet20", weights="/nonexistent/r20.safetensors")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_state_dict("/nonexistent/x.pth")


def test_non_state_dict_content(tmp_path):
    path = tmp_path / "list.pth"
    torch.save([1, 2, 3], path)
    with pytest.raises(WeightsError, match="does not hold a state_dict"):
        read_state_dict(path)
    path = tmp_path / "empty.pth"
    torch.save({"epoch": 3}, path)
    with pytest.raises(WeightsError, match="holds no tensors"):
        read_state_dict(path)


def test_registered_weights_names_and_hashes(tmp_path, net):
    path = convzoo.save_weights(net, tmp_path / "r20.safetensors")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    register_weights("resnet20.test_run", model="resnet20", source=path, sha256=digest)
    assert same_outputs(net, convzoo.create_model("resnet20", weights="resnet20.test_run"))
    assert [w.name for w in convzoo.list_weights("resnet20")] == ["resnet20.test_run"]
    with pytest.raises(ValueError, match="already registered"):
        register_weights("resnet20.test_run", model="resnet20", source=path)
    with pytest.raises(WeightsError, match="registered for resnet20, not for resnet32"):
        convzoo.create_model("resnet32", weights="resnet20.test_run")
    register_weights("resnet20.tampered", model="resnet20", source=path, sha256="0" * 64)
    with pytest.raises(WeightsError, match="expects 0000"):
        convzoo.create_model("resnet20", weights="resnet20.tampered")


def test_file_url(tmp_path, monkeypatch, net):
    monkeypatch.setenv("CONVZOO_HOME", os.fspath(tmp_path / "home"))
    path = convzoo.save_weights(net, tmp_path / "r20.safetensors")
    model = convzoo.create_model("resnet20", weights=path.as_uri())
    assert same_outputs(net, model)
    assert (tmp_path / "home" / "weights" / "r20.safetensors").is_file()
