"""The per-layer summary and the `convzoo` command."""

import subprocess
import sys

import pytest
import torch
import torch.nn as nn
import torchvision
from torch.utils.flop_counter import FlopCounterMode

import convzoo
from convzoo.analysis import effective_receptive_field, parse_input_size, receptive_fields
from convzoo.cli import main


def test_summary_totals_and_rows():
    s = convzoo.summary("resnet50", depth=2)
    assert s.total_params == 25_557_032
    assert s.total_macs == 4_089_184_256  # torchvision's documented 4.09 GFLOPS (multiply-adds)
    assert s.output_shape == (1, 1000)
    rows = {r.name: r for r in s.rows}
    assert rows["conv1"].output_shape == (1, 64, 112, 112) and rows["conv1"].params == 9408
    assert rows["conv1"].macs == 64 * 112 * 112 * 3 * 49
    assert rows["layer4"].output_shape == (1, 2048, 7, 7)
    assert rows["layer1.0"].depth == 2 and "layer1.0.conv1" not in rows
    names = [r.name for r in s.rows]
    assert names.index("layer1") < names.index("layer1.0")  # containers precede their contents
    assert sum(r.params for r in s.rows if r.depth == 1) == s.total_params
    assert sum(r.macs for r in s.rows if r.depth == 1) == s.total_macs
    text = str(s)
    assert "Multiply-adds per image: 4,089,184,256" in text and "25,557,032" in text


def test_summary_on_real_model_matches_meta_and_flop_counter():
    model = convzoo.create_model("resnext50_32x4d")
    real = convzoo.summary(model, (3, 64, 64), depth=1)
    meta = convzoo.summary("resnext50_32x4d", (3, 64, 64), depth=1)
    assert real.total_macs == meta.total_macs and real.total_params == meta.total_params
    reference = torchvision.models.resnext50_32x4d()
    with FlopCounterMode(display=False) as counter:
        reference(torch.zeros(1, 3, 64, 64))
    assert real.total_macs == counter.get_total_flops() // 2
    assert model.training  # summary restores the mode it found
    assert model.layer1[0].bn1.forward.__func__ is torch.nn.BatchNorm2d.forward


def test_summary_reused_module_counts_once():
    s = convzoo.summary("resnet20", depth=3)
    relu_rows = [r for r in s.rows if r.name == "layer1.0.relu"]
    assert len(relu_rows) == 2  # the block's ReLU runs twice; both calls are shown
    assert s.total_params == 269_722


def test_summary_bad_size_says_why():
    with pytest.raises(ValueError, match="at least 32x32"):
        convzoo.summary("resnet50", (3, 16, 16))


def test_cli_models(capsys):
    assert main(["models", "resnet*", "--sort", "params"]) == 0
    out = capsys.readouterr().out
    assert "resnet20" in out and "269,722" in out and "40,551,040" in out and "He et al." in out
    assert out.index("resnet20 ") < out.index("resnet1202") < out.index("resnet34 ")
    assert main(["models", "resnet1*", "--sort", "macs", "--reverse"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[2].startswith("resnet152")


def test_cli_summary_info_and_errors(capsys):
    assert main(["summary", "resnet20", "--input", "3x64x64", "--depth", "1"]) == 0
    out = capsys.readouterr().out
    assert "resnet20 at input 3x64x64" in out and "64x16x16" in out
    assert main(["info", "resnext29_8x64d"]) == 0
    out = capsys.readouterr().out
    assert "Aggregated Residual Transformations" in out and "CIFAR-10 top-1 error 3.65% (Table 7)" in out
    assert main(["summary", "resnet5"]) == 2
    assert "unknown model name 'resnet5'; did you mean" in capsys.readouterr().err
    assert main(["models", "nothing*"]) == 1
    for bad in ("1x3x64x64x2", "big", "0x32x32"):
        with pytest.raises(SystemExit):
            main(["summary", "resnet20", "--input", bad])
    err = capsys.readouterr().err
    assert "input size must be" in err and "not a whole number" in err and "below 1" in err


def test_console_script_runs():
    result = subprocess.run(
        [sys.executable, "-m", "convzoo.cli", "summary", "resnet56", "--depth", "1"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "Parameters: 853,018" in result.stdout


def test_summary_takes_every_form_of_input_size():
    expected = convzoo.summary("resnet20", (3, 32, 32), depth=1).total_macs
    for size in ((1, 3, 32, 32), (8, 3, 32, 32), torch.Size([1, 3, 32, 32]), 32, (32, 32), "1x3x32x32", "32"):
        s = convzoo.summary("resnet20", size, depth=1)
        assert s.input_size == (3, 32, 32) and s.total_macs == expected, size
    # Where the channels are left out they are the model's own.
    assert convzoo.summary("lenet5", 32, depth=1).input_size == (1, 32, 32)
    assert convzoo.summary(nn.Conv2d(5, 8, 3), 16).input_size == (5, 16, 16)
    assert convzoo.count_macs(nn.Conv2d(3, 8, 3, bias=False), (1, 3, 10, 10)) == 8 * 8 * 8 * 27
    assert convzoo.count_macs(nn.Conv2d(3, 8, 3, bias=False), 10) == 8 * 8 * 8 * 27
    stack = nn.Sequential(nn.Conv2d(2, 2, 3, padding=1), nn.Conv2d(2, 2, 3, padding=1))
    assert str(receptive_fields(stack, 16)["1"]) == "5"
    assert effective_receptive_field(stack, "1", (1, 2, 16, 16), samples=2).shape == (16, 16)


def test_parse_input_size():
    assert parse_input_size("1x3x224x224") == parse_input_size("3,224,224") == (3, 224, 224)
    assert parse_input_size("32x32") == parse_input_size(32) == (3, 32, 32)
    assert parse_input_size("32", in_chans=1) == parse_input_size((32, 32), in_chans=1) == (1, 32, 32)
    assert parse_input_size((3.0, 64, 64)) == (3, 64, 64)
    for bad in ("3x64x64x2x1", "big", "0x32x32", (3, 32.5, 32), (), (3, -1, 32), "3xx32"):
        with pytest.raises(ValueError, match="input size"):
            parse_input_size(bad)
    for bad in ({"h": 32}, True, None):
        with pytest.raises(TypeError, match=r"input size must be \(C, H, W\)"):
            parse_input_size(bad)


def test_summary_errors_are_ours():
    with pytest.raises(ValueError, match="an input size is needed for a module that is not a registered convzoo model"):
        convzoo.summary(nn.Conv2d(3, 8, 3))
    with pytest.raises(ValueError, match=r"summary\(model, \(3, 224, 224\)\)"):
        convzoo.summary(nn.Sequential(nn.Conv2d(3, 8, 3)))
    with pytest.raises(ValueError, match="5 dimensions"):
        convzoo.summary("resnet20", (1, 1, 3, 32, 32))
    with pytest.raises(ValueError, match="not a whole number"):
        convzoo.summary("resnet20", (3, 32.5, 32))
    with pytest.raises(ValueError, match="expects a batch of shape"):
        convzoo.summary("resnet20", (4, 32, 32))
    # A failure in the root module itself (no child to blame) is explained too.
    with pytest.raises(ValueError, match=r"Conv2d: the forward pass at input 4x16x16 .* failed"):
        convzoo.summary(nn.Conv2d(3, 8, 3), (4, 16, 16))
    with pytest.raises(TypeError, match="nn.Module or a registered model name"):
        convzoo.summary(None)
    with pytest.raises(ValueError, match="depth"):
        convzoo.summary("resnet20", depth=-1)
