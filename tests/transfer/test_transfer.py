import csv

import numpy as np
import pytest
import torch
import torch.nn as nn

import convzoo
from convzoo.cli import main
from convzoo.data import load_dataset
from convzoo.train import ClassificationTask, TrainConfig, Trainer, load_checkpoint, train
from convzoo.train.components import build_optimizer
from convzoo.train.recipes import get_recipe
from convzoo.transfer import (
    FinetuneTask,
    check_unfreeze,
    extract_features,
    freeze_all_but_last,
    load_source,
    run_transfer,
    stage_count,
)

FAST = {"progress": False, "recipe_overrides": {"batch_size": 64, "epochs": 1}}


def test_unfreezing_the_last_stages_freezes_everything_before_them():
    model = convzoo.create_model("resnet20")
    assert stage_count(model) == 3  # layer1..layer3 after the stem
    trained = freeze_all_but_last(model, 1)
    assert trained and all(n.startswith(("layer3.", "fc.")) for n in trained)
    assert {n for n, p in model.named_parameters() if p.requires_grad} == set(trained)
    assert any(n.startswith("layer3.") for n in trained) and "fc.weight" in trained
    assert set(freeze_all_but_last(model, 0)) == {"fc.weight", "fc.bias"}
    assert not model.conv1.weight.requires_grad and not model.layer2[0].conv1.weight.requires_grad
    # All stages after the stem: the stem alone stays frozen; None trains everything.
    trained = freeze_all_but_last(model, 3)
    assert "layer1.0.conv1.weight" in trained and "conv1.weight" not in trained and "bn1.weight" not in trained
    assert len(freeze_all_but_last(model, None)) == len(list(model.parameters()))


def test_unfreezing_works_on_a_network_with_fully_connected_layers():
    model = convzoo.create_model("vgg11", num_classes=5)
    # VGG's last tap point is the max pooling after its last convolution: a stage without parameters, not counted.
    assert stage_count(model) == 4
    trained = freeze_all_but_last(model, 1)
    # The last two convolutions (features.16, features.18) and every fully connected layer (fc6, fc7, output).
    assert {n.rpartition(".")[0] for n in trained} == {"features.16", "features.18", "classifier.0", "classifier.3",
                                                       "classifier.6"}  # fmt: skip
    assert set(freeze_all_but_last(model, 0)) == {f"classifier.{i}.{k}" for i in (0, 3, 6) for k in ("weight", "bias")}


@pytest.mark.parametrize("bad", [4, -1, "two"])
def test_unfreezing_more_stages_than_the_network_has_is_refused_naming_them(bad):
    with pytest.raises(ValueError, match=r"resnet20 has 3 stages after its stem \(ending at layer1, layer2, layer3\)"):
        check_unfreeze(convzoo.create_model("resnet20"), bad)
    assert check_unfreeze(convzoo.create_model("resnet20"), "all") is None


def test_frozen_parts_stay_in_eval_mode_and_parameter_free_layers_of_trained_parts_train():
    model = convzoo.create_model("resnet20")
    freeze_all_but_last(model, 1)
    model.train()
    ClassificationTask().keep_frozen(model)
    assert not model.bn1.training and not model.layer1.training and not model.layer2[2].bn2.training
    assert model.layer3.training and model.layer3[0].bn1.training and model.training
    # A network that trains whole is left as it is.
    whole = convzoo.create_model("resnet20").train()
    ClassificationTask().keep_frozen(whole)
    assert all(m.training for m in whole.modules())


def test_the_backbone_trains_at_a_fraction_of_the_heads_learning_rate():
    model = convzoo.create_model("resnet20")
    task = FinetuneTask({"fc.weight", "fc.bias"}, 0.1)
    optimizer = build_optimizer(model, get_recipe("quick"), task.lr_scale)
    scales = {id(p): g["lr_scale"] for g in optimizer.param_groups for p in g["params"]}
    assert scales[id(model.fc.weight)] == 1.0 and scales[id(model.fc.bias)] == 1.0
    assert scales[id(model.conv1.weight)] == 0.1 and scales[id(model.layer3[2].bn2.bias)] == 0.1
    assert len(scales) == len(list(model.parameters()))
    with pytest.raises(ValueError, match="must not be negative"):
        FinetuneTask(set(), -1.0)


def test_fine_tuning_moves_only_what_is_unfrozen_and_keeps_frozen_statistics(tmp_path):
    torch.manual_seed(0)
    model = convzoo.create_model("resnet20", num_classes=10, in_chans=1)
    freeze_all_but_last(model, 1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    task = FinetuneTask({"fc.weight", "fc.bias"}, 0.1)
    trainer = Trainer(
        TrainConfig(model="resnet20", data="digits", image_size=16, out=str(tmp_path / "ft"), **FAST),
        task=task,
        model=model,
    )
    trainer.run()
    after = model.state_dict()
    for key in ("conv1.weight", "bn1.running_mean", "layer1.0.bn1.running_var", "layer2.2.conv2.weight"):
        assert torch.equal(before[key], after[key]), key
    for key in ("layer3.2.conv2.weight", "layer3.0.bn1.running_mean", "fc.weight"):
        assert not torch.equal(before[key], after[key]), key
    groups = trainer.optimizer.param_groups
    assert {g["lr_scale"] for g in groups} == {1.0, 0.1}
    assert all(g["lr"] == pytest.approx(trainer.lr * g["lr_scale"]) for g in groups)


def test_features_are_the_pre_logits_vectors_of_the_normalised_images():
    source = load_source("resnet20")
    train_set, _ = load_dataset("digits", image_size=32, in_chans=3)
    part = train_set.subset(range(20))
    mean, std = part.mean_std()
    features = extract_features(source.model, part, mean=mean, std=std, batch_size=8, progress=False)
    x = (part.images.float() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = source.model.forward_head(source.model.forward_features(x), pre_logits=True)
    assert features.images.shape == (20, source.model.head_hidden_size)
    torch.testing.assert_close(features.images, expected, atol=1e-5, rtol=1e-5)
    assert torch.equal(features.labels, part.labels)


@pytest.fixture(scope="module")
def few_digits(tmp_path_factory):
    """400 training and 120 test digits as an .npz file: the whole pipeline at a third of the embedded set's cost."""
    train_set, test_set = load_dataset("digits")
    path = tmp_path_factory.mktemp("data") / "few-digits.npz"
    np.savez(
        path,
        images=train_set.images[:400].numpy(),
        labels=train_set.labels[:400].numpy(),
        test_images=test_set.images[:120].numpy(),
        test_labels=test_set.labels[:120].numpy(),
    )
    return str(path)


@pytest.fixture(scope="module")
def digits_transfer(tmp_path_factory, few_digits):
    out = tmp_path_factory.mktemp("transfer") / "resnet20-digits"
    return run_transfer(
        "resnet20",
        few_digits,
        epochs=3,
        out=out,
        progress=False,
        recipe_overrides={"batch_size": 64},
        train_settings={"deterministic": True},
    )


def test_transfer_writes_the_lectures_table_from_its_runs(digits_transfer):
    result = digits_transfer
    assert set(result.accuracy) == {"scratch", "linear", "finetune"}
    for mode, run in result.runs.items():
        assert result.accuracy[mode] == run.history[-1]["test_top1"]
        assert (result.out / mode / "last.pt").is_file()
    rows = list(csv.reader((result.out / "results.csv").open()))
    assert rows[0] == ["target data set", "from scratch", "frozen features + classifier", "fine-tuned"]
    assert [float(v) for v in rows[1][1:]] == [result.accuracy[m] for m in ("scratch", "linear", "finetune")]
    report = (result.out / "report.md").read_text()
    assert "resnet20.cifar10" in report and "**Hardware:**" in report and "seeds 0" in report
    assert f"{result.accuracy['finetune']:.2f}" in report
    assert (result.out / "chart.png").stat().st_size > 1000
    # Trained on CIFAR-10, the pretrained features must beat the chance level of the digits by far after one epoch.
    assert result.accuracy["linear"] > 40


def test_the_linear_classifier_reads_cached_features_and_the_source_is_untouched(digits_transfer):
    state = load_checkpoint(digits_transfer.out / "linear" / "last.pt")
    weights = state["model"]["state_dict"]
    assert set(weights) == {"0.running_mean", "0.running_var", "0.num_batches_tracked", "1.weight", "1.bias"}
    assert weights["1.weight"].shape == (10, 64)  # ResNet-20's pooled 64 channels
    assert state["data"]["image_size"] == [64]
    shipped = convzoo.create_model("resnet20", pretrained=True).state_dict()
    fine = load_checkpoint(digits_transfer.out / "finetune" / "last.pt")["model"]["state_dict"]
    assert fine["fc.weight"].shape == (10, 64) and not torch.equal(fine["conv1.weight"], shipped["conv1.weight"])


def test_a_finished_transfer_is_not_overwritten_and_an_unfinished_one_continues(digits_transfer, few_digits, tmp_path):
    with pytest.raises(FileExistsError, match="finished transfer experiment"):
        run_transfer("resnet20", "digits", out=digits_transfer.out)
    # A folder with a finished run and no report: the run is reused, the rest trained.
    out = tmp_path / "again"
    out.mkdir()
    (out / "linear").symlink_to(digits_transfer.out / "linear", target_is_directory=True)
    settings = {"epochs": 3, "progress": False, "recipe_overrides": {"batch_size": 64}}
    result = run_transfer(
        "resnet20", few_digits, modes=["linear"], out=out, train_settings={"deterministic": True}, **settings
    )
    assert result.accuracy["linear"] == digits_transfer.accuracy["linear"]
    # A run left with other settings is refused, naming them, rather than read back as if it were this one's.
    other = tmp_path / "other"
    other.mkdir()
    (other / "linear").symlink_to(digits_transfer.out / "linear", target_is_directory=True)
    with pytest.raises(ValueError, match="trained with other settings"):
        run_transfer("resnet20", few_digits, modes=["linear"], out=other, epochs=1, progress=False)


def test_fully_connected_networks_transfer_their_fc7(tmp_path):
    run = train(TrainConfig(model="lenet5", data="digits", out=str(tmp_path / "lenet"), deterministic=True, **FAST))
    source = load_source(run.out / "best.pt")
    assert source.arch == "lenet5" and source.model.head_hidden_size == 84 and source.image_size == 32
    result = run_transfer(
        run.out / "best.pt",
        "digits",
        modes=["linear"],
        classes=[0, 1, 2],
        epochs=1,
        out=tmp_path / "t",
        progress=False,
        train_settings={"deterministic": True},
    )
    weights = load_checkpoint(result.out / "linear" / "last.pt")["model"]["state_dict"]
    assert weights["1.weight"].shape == (3, 84)  # F6, LeNet's last hidden layer, not its 120 C5 maps


def test_the_command_runs_a_mode_and_reports_it(tmp_path, capsys):
    out = tmp_path / "cli"
    code = main(["transfer", "resnet20", "--data", "digits", "--mode", "linear", "--epochs", "1", "--out", str(out),
                 "--classes", "0-4", "--train-size", "100", "--no-progress", "--amp", "off"])  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "linear: test accuracy" in printed and str(out / "report.md") in printed
    rows = list(csv.reader((out / "results.csv").open()))
    assert rows[0] == ["target data set", "frozen features + classifier"]
    assert rows[1][0] == "digits classes [0, 1, 2, 3, 4], 100 training images"
    state = load_checkpoint(out / "linear" / "last.pt")
    assert state["step"] == 100 // 64  # one epoch of the 100-image subset at batch 64 (the last part dropped)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--unfreeze", "7"], "has 3 stages after its stem"),
        (["--mode", "finetune", "--backbone-lr-scale", "-1"], "must not be negative"),
    ],
)
def test_bad_input_is_refused_before_anything_is_written(tmp_path, capsys, argv, message):
    out = tmp_path / "bad"
    assert main(["transfer", "resnet20", "--data", "digits", "--out", str(out), *argv]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_a_backwards_class_range_is_a_usage_error(capsys):
    with pytest.raises(SystemExit):
        main(["transfer", "resnet20", "--data", "digits", "--classes", "3-1"])
    assert "runs backwards" in capsys.readouterr().err


def test_a_missing_source_says_so(tmp_path, capsys):
    assert main(["transfer", str(tmp_path / "nope.pt"), "--data", "digits"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_a_balanced_subset_keeps_the_class_proportions():
    train_set, _ = load_dataset("digits")
    part = train_set.balanced_subset(200, seed=3)
    assert len(part) == 200 and torch.equal(part.images, train_set.balanced_subset(200, seed=3).images)
    counts = torch.bincount(part.labels, minlength=10)
    assert counts.min() >= 18 and counts.max() <= 22
    with pytest.raises(ValueError, match="1,437"):
        train_set.balanced_subset(5000)


def test_a_class_subset_is_relabelled_in_the_order_given():
    train_set, _ = load_dataset("digits")
    part = train_set.select_classes([7, "3"])
    assert part.classes == ["7", "3"] and set(part.labels.tolist()) == {0, 1}
    assert len(part) == int((train_set.labels == 7).sum() + (train_set.labels == 3).sum())
    assert torch.equal(part.images[part.labels == 0], train_set.images[train_set.labels == 7])
    with pytest.raises(ValueError, match="has classes 0..9; got class 12"):
        train_set.select_classes([12])


def test_training_on_a_class_subset(tmp_path):
    run = train(TrainConfig(model="resnet20", data="digits", image_size=16, classes=[0, 1, 2, 3, 4],
                            out=str(tmp_path / "half"), deterministic=True, **FAST))  # fmt: skip
    state = load_checkpoint(run.out / "last.pt")
    assert state["model"]["num_classes"] == 5 and state["data"]["classes"] == ["0", "1", "2", "3", "4"]


def test_linear_classifier_shape():
    from convzoo.transfer import linear_classifier

    layer = linear_classifier(12, 3)
    assert isinstance(layer[0], nn.BatchNorm1d) and not layer[0].affine and layer(torch.randn(4, 12)).shape == (4, 3)
