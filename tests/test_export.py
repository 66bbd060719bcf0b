"""Export for deployment: ONNX (run with onnxruntime), torch.export programs, TorchScript, batch-norm folding.

Every exported file is loaded back here, independently of the exporter's own check, run on a batch of another size
than the one it was traced with, and compared with the model in evaluation mode. Batch-norm statistics are
calibrated on a random batch and affine parameters randomised first, so that folding and export face non-trivial
normalisations.

The default run covers one small variant of every family file in src/convzoo/models (some shrunk through their
architecture settings); the slow run covers those samples as registered, and the zoo run (make test-zoo) every
registered network at its smallest input.
"""

import copy
import re
import sys
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn as nn

import convzoo
from convzoo.cli import main
from convzoo.export import ExportError, conv_bn_pairs, export_model, fold_batchnorm
from convzoo.train import save_checkpoint
from convzoo.weights import WeightsError

MODELS_DIR = Path(convzoo.__file__).parent / "models"

# One small variant per family file, with architecture settings that keep the export quick where the family has them.
FAMILIES = {
    "alexnet": ("alexnet_2012", {"hidden": (64, 64)}),  # two towers and local response normalisation
    "bagnet": ("bagnet9", {"layers": (1, 1, 1, 1)}),
    "densenet": ("densenet_40_12", {"block_config": (2, 2, 2)}),
    "fractalnet": ("fractalnet_20", {"channels": (16, 32, 32, 64, 64), "columns": 2}),
    "googlenet": ("googlenet", {}),
    "highway": ("highway_cifar_19", {}),
    "inception_v3": ("inception_v3", {"aux_logits": False}),
    "lenet": ("lenet5", {}),
    "mobilenet": ("mobilenet_v1_025", {}),
    "nasnet": ("nasnet_a_mobile", {"cells_per_stack": 1}),
    "nin": ("nin", {}),
    "resnet": ("se_resnet18", {"layers": (1, 1, 1, 1)}),  # squeeze-and-excitation gates on the residual branch
    "squeezenet": ("squeezenet1_1", {}),
    "vgg": ("vgg11_bn", {"hidden": (64, 64)}),
}
FAST = [pytest.param(name, overrides, id=name) for name, overrides in FAMILIES.values()]
# ONNX export runs torch.export on the same graphs, so by default a gated residual network covers the pt2 and
# TorchScript paths; the slow run exports each family's sample as built, the zoo run every network, in every format.
PROGRAM_FAST = [p for p in FAST if p.id == "se_resnet18"]
# Folding by default for families with batch norms: all folded (ResNet, VGG, MobileNet, BagNet), some (FractalNet's
# joins) or none (DenseNet's BN-ReLU-conv). GoogLeNet, Inception v3 and NASNet fold in the slow run: finding the pairs
# traces the network, which takes long for them. AlexNet, LeNet-5, NiN, SqueezeNet and the highway networks have no
# batch norms (`test_families_without_batch_norm_have_nothing_to_fold`).
NO_BATCH_NORM = ("alexnet", "highway", "lenet", "nin", "squeezenet")
FOLD_SLOW_ONLY = ("googlenet", "inception_v3", "nasnet")
FOLD_FAST = [
    pytest.param(name, overrides, id=name)
    for family, (name, overrides) in FAMILIES.items()
    if family not in NO_BATCH_NORM + FOLD_SLOW_ONLY
]
# Each family's sample as built runs in the slow set; every other registered model in the zoo run (make test-zoo).
_SAMPLES = {name for name, _ in FAMILIES.values()}
ZOO = [
    pytest.param(name, {}, id=name, marks=pytest.mark.slow if name in _SAMPLES else pytest.mark.zoo)
    for name in convzoo.list_models()
]
ATOL = 1e-4


def randomize_norms(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every batch norm random running statistics and affine parameters (a fresh one is nearly an identity).

    Each channel's gain gamma / sqrt(var) stays within 10% of 1, so that a thousand layers without a normalised
    residual stream (pre-activation ResNet-1001) keep their outputs finite.
    """
    generator = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
            n = m.num_features
            m.running_mean.copy_(0.1 * torch.randn(n, generator=generator))
            m.running_var.copy_(0.5 + torch.rand(n, generator=generator))
            if m.affine:
                gain = 0.9 + 0.2 * torch.rand(n, generator=generator)
                m.weight.data.copy_(gain * (m.running_var + m.eps).sqrt())
                m.bias.data.copy_(0.1 * torch.randn(n, generator=generator))
    return model


def build(name: str, overrides: dict) -> tuple[nn.Module, tuple[int, int, int]]:
    """The network in evaluation mode with randomised batch norms, and its smallest input (at least 8x8)."""
    torch.manual_seed(0)
    model = convzoo.create_model(name, **overrides)
    side = max(model.min_input_size, 8)
    calibrate(model, (model.in_chans, side, side))
    return model.eval(), (model.in_chans, side, side)


def calibrate(model: nn.Module, size: tuple[int, int, int]) -> None:
    """Set every batch norm's running statistics to those of a random batch, then randomise its affine parameters.

    Fresh statistics (mean 0, variance 1) normalise nothing, and the untrained ResNet-1202 then overflows to NaN;
    calibrated ones keep every network's outputs finite and make folding and export face realistic statistics.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.momentum = 1.0
    with torch.no_grad():
        model.train()(torch.randn(4, *size, generator=torch.Generator().manual_seed(3)))
    generator = torch.Generator().manual_seed(0)
    for m in norms:
        m.momentum = 0.1
        if m.affine:
            m.weight.data.copy_(0.9 + 0.2 * torch.rand(m.num_features, generator=generator))
            m.bias.data.copy_(0.1 * torch.randn(m.num_features, generator=generator))


def assert_matches(got: torch.Tensor, want: torch.Tensor) -> None:
    """``got`` equals ``want`` to ATOL relative to the output's scale (at least 1)."""
    assert torch.isfinite(want).all(), "the network's own outputs are not finite"
    assert got.shape == want.shape
    scale = max(1.0, want.abs().max().item())
    diff = (got - want).abs().max().item()
    assert diff <= ATOL * scale, f"max abs difference {diff:.3g} exceeds {ATOL * scale:.3g}"


def reference(model: nn.Module, size: tuple[int, int, int], batch: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(batch, *size, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        return x, model(x)


def run_onnx(path: Path, x: torch.Tensor) -> torch.Tensor:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])


def run_pt2(path: Path, x: torch.Tensor) -> torch.Tensor:
    program = torch.export.load(str(path))
    with torch.no_grad():
        return program.module()(x)


def run_torchscript(path: Path, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # TorchScript is deprecated in favour of torch.export
        return torch.jit.load(str(path))(x)


RUNNERS = {"onnx": run_onnx, "pt2": run_pt2, "torchscript": run_torchscript}
SUFFIX = {"onnx": ".onnx", "pt2": ".pt2", "torchscript": ".pt"}


def check_export(name: str, overrides: dict, format: str, tmp_path: Path) -> None:
    model, size = build(name, overrides)
    path = tmp_path / f"{name}{SUFFIX[format]}"
    result = export_model(model, path, format=format, input_size=size, batch_size=2)
    assert result.path == path and path.is_file()
    assert result.input_shape == (2, *size) and result.dynamic_batch
    assert result.max_abs_diff is not None and result.max_abs_diff <= result.tolerance
    assert not model.training
    x, want = reference(model, size)  # batch 5: the file was traced with 2, so its batch axis must be dynamic
    assert_matches(RUNNERS[format](path, x), want)
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no temporary file left
    path.unlink()  # pytest keeps the folders of recent runs, and some networks take half a gigabyte


def check_fold(name: str, overrides: dict) -> None:
    model, size = build(name, overrides)
    norms = sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    folded = fold_batchnorm(model, size)
    left = sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in folded.modules())
    assert norms - left == len(conv_bn_pairs(model, size))
    assert sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()) == norms  # untouched
    # Compared in float64: float32 rounding alone drifts by more than 1e-5 through a hundred layers (Inception v3,
    # NASNet), whichever of the two networks runs; folding itself must not add to it.
    x = torch.randn(2, *size, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    with torch.no_grad():
        want = copy.deepcopy(model).double()(x)
        got = folded.double()(x)
    scale = max(1.0, want.abs().max().item())
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5 * scale)


def test_every_family_file_is_covered():
    files = {p.stem for p in MODELS_DIR.glob("*.py") if not p.stem.startswith("_") and p.stem != "base"}
    assert files == set(FAMILIES), f"families without a fast export test: {sorted(files - set(FAMILIES))}"
    for family, (name, overrides) in FAMILIES.items():
        with torch.device("meta"):
            assert type(convzoo.create_model(name, **overrides)).__module__ == f"convzoo.models.{family}"


@pytest.mark.parametrize(("name", "overrides"), FAST)
def test_onnx_runs_in_onnxruntime_as_in_pytorch(name, overrides, tmp_path):
    check_export(name, overrides, "onnx", tmp_path)


@pytest.mark.parametrize(("name", "overrides"), PROGRAM_FAST)
@pytest.mark.parametrize("format", ["pt2", "torchscript"])
def test_program_and_torchscript_match_pytorch(name, overrides, format, tmp_path):
    check_export(name, overrides, format, tmp_path)


@pytest.mark.parametrize(("name", "overrides"), FOLD_FAST)
def test_folding_batch_norm_keeps_the_outputs(name, overrides):
    check_fold(name, overrides)


def test_families_without_batch_norm_have_nothing_to_fold():
    for family in NO_BATCH_NORM:
        name, overrides = FAMILIES[family]
        with torch.device("meta"):
            model = convzoo.create_model(name, **overrides)
        assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()), family


@pytest.mark.parametrize(("name", "overrides"), ZOO)
@pytest.mark.parametrize("format", ["onnx", "pt2", "torchscript"])
def test_zoo_exports_match_pytorch(name, overrides, format, tmp_path):
    check_export(name, overrides, format, tmp_path)


@pytest.mark.parametrize(("name", "overrides"), ZOO)
def test_zoo_folding_keeps_the_outputs(name, overrides):
    check_fold(name, overrides)


# --- what folding folds ---------------------------------------------------------------------------------------------


class Branches(nn.Module):
    """Conv->BN (folded); conv whose output also feeds a residual sum (kept); conv->ReLU->BN (kept)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.conv2, self.bn2 = nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.conv3, self.bn3 = nn.Conv2d(8, 8, 1), nn.BatchNorm2d(8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn1(self.conv1(x))
        y = self.conv2(x)
        x = self.bn2(y) + y
        return self.bn3(torch.relu(self.conv3(x)))


def test_folding_folds_only_a_batch_norm_right_after_a_convolution():
    model = randomize_norms(Branches())
    assert conv_bn_pairs(model, (3, 8, 8)) == [("conv1", "bn1")]
    folded = fold_batchnorm(model, (3, 8, 8))
    assert isinstance(folded.bn1, nn.Identity) and folded.conv1.bias is not None
    assert isinstance(folded.bn2, nn.BatchNorm2d) and isinstance(folded.bn3, nn.BatchNorm2d)
    assert isinstance(model.bn1, nn.BatchNorm2d) and model.conv1.bias is None  # the original is untouched
    assert model.training and not folded.training
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model.eval()(x), rtol=0, atol=1e-5)


def test_folding_counts_in_the_zoo():
    # ResNet-20: every batch norm follows its convolution. Pre-activation ResNets normalise after the addition, and
    # DenseNet normalises before its convolutions (BN-ReLU-conv): those batch norms stay.
    assert len(conv_bn_pairs(convzoo.create_model("resnet20"))) == 19
    assert len(conv_bn_pairs(convzoo.create_model("preact_resnet18"))) == 8
    assert conv_bn_pairs(convzoo.create_model("densenet_40_12")) == []


# --- the command line, checkpoints, errors --------------------------------------------------------------------------


@pytest.fixture
def checkpoint(tmp_path):
    """A training checkpoint of a 3-class ResNet-20 trained at 16x16."""
    torch.manual_seed(0)
    model = randomize_norms(convzoo.create_model("resnet20", num_classes=3))
    state = {
        "model": {
            "name": "resnet20",
            "num_classes": 3,
            "in_chans": 3,
            "model_args": {},
            "state_dict": model.state_dict(),
        },
        "data": {
            "name": "shapes",
            "image_size": [3, 16, 16],
            "classes": ["a", "b", "c"],
            "mean": [0.5] * 3,
            "std": [0.25] * 3,
        },
    }
    return save_checkpoint(state, tmp_path / "run" / "best.pt"), model.eval()


def test_cli_exports_a_checkpoint_checked(checkpoint, tmp_path, capsys):
    path, model = checkpoint
    out = tmp_path / "deploy" / "shapes.onnx"
    assert main(["export", str(path), "--format", "onnx", "--fold-bn", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out} (onnx, resnet20, input 3x16x16, any batch size, 19 batch norms folded)" in printed
    assert "max abs difference to PyTorch" in printed
    x, want = reference(model, (3, 16, 16))
    assert_matches(run_onnx(out, x), want)


def test_cli_default_names_and_formats(checkpoint, tmp_path, capsys, monkeypatch):
    path, model = checkpoint
    assert main(["export", str(path), "--format", "torchscript", "--no-check"]) == 0
    written = path.with_name("best-torchscript.pt")  # not over the checkpoint, which is a .pt file too
    assert "not checked" in capsys.readouterr().out and written.is_file()
    x, want = reference(model, (3, 16, 16))
    assert_matches(run_torchscript(written, x), want)
    monkeypatch.chdir(tmp_path)
    args = ["export", "lenet5", "--format", "pt2", "--batch-size", "3", "--static-batch"]
    assert main(args) == 0
    assert "wrote lenet5.pt2 (pt2, lenet5, input 1x32x32, batch size 3)" in capsys.readouterr().out
    assert torch.export.load("lenet5.pt2").module()(torch.randn(3, 1, 32, 32)).shape == (3, 10)


def test_cli_help_shows_examples(capsys):
    with pytest.raises(SystemExit):
        main(["export", "--help"])
    assert "convzoo export resnet50 --format onnx" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["resnet20x"], "unknown model name 'resnet20x'; did you mean resnet20"),
        (["runs/none/best.pt"], "runs/none/best.pt does not exist"),
        (["resnet20", "--input-size", "3x2x2"], "resnet20 cannot run on an input of shape.*at least 4x4"),
    ],
)
def test_cli_bad_input_is_one_clear_line(args, message, capsys):
    assert main(["export", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("convzoo: error: ") and err.count("\n") == 1
    assert re.search(message, err), err


def test_cli_refuses_an_unknown_format(capsys):
    with pytest.raises(SystemExit):
        main(["export", "resnet20", "--format", "tflite"])
    assert "invalid choice: 'tflite'" in capsys.readouterr().err


def test_library_refuses_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="unknown export format 'tflite'; choose one of onnx, pt2, torchscript"):
        export_model("resnet20", tmp_path / "m.tflite", format="tflite")
    with pytest.raises(ValueError, match="batch_size must be a positive int; got 0"):
        export_model("resnet20", tmp_path / "m.onnx", batch_size=0)
    with pytest.raises(TypeError, match="an nn.Module, a registered model name or a training checkpoint; got int"):
        export_model(3, tmp_path / "m.onnx")
    with pytest.raises(ValueError, match="no input size given and the module has no model card"):
        export_model(nn.Conv2d(3, 3, 1), tmp_path / "m.pt", format="torchscript")
    assert list(tmp_path.iterdir()) == []


def test_tampered_checkpoints_are_refused(checkpoint, tmp_path, capsys):
    path, _ = checkpoint
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00" * 64)
    with pytest.raises(WeightsError, match="not a convzoo training checkpoint"):
        export_model(garbage, tmp_path / "out.onnx")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    assert main(["export", str(truncated), "--out", str(tmp_path / "out.onnx")]) == 2
    assert "is not a readable checkpoint" in capsys.readouterr().err
    state = torch.load(path, weights_only=True)
    state["model"]["state_dict"]["fc.weight"] = torch.zeros(4, 64)  # a classifier that does not fit
    swapped = save_checkpoint({k: v for k, v in state.items() if k != "format"}, tmp_path / "swapped.pt")
    with pytest.raises(WeightsError, match="fc.weight"):
        export_model(swapped, tmp_path / "out.onnx")
    assert not (tmp_path / "out.onnx").exists()


class DataDependent(nn.Module):
    """A network no exporter can follow: a branch on the input's values and a value read out as a Python number."""

    model_name = "data_dependent"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = float(x.abs().max())
        return x * scale if x.sum() > 0 else -x * scale


@pytest.mark.parametrize("format", ["onnx", "pt2", "torchscript"])
def test_a_network_that_cannot_be_exported_gets_a_clear_error(format, tmp_path):
    out = tmp_path / "model.bin"
    with pytest.raises(ExportError) as info:
        export_model(DataDependent(), out, format=format, input_size=(3, 8, 8))
    message = str(info.value)
    # torch.export refuses the branch; tracing follows one branch with the number frozen, which the check catches.
    reason = "differ from the network's" if format == "torchscript" else "data-dependent"
    assert message.startswith("data_dependent") and format in message and reason in message and "\n" not in message
    assert list(tmp_path.iterdir()) == []


def test_missing_onnx_packages_say_how_to_install(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(ImportError, match=r"pip install 'convzoo\[export\]'"):
        export_model("resnet20", tmp_path / "m.onnx")
    assert main(["export", "resnet20", "--out", str(tmp_path / "m.onnx")]) == 2
    assert "pip install 'convzoo[export]'" in capsys.readouterr().err
