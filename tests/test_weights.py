"""Reading, checking and writing weights: formats, wrappers, mismatches, corrupt and unsafe files."""

import collections
import hashlib
import http.server
import os
import socket
import threading
import warnings

import pytest
import torch

import convzoo
import convzoo.pretrained.entries
import convzoo.weights
from convzoo.pretrained import register_weights
from convzoo.weights import (
    WeightsDownloadError,
    WeightsError,
    cached_path,
    read_state_dict,
    resolve_weights,
)


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
    assert [w.name for w in convzoo.list_weights("resnet20")] == ["resnet20.cifar10", "resnet20.test_run"]
    with pytest.raises(ValueError, match="already registered"):
        register_weights("resnet20.test_run", model="resnet20", source=path)
    with pytest.raises(WeightsError, match="registered for resnet20, not for resnet32"):
        convzoo.create_model("resnet32", weights="resnet20.test_run")
    register_weights("resnet20.tampered", model="resnet20", source=path, sha256="0" * 64)
    with pytest.raises(WeightsError, match="expects 0000"):
        convzoo.create_model("resnet20", weights="resnet20.tampered")


@pytest.fixture
def http_server(tmp_path):
    """Serves ``tmp_path/site`` on a loopback port; yields (site folder, base URL, list of requested paths)."""
    site = tmp_path / "site"
    site.mkdir()
    requested = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=os.fspath(site), **kwargs)

        def do_GET(self):
            requested.append(self.path)
            super().do_GET()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield site, f"http://127.0.0.1:{server.server_address[1]}", requested
    server.shutdown()
    server.server_close()


def two_nets_with_one_file_name(folder_a, folder_b):
    """Two different resnet20s saved under the same file name in two folders."""
    torch.manual_seed(1)
    a = convzoo.create_model("resnet20").eval()
    torch.manual_seed(2)
    b = convzoo.create_model("resnet20").eval()
    folder_a.mkdir(parents=True, exist_ok=True)
    folder_b.mkdir(parents=True, exist_ok=True)
    return (
        a,
        convzoo.save_weights(a, folder_a / "w.safetensors"),
        b,
        convzoo.save_weights(b, folder_b / "w.safetensors"),
    )


def test_file_url_is_read_in_place(tmp_path, monkeypatch):
    monkeypatch.setenv("CONVZOO_HOME", os.fspath(tmp_path / "home"))
    a, path_a, b, path_b = two_nets_with_one_file_name(tmp_path / "a", tmp_path / "b")
    assert same_outputs(a, convzoo.create_model("resnet20", weights=path_a.as_uri()))
    assert same_outputs(b, convzoo.create_model("resnet20", weights=path_b.as_uri()))
    assert resolve_weights(path_b.as_uri()) == path_b
    assert not (tmp_path / "home").exists()  # nothing copied
    with pytest.raises(FileNotFoundError, match=r"weights URL file:///nonexistent/w.pth names /nonexistent/w.pth"):
        resolve_weights("file:///nonexistent/w.pth")


def test_download_cache_is_keyed_on_the_whole_url(tmp_path, monkeypatch, http_server):
    monkeypatch.setenv("CONVZOO_HOME", os.fspath(tmp_path / "home"))
    site, base, requested = http_server
    a, _, b, _ = two_nets_with_one_file_name(site / "a", site / "b")
    assert same_outputs(a, convzoo.create_model("resnet20", weights=f"{base}/a/w.safetensors"))
    assert same_outputs(b, convzoo.create_model("resnet20", weights=f"{base}/b/w.safetensors"))
    assert same_outputs(a, convzoo.create_model("resnet20", weights=f"{base}/a/w.safetensors"))
    assert requested == ["/a/w.safetensors", "/b/w.safetensors"]  # the second load of a came from the cache
    cached_a, cached_b = cached_path(f"{base}/a/w.safetensors"), cached_path(f"{base}/b/w.safetensors")
    assert cached_a.name == cached_b.name == "w.safetensors" and cached_a != cached_b
    assert cached_a.is_file() and cached_b.is_file()


def test_url_sha256_is_checked(tmp_path, monkeypatch, http_server, net):
    monkeypatch.setenv("CONVZOO_HOME", os.fspath(tmp_path / "home"))
    site, base, _ = http_server
    path = convzoo.save_weights(net, site / "r20.safetensors")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert same_outputs(net, convzoo.create_model("resnet20", weights=f"{base}/r20.safetensors#sha256={digest}"))
    assert same_outputs(net, convzoo.create_model("resnet20", weights=f"{path.as_uri()}#sha256={digest[:10]}"))
    with pytest.raises(WeightsError, match=r"SHA-256 mismatch: the file has [0-9a-f]{64}, but the URL's '#sha256="):
        convzoo.create_model("resnet20", weights=f"{path.as_uri()}#sha256={'0' * 64}")
    # torchvision's convention: the file name carries the first hex digits of the SHA-256.
    named = site / f"r20-{digest[:8]}.safetensors"
    named.write_bytes(path.read_bytes())
    assert same_outputs(net, convzoo.create_model("resnet20", weights=f"{base}/{named.name}"))
    wrong = site / "r20-0badc0de.safetensors"
    wrong.write_bytes(path.read_bytes())
    url = f"{base}/{wrong.name}"
    with pytest.raises(WeightsError, match=r"expects 0badc0de; refusing to load it .*downloaded copy was deleted"):
        convzoo.create_model("resnet20", weights=url)
    assert not cached_path(url).exists()
    with pytest.raises(WeightsError, match="the only fragment understood is '#sha256=<hex digits>'"):
        resolve_weights(f"{path.as_uri()}#md5=abc")


def test_registered_url_hash_is_checked(tmp_path, net):
    path = convzoo.save_weights(net, tmp_path / "r20.safetensors")
    register_weights("resnet20.url_tampered", model="resnet20", source=path.as_uri(), sha256="f" * 64)
    with pytest.raises(WeightsError, match=r"registered weights 'resnet20.url_tampered' expects f{64}"):
        convzoo.create_model("resnet20", weights="resnet20.url_tampered")


def test_failed_download_says_what_to_do(tmp_path, monkeypatch, http_server):
    monkeypatch.setenv("CONVZOO_HOME", os.fspath(tmp_path / "home"))
    _, base, _ = http_server
    url = f"{base}/missing.pth"
    with pytest.raises(WeightsDownloadError) as info:
        convzoo.create_model("resnet20", weights=url)
    message = str(info.value)
    assert f"could not download weights from {url}: HTTP 404" in message
    assert f"put it at {cached_path(url)}" in message and "pass its local path as weights=" in message
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}/w.pth"
    with pytest.raises(WeightsDownloadError, match=rf"could not download weights from {closed}: .*refused"):
        resolve_weights(closed)


def test_a_file_that_is_no_checkpoint_says_what_it_holds(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("hello\n")
    with pytest.raises(
        WeightsError,
        match=r"notes.txt is neither a safetensors file nor a PyTorch checkpoint: it holds text, starting 'hello\\n'",
    ):
        convzoo.create_model("resnet20", weights=text)
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    with pytest.raises(WeightsError, match="neither a safetensors file nor a PyTorch checkpoint: the file is empty"):
        read_state_dict(empty)
    binary = tmp_path / "noise.bin"
    binary.write_bytes(bytes(range(250, 256)) + bytes(10))
    with pytest.raises(WeightsError, match="PyTorch checkpoint: it starts with the bytes fa fb fc fd fe ff 00"):
        read_state_dict(binary)


def test_safetensors_content_is_read_whatever_the_suffix(tmp_path, net):
    path = convzoo.save_weights(net, tmp_path / "r20.safetensors")
    renamed = tmp_path / "r20.bin"
    renamed.write_bytes(path.read_bytes())
    assert same_outputs(net, convzoo.create_model("resnet20", weights=renamed))


def test_another_architecture_is_an_error_without_a_classifier_warning(tmp_path):
    wide = convzoo.create_model("resnet20", widen_factor=2)
    path = tmp_path / "wide.pth"
    torch.save(wide.state_dict(), path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(WeightsError) as info:
            convzoo.create_model("resnet20", weights=path)
    message = str(info.value)
    assert "do not fit resnet20" in message and "another architecture or configuration than resnet20" in message
    assert "layer1.0.conv1.weight: checkpoint (32, 16, 3, 3) vs model (16, 16, 3, 3)" in message
    own = convzoo.create_model("resnet20").state_dict()
    differing = [k for k, v in wide.state_dict().items() if v.shape != own[k].shape]
    assert "fc.weight" in differing and f"wrong shape ({len(differing)})" in message  # the classifier is counted too


def test_pretrained_means_the_default_registered_weights(tmp_path, monkeypatch, net):
    monkeypatch.setattr(convzoo.pretrained.entries, "_WEIGHTS", {})
    monkeypatch.setattr(convzoo.pretrained.entries, "_loaded", True)  # without the built-in entries
    assert convzoo.list_models(pretrained=True) == []
    with pytest.raises(WeightsError, match=r"resnet20: no weights are registered for it[\s\S]*weights='path/to/file"):
        convzoo.create_model("resnet20", pretrained=True)
    torch.manual_seed(0)
    assert same_outputs(convzoo.create_model("resnet20", pretrained=False), net)
    first = convzoo.save_weights(net, tmp_path / "first.safetensors")
    register_weights("resnet20.first", model="resnet20", source=first)
    register_weights("resnet20.second", model="resnet20", source=tmp_path / "missing.safetensors")
    assert same_outputs(net, convzoo.create_model("resnet20", pretrained=True))
    assert convzoo.list_models(pretrained=True) == ["resnet20"]
    assert convzoo.list_models("resnet3*", pretrained=True) == []
    assert "resnet32" in convzoo.list_models("resnet3*", pretrained=False)
    with pytest.raises(TypeError, match="give pretrained=True or weights='resnet20.second', not both"):
        convzoo.create_model("resnet20", pretrained=True, weights="resnet20.second")
