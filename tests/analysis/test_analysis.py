"""Per-layer analysis: receptive fields, memory, formats, comparisons and the `rf` / `compare` commands."""

import csv
import io
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn as nn
import torchvision
from torch.utils.flop_counter import FlopCounterMode

import convzoo
from convzoo.analysis import (
    ReceptiveField,
    compare,
    effective_receptive_field,
    measure_receptive_field,
    receptive_fields,
)
from convzoo.analysis.compare import (
    NoisyMeasurementWarning,
    Timing,
    compare_models,
    comparison_records,
    comparison_table,
    measure_throughput,
    plot_accuracy_vs_compute,
)
from convzoo.analysis.costs import MacCounter
from convzoo.cli import main


def stack_3x3(n: int, channels: int = 8) -> nn.Sequential:
    return nn.Sequential(*[nn.Conv2d(channels, channels, 3, padding=1, bias=False) for _ in range(n)])


def test_stacked_3x3_convolutions_see_like_one_large_kernel():
    # Seeds 001/002: two 3x3 convolutions see 5x5, three see 7x7, with 27C^2 weights against 49C^2.
    channels = 8
    s = convzoo.summary(stack_3x3(3, channels), (channels, 32, 32))
    assert [str(r.rf) for r in s.rows] == ["3", "5", "7"]
    assert s.total_params == 27 * channels**2
    seven = convzoo.summary(nn.Conv2d(channels, channels, 7, padding=3, bias=False), (channels, 32, 32))
    assert seven.total_params == 49 * channels**2
    assert str(seven.output_rf) == "7"


def test_receptive_field_arithmetic():
    rf = ReceptiveField().through((7, 7), (2, 2), (3, 3)).through((3, 3), (2, 2), (1, 1))
    assert rf.size == (11, 11) and rf.jump == (4, 4) and rf.start == (0, 0)
    dilated = ReceptiveField().through((3, 3), (1, 1), (2, 2), (2, 2))
    assert dilated.size == (5, 5)
    union = ReceptiveField((3, 3), (1, 1), (0, 0)).union(ReceptiveField((5, 5), (1, 1), (2, 2)))
    assert union.size == (6, 6) and union.start == (1.5, 1.5)
    assert ReceptiveField().union(ReceptiveField(is_global=True)).is_global


def test_valid_convolution_moves_the_centre_and_asymmetric_kernels():
    s = convzoo.summary(nn.Sequential(nn.Conv2d(1, 1, 5), nn.Conv2d(1, 1, (1, 7), padding=(0, 3))), (1, 16, 16))
    first, second = (r.rf for r in s.rows)
    assert first.start == (2, 2) and first.size == (5, 5)
    assert second.size == (5, 11) and str(second) == "5x11"


# ResNet-20: the stem 3, then 2 per conv at jump 1 (6 convs), 2 + 4x4 at jump 2 (the first conv reads at jump 1),
# and 4 + 8x5 at jump 4: 3 + 12 + 2 + 16 + 4 + 40 + ... = 81.
@pytest.mark.parametrize(("name", "expected"), [("resnet18", 435), ("resnet50", 427), ("resnet20", 81)])
def test_known_network_receptive_fields(name, expected):
    fields = receptive_fields(convzoo.create_model(name), convzoo.get_model_card(name).input_size, device="cpu")
    last_stage = convzoo.create_model(name).feature_info[-1].module
    assert fields[last_stage].size == (expected, expected)
    assert fields["fc"].is_global


def test_residual_merge_is_the_union_of_its_inputs():
    # layer1 ends at field 43, jump 4. The projection shortcut (1x1, stride 2) keeps 43; the branch's two 3x3
    # convolutions grow it by 8 and 16 to 67. The block's sum sees the union: 67.
    s = convzoo.summary(convzoo.create_model("resnet18"), (3, 64, 64), depth=3)
    rows = {r.name: r for r in s.rows}
    assert rows["layer1"].rf.size == (43, 43) and rows["layer1"].rf.jump == (4, 4)
    assert rows["layer2.0.downsample"].rf.size == (43, 43)
    assert rows["layer2.0"].rf.size == rows["layer2.0.bn2"].rf.size == (67, 67)


def test_gradient_never_leaves_the_theoretical_field():
    model = convzoo.create_model("resnet18")
    size = (3, 128, 128)
    table = {r.name: r for r in convzoo.summary(model, size, depth=1).rows}
    for layer in ("maxpool", "layer1", "layer2"):
        erf = effective_receptive_field(model, layer, size, samples=2, batch_size=2)
        assert erf.shape == (128, 128) and erf.max() == pytest.approx(1.0)
        h, w = table[layer].output_shape[-2:]
        (top, bottom), (left, right) = table[layer].rf.bounds((h // 2, w // 2))
        inside = np.zeros_like(erf, dtype=bool)
        inside[max(0, int(top)) : int(bottom) + 1, max(0, int(left)) : int(right) + 1] = True
        assert (~inside).any() and erf[~inside].max() == 0.0
        assert erf[inside].min() >= 0.0 and (erf[inside] > 0).mean() > 0.3
    with pytest.raises(KeyError, match="no module named 'layer9'"):
        effective_receptive_field(model, "layer9", size)


def test_measured_field_of_a_box_filter_is_the_box():
    # One 3x3 all-ones convolution: the central unit's input gradient is 1 on its 3x3 window and 0 elsewhere, so the
    # centre of mass is the unit's own pixel and the radius is sqrt((4 * 1 + 4 * 2) / 9).
    conv = nn.Conv2d(1, 1, 3, padding=1, bias=False)
    nn.init.ones_(conv.weight)
    field = measure_receptive_field(nn.Sequential(conv), (1, 9, 9), "0", samples=3, batch_size=2)
    assert (field.layer, field.layer_type, field.output_shape) == ("0", "Conv2d", (1, 1, 9, 9))
    assert str(field.theoretical) == "3" and field.centre_unit == (4, 4)
    expected = np.zeros((9, 9))
    expected[3:6, 3:6] = 1.0
    np.testing.assert_allclose(field.erf, expected)
    assert field.centre == pytest.approx((4.0, 4.0))
    assert field.radius == pytest.approx((12 / 9) ** 0.5)


def test_measured_field_of_a_network_layer():
    model = convzoo.create_model("resnet20")
    field = measure_receptive_field(model, (3, 32, 32), "layer1", samples=2, batch_size=2)
    np.testing.assert_array_equal(field.erf, effective_receptive_field(model, "layer1", (3, 32, 32), samples=2))
    assert field.layer_type == "Sequential" and field.output_shape == (1, 16, 32, 32)
    assert field.theoretical.size == (15, 15) and field.centre_unit == (16, 16)
    (top, bottom), (left, right) = field.theoretical.bounds(field.centre_unit)
    assert top <= field.centre[0] <= bottom and left <= field.centre[1] <= right
    ys, xs = np.indices(field.erf.shape)
    assert field.centre == pytest.approx((np.average(ys, weights=field.erf), np.average(xs, weights=field.erf)))
    assert 0 < field.radius < (right - left) / 2 * 2**0.5
    default = measure_receptive_field(model, (3, 32, 32), samples=1, batch_size=1)
    # The default is the last top-level module with a 4-d output: here the global pooling, which sees everything.
    assert default.layer == "avgpool" and default.output_shape == (1, 64, 1, 1) and default.theoretical.is_global
    with pytest.raises(KeyError, match=r"resnet20 has no layer named 'layer7'; did you mean layer3, layer2, layer1"):
        measure_receptive_field(model, (3, 32, 32), "layer7")


def test_per_module_macs_match_torch_flop_counter():
    model = convzoo.create_model("resnet18")
    with FlopCounterMode(display=False, depth=None) as reference:
        model.eval()(torch.zeros(1, 3, 64, 64))
    root = type(model).__name__ + "."
    expected = {k.removeprefix(root): sum(v.values()) // 2 for k, v in reference.get_flop_counts().items()}
    rows = convzoo.summary(model, (3, 64, 64), depth=3).rows
    assert {r.name: r.macs for r in rows} == {r.name: expected.get(r.name, 0) for r in rows}
    assert sum(r.macs for r in rows if r.depth == 3) > 0
    with MacCounter() as counter:
        model(torch.zeros(1, 3, 64, 64))
    assert counter.macs == reference.get_total_flops() // 2


def test_macs_agree_with_flop_counter_on_torchvision_models():
    for name in ("resnet18", "resnext50_32x4d", "wide_resnet50_2"):
        reference = getattr(torchvision.models, name)()
        with FlopCounterMode(display=False) as counter:
            reference(torch.zeros(1, 3, 64, 64))
        assert convzoo.summary(name, (3, 64, 64), depth=1).total_macs == counter.get_total_flops() // 2


def test_counter_gaps_are_convention_not_accident():
    # Elementwise work (BN, ReLU, additions, SE gating, pooling) is outside the multiply-add convention: SE adds only
    # its two 1x1 layers' multiply-adds, and a ReLU or a pooling layer adds none.
    base = convzoo.summary("resnet18", depth=1).total_macs
    se = convzoo.summary("se_resnet18", depth=1).total_macs
    fc_macs = sum(n * (2 * c * (c // 16)) for n, c in ((2, 64), (2, 128), (2, 256), (2, 512)))
    assert se - base == fc_macs
    pool = convzoo.summary(nn.Sequential(nn.ReLU(), nn.MaxPool2d(2), nn.AvgPool2d(2)), (3, 8, 8))
    assert pool.total_macs == 0


def test_memory_totals_follow_the_stated_convention():
    meta = convzoo.summary("resnet20", depth=1)
    real = convzoo.summary(convzoo.create_model("resnet20"), depth=1)
    assert meta.activation_bytes == real.activation_bytes
    assert abs(meta.training_bytes - real.training_bytes) / real.training_bytes < 0.01
    buffers = list(convzoo.create_model("resnet20").buffers())
    assert meta.param_bytes == 4 * 269_722 + sum(b.numel() * b.element_size() for b in buffers)
    # A plain conv-ReLU(in place)-conv stack: two conv outputs, the in-place ReLU adds nothing.
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(4, 2, 3, padding=1))
    s = convzoo.summary(net, (3, 10, 10))
    assert s.activation_bytes == 4 * (4 * 100 + 2 * 100)
    assert s.rows[1].activation_bytes == 4 * 400  # the row still shows the layer's output size


def test_frozen_parameters_are_reported():
    model = convzoo.create_model("resnet20")
    for p in model.layer1.parameters():
        p.requires_grad_(False)
    s = convzoo.summary(model, depth=1)
    layer1 = next(r for r in s.rows if r.name == "layer1")
    assert layer1.trainable_params == 0 and layer1.params == 14_016
    assert s.total_params - s.trainable_params == 14_016
    assert "14,016 frozen" in str(s)


def test_formats():
    s = convzoo.summary("resnet20", depth=1)
    records = list(csv.DictReader(io.StringIO(s.to_csv())))
    assert records[0]["name"] == "conv1" and records[0]["kernel"] == "3" and records[0]["rf_size"] == "[3, 3]"
    data = json.loads(s.to_json())
    assert data["params"] == 269_722 and data["mult_adds"] == 40_551_040 and len(data["layers"]) == len(s.rows)
    assert data["layers"][-1]["rf_size"] == "global"
    markdown = s.to_markdown()
    assert markdown.splitlines()[2].startswith("| Layer | Type |") and "| conv1 | Conv2d |" in markdown
    with pytest.raises(ValueError, match="unknown format 'xml'"):
        s.format("xml")


def test_failure_names_the_layer_and_its_input():
    net = nn.Sequential(nn.Conv2d(3, 8, 5), nn.Conv2d(8, 8, 5))
    with pytest.raises(ValueError, match=r"failed in 1 \(Conv2d\), which got an input of shape \(1, 8, 2, 2\)"):
        convzoo.summary(net, (3, 6, 6))


def test_meta_summary_of_a_large_network_allocates_nothing_large():
    code = (
        "import resource, convzoo\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "s = convzoo.summary('wide_resnet101_2', depth=1)\n"
        "after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "print(s.param_bytes, (after - before) * 1024)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    param_bytes, grown = int(out[0]), int(out[1])
    assert param_bytes > 480 * 2**20  # half a gigabyte of weights described...
    assert grown < 100 * 2**20  # ...without allocating them


def test_compare_rows_table_and_chart(tmp_path):
    rows = compare_models(["resnet20", "resnet56", "resnet18"], timing=Timing("cpu", 2, 1, 1, 2), progress=False)
    by_name = {r.name: r for r in rows}
    assert by_name["resnet20"].params == 269_722 and by_name["resnet56"].macs == 125_485_696
    assert by_name["resnet20"].top1 == pytest.approx(91.25) and by_name["resnet20"].top1_dataset == "CIFAR-10"
    assert all(r.images_per_s > 0 and r.latency_ms > 0 for r in rows)
    written = plot_accuracy_vs_compute(rows, tmp_path / "chart")
    assert [p.suffix for p in written] == [".png", ".svg"] and all(p.stat().st_size > 1000 for p in written)
    with pytest.raises(ValueError, match="none of these models has a reported top-1"):
        plot_accuracy_vs_compute([], tmp_path / "none")


def test_cli_summary_formats_rf_and_compare(tmp_path, capsys):
    assert main(["summary", "resnet20", "--format", "json", "--depth", "1"]) == 0
    assert json.loads(capsys.readouterr().out)["params"] == 269_722
    assert main(["summary", "resnet20", "--format", "csv", "--depth", "1"]) == 0
    assert capsys.readouterr().out.startswith("name,type,depth,output_shape")
    out = tmp_path / "erf.png"
    assert main(["rf", "resnet20", "--layer", "layer1", "--samples", "2", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "layer layer1 (Sequential), output 16x32x32" in text
    assert "theoretical receptive field: 15 pixels, jump 1" in text
    assert out.is_file() and np.load(out.with_suffix(".npy")).shape == (32, 32)
    assert main(["rf", "resnet20", "--layer", "layer7"]) == 2
    assert "no layer named 'layer7'" in capsys.readouterr().err
    stem = tmp_path / "cmp" / "zoo"
    assert main(["compare", "resnet[25]*", "--out", str(stem), "--no-throughput"]) == 0
    text = capsys.readouterr().out
    assert "resnet56" in text and "resnet50" in text
    assert {p.suffix for p in stem.parent.iterdir()} == {".png", ".svg", ".json"}
    assert (
        main(["compare", "resnet20", "--out", str(stem), "--repeats", "1", "--warmup", "0", "--batch-size", "2"]) == 0
    )
    assert "Throughput measured on cpu, batch 2" in capsys.readouterr().out


def fake_clock(durations):
    """A clock whose successive measured intervals are ``durations`` (seconds)."""
    now = 0.0
    readings = []
    for d in durations:
        readings += [now, now + d]
        now += d + 1.0
    return iter(readings).__next__


def test_throughput_flags_runs_that_disagree():
    model = nn.Conv2d(3, 4, 3)
    steady = measure_throughput(model, (3, 8, 8), batch_size=4, warmup=1, repeats=3, timer=fake_clock([9, 1, 1.1, 1.2]))
    assert steady.latency_ms == pytest.approx(1100) and steady.images_per_s == pytest.approx(4 / 1.1)
    assert steady.spread == pytest.approx(1.2) and not steady.noisy  # the warm-up pass is not timed
    with pytest.warns(NoisyMeasurementWarning, match=r"Conv2d: the 3 timed runs disagree .* x3\.00"):
        busy = measure_throughput(model, (3, 8, 8), warmup=0, repeats=3, timer=fake_clock([1, 3, 1.1]))
    assert busy.noisy and busy.spread == pytest.approx(3.0)
    with pytest.warns(NoisyMeasurementWarning):
        strict = measure_throughput(
            model, (3, 8, 8), warmup=0, repeats=2, noisy_spread=1.1, timer=fake_clock([1, 1.15])
        )
    assert strict.noisy
    with pytest.raises(ValueError, match="repeats >= 1"):
        measure_throughput(model, (3, 8, 8), repeats=0)


def test_compare_marks_a_noisy_measurement_and_shows_progress(monkeypatch, capsys):
    clocks = iter([fake_clock([1, 1, 1.05]), fake_clock([1, 2, 1])])  # resnet20 steady, resnet56 disturbed

    def measure(*args, **kwargs):
        return measure_throughput(*args, **kwargs, timer=next(clocks))

    monkeypatch.setattr(compare, "measure_throughput", measure)

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    timing = Timing("cpu", 1, 1, 1, 2)
    with pytest.warns(NoisyMeasurementWarning, match="resnet56"):
        rows = compare_models(["resnet20", "resnet56"], timing=timing)
    assert "comparing" in terminal.getvalue() and "resnet56" in terminal.getvalue()  # the bar names the model
    assert "/8 [" in terminal.getvalue()  # a step for the costs and three forward passes per model
    assert [(r.noisy, r.spread) for r in rows] == [(False, pytest.approx(1.05)), (True, pytest.approx(2.0))]
    table = comparison_table(rows, timing)
    assert "x2.00" in table and "0.7!" in table and "Unreliable: the timed runs of resnet56 disagree" in table
    assert comparison_records(rows)[1]["noisy"] is True
    terminal.truncate(0)
    clocks = iter([fake_clock([1, 1, 1])])
    compare_models(["resnet20"], timing=timing, progress=False)
    assert terminal.getvalue() == ""


def test_counts_take_a_registered_name_as_summary_does():
    model = convzoo.create_model("resnet20")
    assert convzoo.count_params("resnet20") == convzoo.count_params(model) == 269_722
    assert convzoo.count_macs("resnet20", 32) == convzoo.count_macs(model, (3, 32, 32)) == 40_551_040
