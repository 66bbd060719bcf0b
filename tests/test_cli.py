"""The `convzoo` command: evaluation and prediction from run folders, help, flags, resuming, piping."""

import argparse
import dataclasses
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import convzoo
from convzoo.cli import main
from convzoo.train import Recipe, TrainConfig, Trainer, build_recipe, load_checkpoint, train
from convzoo.train.config import check_same_settings

CLASSES = ("circle", "square", "triangle")


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory):
    """A run trained with skip_corrupt on a three-class image folder that holds one unreadable file."""
    root = tmp_path_factory.mktemp("folder")
    rng = np.random.default_rng(0)
    for c, name in enumerate(CLASSES):
        (root / name).mkdir()
        for i in range(10):
            pixels = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8) // (c + 1)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    (root / "square" / "broken.png").write_bytes(b"not an image")
    out = tmp_path_factory.mktemp("runs") / "folder-run"
    config = TrainConfig(
        model="resnet20",
        data=str(root),
        image_size=16,
        recipe_overrides={"epochs": 1, "batch_size": 8},
        out=str(out),
        progress=False,
        deterministic=True,
        skip_corrupt=True,
    )
    with pytest.warns(RuntimeWarning, match="skipped 1 unreadable"):
        train(config)
    return root, out


def test_eval_a_run_trained_with_skip_corrupt(folder_run, capsys):
    root, out = folder_run
    capsys.readouterr()
    with pytest.warns(RuntimeWarning, match="skipped 1 unreadable"):
        assert main(["eval", str(out / "best.pt")]) == 0
    report = capsys.readouterr().out
    assert "test set, 6 images: top-1 accuracy" in report
    assert "top-5" not in report  # three classes: top-5 accuracy says nothing
    # Explicitly, too: the flag the error message names is accepted.
    with pytest.warns(RuntimeWarning, match="skipped 1 unreadable"):
        assert main(["eval", str(out / "best.pt"), "--skip-corrupt"]) == 0
    assert main(["eval", str(out / "best.pt"), "--no-skip-corrupt"]) == 2
    assert "cannot read image" in capsys.readouterr().err


def test_predict_skips_unreadable_files_and_reads_folders(folder_run, tmp_path, capsys):
    root, out = folder_run
    images = tmp_path / "images"
    images.mkdir()
    for name in ("b.png", "a.png"):
        Image.new("RGB", (20, 20), 128).save(images / name)
    (images / "c.png").write_bytes(b"not an image")
    (images / "notes.txt").write_text("not an image file")
    capsys.readouterr()
    code = main(["predict", str(out / "best.pt"), str(images), str(tmp_path / "missing.png")])
    captured = capsys.readouterr()
    lines = captured.out.strip().splitlines()
    assert code == 2  # some inputs could not be classified
    assert [line.split(":")[0] for line in lines] == [str(images / "a.png"), str(images / "b.png")]
    assert f"skipped {images / 'c.png'}: cannot read image" in captured.err
    assert f"skipped {tmp_path / 'missing.png'}: does not exist" in captured.err
    assert "skipped 2 of 4 images" in captured.err
    # Three classes: every line ranks all three, never five.
    assert all(line.count("%") == 3 for line in lines)
    assert main(["predict", str(out / "best.pt"), str(images / "a.png"), "--top-k", "2"]) == 0
    assert capsys.readouterr().out.count("%") == 2


@pytest.mark.parametrize("k", ["0", "-1"])
def test_predict_rejects_a_top_k_below_one(k, capsys):
    with pytest.raises(SystemExit):
        main(["predict", "run.pt", "image.png", "--top-k", k])
    assert "--top-k: must be a positive integer" in capsys.readouterr().err


def _run_into_closed_pipe(*args):
    """Run the command with its standard output a pipe whose reader has gone, as in `convzoo ... | head -1`."""
    import os

    read, write = os.pipe()
    os.close(read)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "convzoo.cli", *args], stdout=write, stderr=subprocess.PIPE, text=True, timeout=120
        )
    finally:
        os.close(write)
    return done


@pytest.mark.parametrize("args", [("recipes", "-v"), ("info", "resnet20")])
def test_a_closed_pipe_ends_quietly(args):
    done = _run_into_closed_pipe(*args)
    assert "Traceback" not in done.stderr and "BrokenPipeError" not in done.stderr, done.stderr
    assert done.returncode == 1


def test_models_measures_once_and_prints_the_same(monkeypatch, capsys):
    assert main(["models", "resnet2*", "--sort", "params"]) == 0
    first = capsys.readouterr().out
    assert "resnet20 " in first and "269,722" in first

    def no_building(*args, **kwargs):
        raise AssertionError("the counts should come from the cache")

    from convzoo.analysis import costs

    monkeypatch.setattr(costs, "create_model", no_building)
    assert main(["models", "resnet2*", "--sort", "params"]) == 0
    assert capsys.readouterr().out == first
    # Changed source: measured again.
    monkeypatch.setattr(costs, "_source_fingerprint", lambda: "changed")
    with pytest.raises(AssertionError, match="the counts should come from the cache"):
        main(["models", "resnet2*"])


def _subcommands():
    from convzoo.cli import build_parser

    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices


def test_every_command_and_argument_is_described(capsys):
    commands = _subcommands()
    assert {"models", "summary", "rf", "compare", "train", "recipes", "eval", "predict", "info"} <= set(commands)
    for name, parser in commands.items():
        assert parser.description and "examples:" in parser.epilog and f"convzoo {name}" in parser.epilog, name
        undescribed = [a.dest for a in parser._actions if not a.help or a.help == argparse.SUPPRESS]
        assert not undescribed, f"{name}: {undescribed}"
        with pytest.raises(SystemExit):
            main([name, "--help"])
        assert "examples:\n  convzoo " + name in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.strip() == f"convzoo {convzoo.__version__}"


def _config(*flags):
    from convzoo.cli import build_parser
    from convzoo.cli.train import _train_config

    return _train_config(build_parser().parse_args(["train", *flags]))


def test_every_recipe_setting_has_a_typed_flag(capsys):
    train_flags = {o for a in _subcommands()["train"]._actions for o in a.option_strings}
    for field in dataclasses.fields(Recipe):
        if field.name not in ("name", "source"):
            assert "--" + field.name.replace("_", "-") in train_flags, field.name
    config = _config(
        "--optimizer", "adamw", "--schedule", "cosine", "--label-smoothing", "0.1", "--milestones", "0.3,0.6",
        "--no-flip", "--iterations", "none", "--random-resized-crop", "0.35,1", "--epochs", "3",
    )  # fmt: skip
    assert config.recipe_overrides == {
        "optimizer": "adamw",
        "schedule": "cosine",
        "label_smoothing": 0.1,
        "milestones": [0.3, 0.6],
        "flip": False,
        "iterations": None,
        "random_resized_crop": [0.35, 1.0],
        "epochs": 3,
    }
    recipe = build_recipe(config)
    assert (recipe.optimizer, recipe.schedule, recipe.label_smoothing, recipe.flip) == ("adamw", "cosine", 0.1, False)
    # Nothing given, nothing overridden: the recipe and the library's defaults decide.
    assert _config() == TrainConfig()
    for flags, message in [
        (["--lr", "abc"], "argument --lr: expected a number; got 'abc'"),
        (["--milestones", "half"], "argument --milestones: expected comma-separated numbers; got 'half'"),
        (["--schedule", "linear"], "argument --schedule: invalid choice: 'linear'"),
        (["--epochs", "2.5"], "argument --epochs: expected an integer; got '2.5'"),
    ]:
        with pytest.raises(SystemExit):
            main(["train", *flags])
        assert message in capsys.readouterr().err


def test_arch_values_are_typed_and_checked_against_the_family(tmp_path, capsys):
    assert main(["train", "wrn16_8", "--arch", "block_drop_rate=abc", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "--arch block_drop_rate=abc: wrn16_8's block_drop_rate must be a number; got 'abc'" in err
    assert main(["train", "resnet18", "--arch", "layers=3,four", "--out", str(tmp_path / "run")]) == 2
    assert "layers must be comma-separated integers; got '3,four'" in capsys.readouterr().err
    assert main(["train", "resnet18", "--arch", "layers"]) == 2
    assert "--arch expects KEY=VALUE" in capsys.readouterr().err
    config = _config(
        "wrn16_8", "--arch", "block_drop_rate=0.3", "--arch", "zero_init_residual=true", "--arch", "shortcut=none"
    )
    assert config.model_args == {"block_drop_rate": 0.3, "zero_init_residual": True, "shortcut": None}
    assert _config("resnet18", "--arch", "layers=3,4,6,3").model_args == {"layers": (3, 4, 6, 3)}
    assert _config("resnet20", "--arch", "depth=32").model_args == {"depth": 32}


def test_resume_alone_continues_the_run_with_its_own_settings(tmp_path, capsys):
    out = tmp_path / "stopped"
    config = TrainConfig(
        model="resnet20",
        data="digits",
        image_size=16,
        recipe_overrides={"epochs": 1, "batch_size": 64, "label_smoothing": 0.1},
        seed=3,
        out=str(out),
        progress=False,
        deterministic=True,
    )

    def stop(state):
        if state.step == 5:
            state.request_stop()

    assert Trainer(config, callbacks=[stop]).run().stopped_early
    capsys.readouterr()
    assert main(["train", "--out", str(out), "--resume"]) == 0
    assert "done in" in capsys.readouterr().out
    saved = load_checkpoint(out / "last.pt")
    assert saved["step"] == 22 and saved["config"]["seed"] == 3 and saved["config"]["image_size"] == 16
    # A setting given again with its value is no change; a changed one is refused, naming it.
    same = _config("--out", str(out), "--resume", "--seed", "3", "--epochs", "1", "--label-smoothing", "0.1")
    check_same_settings(saved["config"], same)
    assert same.recipe_overrides == config.recipe_overrides and same.resume
    assert main(["train", "--out", str(out), "--resume", "--seed", "4"]) == 2
    err = capsys.readouterr().err
    assert "with changed settings" in err and "seed: 3 -> 4" in err and "data" not in err
    assert main(["train", "--resume"]) == 2
    assert "--resume needs the run folder" in capsys.readouterr().err


class _FakeResult:
    """What `Trainer.run` returns, as much of it as the train command's last lines read."""

    def __init__(self, is_main: bool) -> None:
        self.is_main = is_main
        self.stopped_early = False
        self.out = "runs/x"
        self.seconds = 1.0
        self.test_top1 = 50.0
        self.test_top5 = 90.0
        self.best_top1 = 50.0


@pytest.mark.parametrize("is_main", [True, False])
def test_only_the_first_process_prints_the_last_line(is_main, monkeypatch, capsys):
    class FakeTrainer:
        def __init__(self, config):
            self.data = argparse.Namespace(num_classes=10)

        def run(self):
            return _FakeResult(is_main)

    monkeypatch.setattr("convzoo.train.Trainer", FakeTrainer)
    assert main(["train", "resnet20", "--epochs", "1"]) == 0
    out = capsys.readouterr().out
    assert ("done in 1.0 s: test accuracy 50.00% (top-5 90.00%)" in out) is is_main


def test_remeasure_format_forgets_the_remembered_choice(monkeypatch, capsys):
    forgotten = []

    class FakeTrainer:
        def __init__(self, config):
            self.data = argparse.Namespace(num_classes=10)

        def run(self):
            return _FakeResult(True)

    def clear(model=None):
        forgotten.append(model)
        return ["resnet20(...)"]

    monkeypatch.setattr("convzoo.train.Trainer", FakeTrainer)
    monkeypatch.setattr("convzoo.train.tuning.clear_step_format_cache", clear)
    assert main(["train", "resnet20", "--epochs", "1"]) == 0
    assert forgotten == []
    assert main(["train", "resnet20", "--epochs", "1", "--remeasure-format"]) == 0
    assert forgotten == ["resnet20"]
    assert "forgot 1 remembered step format(s) of resnet20" in capsys.readouterr().out
