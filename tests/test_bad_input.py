"""Every bad input gets a message of ours that says what is wrong, never a raw PyTorch or Python error.

One table: what the user did, the call, the exception it must raise and a regular expression its message must match.
A new bad input is a new row.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

import convzoo
import convzoo.cli
from convzoo.data import load_dataset
from convzoo.weights import WeightsError

PACKAGE = Path(convzoo.__file__).resolve().parent


class CommandFailed(Exception):
    """The `convzoo` command ended with a non-zero status; ``args`` are (status, standard error)."""


def cli(*argv: str) -> None:
    """Run ``convzoo ARGV`` in this process; raise `CommandFailed` with its standard error if it fails."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            status = convzoo.cli.main(list(argv))
        except SystemExit as e:
            status = e.code
    if status:
        raise CommandFailed(status, err.getvalue())


@dataclass(frozen=True)
class Bad:
    """A bad input: what the user did, the call (given the folder of prepared files), what it must raise."""

    did: str
    call: Callable[[Path], object]
    error: type[BaseException]
    message: str


def model(name: str, **kwargs: object) -> torch.nn.Module:
    return convzoo.create_model(name, **kwargs).eval()


CASES = [
    # Model names and keywords.
    Bad(
        "misspelt model name",
        lambda d: convzoo.create_model("resnt50"),
        KeyError,
        r"^unknown model name 'resnt50'; did you mean resnet50\b",
    ),
    Bad(
        "unknown name, nothing close",
        lambda d: convzoo.get_model_card("zzz"),
        KeyError,
        r"^unknown model name 'zzz'; see convzoo.list_models\(\)",
    ),
    Bad(
        "misspelt keyword",
        lambda d: convzoo.create_model("resnet20", dropout=0.1),
        TypeError,
        r"^resnet20 got unexpected keyword argument\(s\) 'dropout' \(did you mean 'drop_rate'\?\); accepted keys: ",
    ),
    Bad(
        "num_class for num_classes",
        lambda d: convzoo.create_model("vgg11", num_class=3),
        TypeError,
        r"^vgg11 got unexpected keyword argument\(s\) 'num_class'.*accepted keys: num_classes, ",
    ),
    Bad(
        "num_classes as a string",
        lambda d: convzoo.create_model("resnet20", num_classes="10"),
        ValueError,
        r"^resnet20: num_classes must be a non-negative int; got '10'$",
    ),
    Bad(
        "in_chans as a float",
        lambda d: convzoo.create_model("resnet20", in_chans=3.0),
        ValueError,
        r"^resnet20: in_chans must be a positive int; got 3.0$",
    ),
    Bad(
        "negative class count for reset_classifier",
        lambda d: model("resnet20").reset_classifier(-2),
        ValueError,
        r"^resnet20: num_classes must be a non-negative int; got -2$",
    ),
    Bad(
        "out_indices without features_only",
        lambda d: convzoo.create_model("resnet20", out_indices=(1,)),
        TypeError,
        r"^resnet20: out_indices only applies with features_only=True$",
    ),
    Bad(
        "feature index out of range",
        lambda d: convzoo.create_model("resnet20", features_only=True, out_indices=[7]),
        ValueError,
        r"^feature index 7 is out of range; the network has 4 tap points \(0..3\)$",
    ),
    Bad(
        "pretrained=True without registered weights",
        lambda d: convzoo.create_model("resnet110", pretrained=True),
        WeightsError,
        r"^resnet110: no weights are registered for it.*weights='path/to/file.safetensors'",
    ),
    Bad(
        "a number as list_models' pattern",
        lambda d: convzoo.list_models(42),
        TypeError,
        r"^list_models: pattern must be a shell-style pattern or a list of them; got 42$",
    ),
    Bad(
        "a misspelt name to count parameters of",
        lambda d: convzoo.count_params("resnt20"),
        KeyError,
        r"^unknown model name 'resnt20'; did you mean resnet20\b",
    ),
    Bad(
        "something that is no network to count parameters of",
        lambda d: convzoo.count_params(42),
        TypeError,
        r"^count_params takes an nn.Module or a registered model name; got int$",
    ),
    # Inputs of the wrong shape.
    Bad(
        "one image without a batch dimension",
        lambda d: model("resnet20")(torch.randn(3, 32, 32)),
        ValueError,
        r"^resnet20 expects a batch of shape \(N, 3, H, W\); got \(3, 32, 32\) \(add a batch dimension",
    ),
    Bad(
        "grey images into a colour network",
        lambda d: model("resnet20")(torch.randn(2, 1, 32, 32)),
        ValueError,
        r"^resnet20 expects a batch of shape \(N, 3, H, W\); got \(2, 1, 32, 32\)$",
    ),
    Bad(
        "colour images into LeNet-5",
        lambda d: model("lenet5")(torch.randn(2, 3, 32, 32)),
        ValueError,
        r"^lenet5 expects a batch of shape \(N, 1, H, W\); got \(2, 3, 32, 32\)$",
    ),
    Bad(
        "a numpy array instead of a tensor",
        lambda d: model("resnet20")(torch.randn(1, 3, 32, 32).numpy()),
        TypeError,
        r"^resnet20 expects a torch.Tensor batch of shape \(N, 3, H, W\); got ndarray \(convert with torch.as_tensor\)",
    ),
    Bad(
        "8-bit pixels straight from an image file",
        lambda d: model("resnet20")(torch.zeros(1, 3, 32, 32, dtype=torch.uint8)),
        TypeError,
        r"^resnet20 expects floating-point images; got torch.uint8 \(convert and normalise first",
    ),
    Bad(
        "a double-precision batch into a single-precision network",
        lambda d: model("resnet20")(torch.zeros(1, 3, 32, 32, dtype=torch.float64)),
        TypeError,
        r"^resnet20 holds torch.float32 weights but got a torch.float64 batch; convert one to the other",
    ),
    Bad(
        "images too small for the network's strides",
        lambda d: model("resnet18")(torch.randn(1, 3, 8, 8)),
        ValueError,
        r"^resnet18 needs images of at least 32x32 \(it downsamples by 32\); got 8x8",
    ),
    Bad(
        "images too small for a feature extractor",
        lambda d: model("resnet18", features_only=True)(torch.randn(1, 3, 16, 16)),
        ValueError,
        r"^resnet18 needs images of at least 32x32",
    ),
    # Weights files.
    Bad(
        "weights file that does not exist",
        lambda d: convzoo.create_model("resnet20", weights=d / "nope.pth"),
        FileNotFoundError,
        r"nope.pth' is neither an existing file nor a registered weights name; weights registered for resnet20: ",
    ),
    Bad(
        "a folder as the weights file",
        lambda d: convzoo.create_model("resnet20", weights=d / "empty"),
        FileNotFoundError,
        r"empty' is neither an existing file nor a registered weights name; weights registered for resnet20: ",
    ),
    Bad(
        "a text file as the weights file",
        lambda d: convzoo.create_model("resnet20", weights=d / "notes.txt"),
        WeightsError,
        r"notes.txt is neither a safetensors file nor a PyTorch checkpoint: it holds text, starting 'hello",
    ),
    Bad(
        "an empty weights file",
        lambda d: convzoo.read_state_dict(d / "empty.pth"),
        WeightsError,
        r"empty.pth is neither a safetensors file nor a PyTorch checkpoint: the file is empty$",
    ),
    Bad(
        "a truncated PyTorch checkpoint",
        lambda d: convzoo.create_model("resnet20", weights=d / "cut.pth"),
        WeightsError,
        r"cut.pth is not a readable PyTorch checkpoint \(truncated or corrupt\?\)",
    ),
    Bad(
        "a truncated safetensors file",
        lambda d: convzoo.create_model("resnet20", weights=d / "cut.safetensors"),
        WeightsError,
        r"cut.safetensors is not a readable safetensors file \(truncated or corrupt\?\)",
    ),
    Bad(
        "a checkpoint holding arbitrary Python objects",
        lambda d: convzoo.create_model("resnet20", weights=d / "evil.pth"),
        WeightsError,
        r"evil.pth holds Python objects other than tensors and plain containers; refusing to unpickle it",
    ),
    Bad(
        "a checkpoint of a deeper network",
        lambda d: convzoo.create_model("resnet32", weights=d / "resnet20.pth"),
        WeightsError,
        r"do not fit resnet32:\n  missing from the checkpoint \(72\):",
    ),
    Bad(
        "a checkpoint of a wider network (its classifier differs too)",
        lambda d: convzoo.create_model("resnet20", weights=d / "resnet20_wide.pth"),
        WeightsError,
        r"do not fit resnet20:[\s\S]*another architecture or configuration than resnet20",
    ),
    Bad(
        "a number as the weights",
        lambda d: convzoo.load_weights(model("resnet20"), 42),
        TypeError,
        r"^weights must be a file path, a URL or a registered weights name .*; got int$",
    ),
    Bad(
        "an unsupported URL scheme",
        lambda d: convzoo.create_model("resnet20", weights="ftp://example.org/w.pth"),
        WeightsError,
        r"^weights 'ftp://example.org/w.pth': only http://, https:// and file:// URLs are supported",
    ),
    Bad(
        "a file:// URL to nothing",
        lambda d: convzoo.create_model("resnet20", weights=(d / "nope.pth").as_uri()),
        FileNotFoundError,
        r"^weights URL file://.*nope.pth names .*nope.pth, which is not an existing file$",
    ),
    Bad(
        "a URL whose file does not match its #sha256",
        lambda d: convzoo.create_model("resnet20", weights=f"{(d / 'resnet20.pth').as_uri()}#sha256={'0' * 64}"),
        WeightsError,
        r"SHA-256 mismatch: the file has [0-9a-f]{64}, but the URL's '#sha256=' fragment expects 0{64}",
    ),
    Bad(
        "saving weights without the .safetensors suffix",
        lambda d: convzoo.save_weights(model("resnet20"), d / "out.pth"),
        ValueError,
        r"^weights are saved as safetensors; give a path ending in .safetensors, not 'out.pth'$",
    ),
    Bad(
        "saving weights below a file",
        lambda d: convzoo.save_weights(model("resnet20"), d / "notes.txt" / "w.safetensors"),
        NotADirectoryError,
        r"^cannot save weights to .*notes.txt/w.safetensors: .*notes.txt is a file, not a folder$",
    ),
    # Data sets.
    Bad(
        "a named data set that is not on disk",
        lambda d: load_dataset("cifar10", root=d / "empty"),
        FileNotFoundError,
        r"^data set 'cifar10' \(CIFAR-10.*\) not found: looked in .*\nExpected files:",
    ),
    Bad(
        "an unknown data set name",
        lambda d: load_dataset("cifar11"),
        ValueError,
        r"^unknown data set 'cifar11': known names are .*cifar10",
    ),
    Bad(
        "a data path that does not exist",
        lambda d: load_dataset(d / "nope"),
        FileNotFoundError,
        r"^no such file or folder: .*nope$",
    ),
    Bad(
        "an empty image folder",
        lambda d: load_dataset(d / "empty"),
        FileNotFoundError,
        r"empty holds no class folders \(expected .*empty/<class>/<image files>\)$",
    ),
    Bad(
        "a class folder without images",
        lambda d: load_dataset(d / "no_images"),
        ValueError,
        r"^class folder .*no_images/cat holds no images \(.png, .jpg",
    ),
    Bad(
        "an image file that is not an image",
        lambda d: load_dataset(d / "bad_image"),
        ValueError,
        r"^cannot read image .*a.png: .* skip unreadable files with skip_corrupt=True",
    ),
    Bad(
        "a text file as the data set",
        lambda d: load_dataset(d / "notes.txt"),
        ValueError,
        r"notes.txt is neither an .npz file nor an image folder$",
    ),
    Bad(
        "a channel conversion that does not exist",
        lambda d: load_dataset("digits", in_chans=2),
        ValueError,
        r"^digits have 1 channel\(s\); cannot convert them to 2",
    ),
    # The command line.
    Bad("no command", lambda d: cli(), CommandFailed, r"convzoo: error: the following arguments are required: "),
    Bad("unknown command", lambda d: cli("fly"), CommandFailed, r"convzoo: error: argument \w+: invalid choice: 'fly'"),
    Bad(
        "misspelt model name for `convzoo info`",
        lambda d: cli("info", "resnt50"),
        CommandFailed,
        r"^convzoo: error: unknown model name 'resnt50'; did you mean resnet50\b",
    ),
    Bad(
        "misspelt model name for `convzoo summary`",
        lambda d: cli("summary", "resnt50"),
        CommandFailed,
        r"^convzoo: error: unknown model name 'resnt50'; did you mean resnet50\b",
    ),
    Bad(
        "misspelt model name for `convzoo train`",
        lambda d: cli("train", "resnt20", "--data", "digits"),
        CommandFailed,
        r"^convzoo: error: unknown model name 'resnt20'; did you mean resnet20\b",
    ),
    Bad(
        "an input size that is no size",
        lambda d: cli("summary", "resnet20", "--input", "3xabc"),
        CommandFailed,
        r"error: argument --input: input size '3xabc' has a dimension 'abc' that is not a whole number",
    ),
    Bad(
        "an input too small for the network",
        lambda d: cli("summary", "resnet20", "--input", "3x1x1"),
        CommandFailed,
        r"^convzoo: error: resnet20\b.*needs images of at least 4x4",
    ),
    Bad(
        "an unknown sort key",
        lambda d: cli("models", "--sort", "speed"),
        CommandFailed,
        r"error: argument --sort: invalid choice: 'speed'",
    ),
    Bad(
        "a text file as weights for `convzoo rf`",
        lambda d: cli("rf", "resnet20", "--weights", os.fspath(d / "notes.txt")),
        CommandFailed,
        r"^convzoo: error: .*notes.txt is neither a safetensors file nor a PyTorch checkpoint",
    ),
    Bad(
        "a text file as the checkpoint to evaluate",
        lambda d: cli("eval", os.fspath(d / "notes.txt")),
        CommandFailed,
        r"^convzoo: error: .*notes.txt is not a convzoo training checkpoint \(a torch.save file\): it holds text",
    ),
    Bad(
        "an unknown layer for `convzoo rf`",
        lambda d: cli("rf", "resnet20", "--layer", "nolayer"),
        CommandFailed,
        r"^convzoo: error: resnet20 has no layer named 'nolayer'; did you mean layer3",
    ),
    Bad(
        "an empty folder as training data",
        lambda d: cli("train", "resnet20", "--data", os.fspath(d / "empty")),
        CommandFailed,
        r"^convzoo: error: .*empty holds no class folders",
    ),
    Bad(
        "an unknown recipe",
        lambda d: cli("train", "resnet20", "--recipe", "nonesuch"),
        CommandFailed,
        r"^convzoo: error: unknown recipe 'nonesuch'; known recipes: ",
    ),
    Bad(
        "a missing checkpoint for `convzoo eval`",
        lambda d: cli("eval", os.fspath(d / "nope.pt")),
        CommandFailed,
        r"^convzoo: error: checkpoint .*nope.pt does not exist$",
    ),
    Bad(
        "plain weights for `convzoo eval`",
        lambda d: cli("eval", os.fspath(d / "resnet20.pth")),
        CommandFailed,
        r"^convzoo: error: .*resnet20.pth is not a convzoo training checkpoint .*create_model\(name, weights=path\)",
    ),
]


class Payload:
    """An arbitrary Python object: unpickling it would run code of the file's choosing."""

    def __reduce__(self):
        return (os.system, ("echo pwned",))


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    """A folder of bad (and a few good) files for the table's calls."""
    d = tmp_path_factory.mktemp("bad-input")
    (d / "empty").mkdir()
    (d / "notes.txt").write_text("hello\nthese are notes, not weights\n")
    (d / "empty.pth").write_bytes(b"")
    torch.manual_seed(0)
    net = convzoo.create_model("resnet20")
    torch.save(net.state_dict(), d / "resnet20.pth")
    (d / "cut.pth").write_bytes((d / "resnet20.pth").read_bytes()[:3000])
    good = convzoo.save_weights(net, d / "resnet20.safetensors")
    (d / "cut.safetensors").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    torch.save({"state_dict": net.state_dict(), "extra": Payload()}, d / "evil.pth")
    torch.save(convzoo.create_model("resnet20", widen_factor=2).state_dict(), d / "resnet20_wide.pth")
    (d / "no_images" / "cat").mkdir(parents=True)
    (d / "bad_image" / "cat").mkdir(parents=True)
    (d / "bad_image" / "cat" / "a.png").write_text("not a PNG")
    return d


def message_of(error: BaseException) -> str:
    if isinstance(error, CommandFailed):
        return error.args[1].strip()
    if isinstance(error, KeyError) and error.args:  # str() of a KeyError is the repr of its argument
        return str(error.args[0])
    return str(error)


def raised_in_convzoo(error: BaseException) -> bool:
    """Whether the innermost frame that raised ``error`` is convzoo's code, not PyTorch's or Python's."""
    frame = traceback.extract_tb(error.__traceback__)[-1]
    return Path(frame.filename).resolve().is_relative_to(PACKAGE)


@pytest.mark.parametrize("case", CASES, ids=[c.did for c in CASES])
def test_bad_input_gets_our_message(case: Bad, files: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # a command that got as far as writing would write here
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a misleading warning before the error counts as a failure too
        with pytest.raises(case.error) as info:
            case.call(files)
    message = message_of(info.value)
    assert re.search(case.message, message), f"{case.did}: got {type(info.value).__name__}: {message}"
    if isinstance(info.value, CommandFailed):
        status, stderr = info.value.args
        assert status == 2 and "Traceback" not in stderr
        assert re.match(r"(usage: [\s\S]*\n)?convzoo( \w+)?: error: ", stderr), stderr
    else:
        assert raised_in_convzoo(info.value), f"{case.did}: raised outside convzoo: {message}"


def test_the_table_names_each_case_once() -> None:
    names = [c.did for c in CASES]
    assert len(names) == len(set(names))
