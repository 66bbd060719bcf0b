"""Linear probing: the pooling rule, one pass of a frozen trunk feeding every probe, bad input, the report and CLI."""

import csv
import math
import random

import numpy as np
import pytest
import torch
import torch.nn as nn

import convzoo
from convzoo.cli import main
from convzoo.models.base import ConvNet, FeatureInfo
from convzoo.train import TrainConfig, Trainer, train
from convzoo.transfer import load_source
from convzoo.transfer.probe import (
    LayerResult,
    Probes,
    ProbeTask,
    _findings,
    pool_size,
    probe_points,
    run_probe,
)

# ResNet-20 on 320 training and 80 test digits of 8x8, batches of 128: two optimiser steps and one test batch.
FAST = {"image_size": 8, "epochs": 1, "recipe_overrides": {"batch_size": 128}, "deterministic": True, "progress": False}
RESNET20_LAYERS = ["relu", "layer1", "layer2", "layer3"]


@pytest.fixture(scope="module")
def small_digits(tmp_path_factory):
    """An .npz data set of the first 320 training and 80 test digits, with the digits' class names."""
    train_set, test_set = convzoo.data.load_dataset("digits")
    path = tmp_path_factory.mktemp("small-digits") / "digits.npz"
    np.savez(
        path,
        images=train_set.images[:320, 0].numpy(),
        labels=train_set.labels[:320].numpy(),
        test_images=test_set.images[:80, 0].numpy(),
        test_labels=test_set.labels[:80].numpy(),
        classes=np.array(train_set.classes),
    )
    return str(path)


@pytest.fixture(scope="module")
def digits_checkpoint(tmp_path_factory, small_digits):
    """A ResNet-20 training checkpoint of the small digits set (8x8), trained for one step."""
    out = tmp_path_factory.mktemp("digits-run") / "run"
    config = TrainConfig(
        model="resnet20",
        data=small_digits,
        image_size=8,
        recipe_overrides={"iterations": 1, "batch_size": 128},
        out=str(out),
        progress=False,
        deterministic=True,
    )
    train(config)
    return out / "last.pt"


# -- the pooling rule ---------------------------------------------------------------------------------------------


def test_pool_size_gives_zhang_et_al_alexnet_features():
    # AlexNet at 227x227: conv1 96x55x55, conv2 256x27x27, conv3 and conv4 384x13x13, conv5 256x13x13.
    maps = [(96, 55), (256, 27), (384, 13), (384, 13), (256, 13)]
    grids = [pool_size(channels, side) for channels, side in maps]
    assert grids == [10, 6, 5, 5, 6]
    assert [channels * g * g for (channels, _), g in zip(maps, grids)] == [9600, 9216, 9600, 9600, 9216]


def test_pool_size_is_the_nearest_square_grid_no_larger_than_the_map():
    rng = random.Random(0)
    for _ in range(300):
        channels, height, width = rng.randint(1, 2048), rng.randint(1, 64), rng.randint(1, 64)
        target = rng.choice([9000, 4096, 100])
        side = pool_size(channels, height, width, target=target)
        allowed = range(1, min(height, width) + 1)
        best = min(abs(channels * s * s - target) for s in allowed)
        assert side in allowed
        assert abs(channels * side * side - target) == best, (channels, height, width, target, side)
    assert pool_size(16, 32) == 24  # ResNet-20's stem: 16 x 24 x 24 = 9,216
    assert pool_size(64, 8) == 8  # the map is smaller than the grid the target asks for
    assert pool_size(2048, 7) == 2  # 8,192 is nearer 9,000 than 18,432
    assert pool_size(2, 10, target=5) == 1  # 2 and 8 lie equally far from 5: the smaller grid wins
    with pytest.raises(ValueError, match="positive"):
        pool_size(0, 8)


def test_alexnet_probes_the_relus_of_its_five_convolutions_at_zhang_et_al_sizes():
    model = convzoo.create_model("alexnet_2012", num_classes=0)  # the fully connected layers are not probed
    points = probe_points(model)
    assert [p.name for p in points] == ["conv1", "conv2", "conv3", "conv4", "conv5"]
    for p in points:
        index = int(p.module.split(".")[1])
        assert isinstance(model.features[index], nn.ReLU)
        assert isinstance(model.features[index - 1], nn.Conv2d)
    probes = Probes(model, 10, (3, 227, 227))
    assert [probes.pooling(name)[0] for name in probes.layer_names] == [9600, 9216, 9600, 9600, 9216]
    assert probes.shapes["conv1"] == (96, 55, 55)


# -- one pass of a frozen trunk ----------------------------------------------------------------------------------


def _count_trunk_passes(probes):
    calls = []
    probes.trunk.conv1.register_forward_hook(lambda *_: calls.append(1))
    return calls


def test_one_trunk_pass_feeds_every_probe_and_no_gradient_reaches_the_trunk():
    probes = Probes(convzoo.create_model("resnet20"), 10, (3, 8, 8))
    calls = _count_trunk_passes(probes)
    probes.train()
    assert not probes.trunk.training and all(not m.training for m in probes.trunk.modules())
    outputs = probes(torch.randn(6, 3, 8, 8))
    assert len(calls) == 1
    assert [o.shape for o in outputs] == [(6, 10)] * 4
    sum(nn.functional.cross_entropy(o, torch.arange(6) % 10) for o in outputs).backward()
    assert all(p.grad is None and not p.requires_grad for p in probes.trunk.parameters())
    assert all(p.grad is not None for p in probes.probes.parameters())
    # A batch norm without affine parameters: the linear layers are the only thing a probe learns.
    assert {name.split(".")[-1] for name, _ in probes.probes.named_parameters()} == {"weight", "bias"}
    assert all(not list(probe.norm.parameters()) for probe in probes.probes.values())


def test_the_engine_trains_only_the_probes_on_one_trunk_pass_per_batch(small_digits, tmp_path):
    train_set, test_set = convzoo.data.load_dataset(small_digits, image_size=8, in_chans=3)
    probes = Probes(convzoo.create_model("resnet20"), 10, (3, 8, 8), layers=["layer1", "layer3"])
    trunk_before = {k: v.clone() for k, v in probes.trunk.state_dict().items()}
    calls = _count_trunk_passes(probes)
    config = TrainConfig(
        model="resnet20-probes",
        data="digits",
        recipe="quick",
        recipe_overrides={"epochs": 1, "batch_size": 128, "label_smoothing": 0.0, "crop_padding": 0},
        image_size=8,
        out=str(tmp_path / "run"),
        progress=False,
        deterministic=True,
    )
    trainer = Trainer(config, task=ProbeTask(probes.layer_names), model=probes, datasets=(train_set, test_set))
    optimised = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert optimised == {id(p) for p in probes.probes.parameters()}
    result = trainer.run()
    train_batches = len(train_set) // 128
    test_batches = math.ceil(len(test_set) / config.eval_batch_size)
    assert result.steps_done == train_batches
    assert len(calls) == train_batches + test_batches
    for key, value in probes.trunk.state_dict().items():  # weights and batch-norm statistics alike
        assert torch.equal(value, trunk_before[key]), key
    row = result.history[-1]
    assert {"test_top1_layer1", "test_top1_layer3", "train_err_layer1"} <= set(row)
    assert row["test_top1"] == pytest.approx((row["test_top1_layer1"] + row["test_top1_layer3"]) / 2)


# -- bad input -----------------------------------------------------------------------------------------------------


class _GloballyPooled(ConvNet):
    """A network whose only tap point is already pooled to 1x1."""

    def __init__(self, feature_info):
        super().__init__(None, num_classes=10, in_chans=3, model_name="pooled")
        self.conv = nn.Conv2d(3, 8, 3)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.feature_info = feature_info
        self.init_head(8)

    def forward_features(self, x):
        return self.pool(self.conv(x))


def test_a_network_without_spatial_feature_maps_is_refused():
    with pytest.raises(ValueError, match="no spatial feature maps"):
        Probes(_GloballyPooled([FeatureInfo(8, 1, "conv"), FeatureInfo(8, 32, "pool")]), 10, (3, 3, 3))
    with pytest.raises(ValueError, match="feature_info is empty"):
        Probes(_GloballyPooled([]), 10, (3, 16, 16))
    # One spatial map is enough; its 1x1 neighbour is probed as it is.
    probes = Probes(_GloballyPooled([FeatureInfo(8, 1, "conv"), FeatureInfo(8, 32, "pool")]), 10, (3, 16, 16))
    assert [probes.pooling(name) for name in probes.layer_names] == [(8 * 14 * 14, (8, 14, 14), 14), (8, (8, 1, 1), 1)]


def test_an_unknown_layer_lists_the_valid_ones_and_nothing_is_written(small_digits, tmp_path):
    with pytest.raises(ValueError, match="conv9.*valid layers: relu, layer1, layer2, layer3"):
        Probes(convzoo.create_model("resnet20"), 10, (3, 8, 8), layers=["layer1", "conv9"])
    out = tmp_path / "probe"
    with pytest.raises(ValueError, match="valid layers"):
        run_probe("resnet20", small_digits, ["conv9"], out=out, **FAST)
    assert not out.exists()


def test_a_checkpoint_of_other_classes_is_refused_before_anything_is_written(digits_checkpoint, tmp_path):
    out = tmp_path / "probe"
    with pytest.raises(ValueError, match="trained on other classes"):
        run_probe(digits_checkpoint, "shapes", out=out, **{**FAST, "image_size": 16})
    assert not out.exists()


def test_a_model_without_weights_is_refused(small_digits, tmp_path):
    with pytest.raises(ValueError, match="no registered weights.*--weights"):
        run_probe("nin", small_digits, out=tmp_path / "probe", **FAST)
    assert not (tmp_path / "probe").exists()


def test_the_random_network_is_the_same_architecture_seeded():
    source = load_source("resnet20")
    a, b, c = source.untrained(0), source.untrained(0), source.untrained(1)
    assert type(a) is type(source.model) and a.num_classes == source.model.num_classes
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert not torch.equal(a.conv1.weight, c.conv1.weight)
    assert not torch.equal(a.conv1.weight, source.model.conv1.weight)


# -- the experiment -----------------------------------------------------------------------------------------------


def test_findings_are_computed_from_the_table():
    rows = [
        LayerResult("conv1", 9600, (96, 55, 55), 10, 20.0, 12.0),
        LayerResult("conv2", 9216, (256, 27, 27), 6, 35.0, 17.0),
        LayerResult("conv3", 9600, (384, 13, 13), 5, 30.0, 31.0),
    ]
    findings = " ".join(_findings(rows, "alexnet", 10.0))
    assert "Trained alexnet: accuracy peaks at conv2 (35.00%); it falls to 30.00% at conv3" in findings
    assert "Random alexnet: accuracy peaks at conv3 (31.00%, layer 3 of 3)" in findings
    assert "accuracy does not rise at every depth" in findings
    assert "beats the random one at 2 of 3 depths (not at conv3); the gap is largest at conv2: +18.00" in findings


def test_run_probe_writes_the_table_chart_and_findings(small_digits, tmp_path):
    out = tmp_path / "probe"
    result = run_probe("resnet20", small_digits, out=out, seed=3, **FAST)
    assert [row.layer for row in result.layers] == RESNET20_LAYERS
    assert [row.features for row in result.layers] == [1024, 1024, 512, 256]  # 8x8 digits: every map is the limit
    for label, column in (("trained", "trained accuracy (%)"), ("random", "random accuracy (%)")):
        last = result.runs[label].history[-1]
        with open(out / "results.csv") as f:
            table = list(csv.DictReader(f))
        assert [float(row[column]) for row in table] == [last[f"test_top1_{layer}"] for layer in RESNET20_LAYERS]
    report = (out / "report.md").read_text()
    for text in ("**Experiment:**", "320 training and 80 test images, 10 classes, 3x8x8", "seeds 3", "## Findings"):
        assert text in report
    assert "| layer | features | trained accuracy (%) | random accuracy (%) |" in report
    assert (out / "chart.png").stat().st_size > 1000
    assert (out / "trained" / "last.pt").is_file() and (out / "random" / "last.pt").is_file()
    with pytest.raises(FileExistsError, match="finished probe experiment"):
        run_probe("resnet20", small_digits, out=out, **FAST)


# -- the command ---------------------------------------------------------------------------------------------------


def test_cli_probes_a_checkpoint_end_to_end(digits_checkpoint, small_digits, tmp_path, capsys):
    out = tmp_path / "probe"
    args = [str(digits_checkpoint), "--data", small_digits, "--layers", "relu,layer3", "--epochs", "1"]
    args += ["--batch-size", "128", "--out", str(out), "--deterministic", "--no-progress"]
    assert main(["probe", *args]) == 0
    printed = capsys.readouterr().out
    assert "relu" in printed and "layer3" in printed and f"report: {out / 'report.md'}" in printed
    with open(out / "results.csv") as f:
        assert [row["layer"] for row in csv.DictReader(f)] == ["relu", "layer3"]


def test_cli_reports_bad_input_without_writing(digits_checkpoint, small_digits, tmp_path, capsys):
    out = tmp_path / "probe"
    assert main(["probe", str(digits_checkpoint), "--data", small_digits, "--layers", "fc", "--out", str(out)]) == 2
    assert "valid layers: relu, layer1, layer2, layer3" in capsys.readouterr().err
    assert main(["probe", str(digits_checkpoint), "--data", "shapes", "--image-size", "16", "--out", str(out)]) == 2
    assert "trained on other classes" in capsys.readouterr().err
    assert main(["probe", "resnet20", "--out", str(out)]) == 2
    assert "--data is required" in capsys.readouterr().err
    assert not out.exists()


def test_cli_lists_layers(capsys):
    assert main(["probe", "resnet20", "--list-layers"]) == 0
    printed = capsys.readouterr().out
    assert "relu" in printed and "layer3" in printed and "9,216 features" in printed
