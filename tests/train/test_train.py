"""The training engine end to end on the embedded digits: outputs, resume, interruption, divergence, bad input."""

import json
import os
import subprocess
import sys

import pytest
import torch

import convzoo
from convzoo.cli import main
from convzoo.train import Trainer, TrainingDiverged, load_checkpoint, load_trained, train
from convzoo.weights import WeightsError


def test_a_short_run_writes_its_folder_and_learns(tmp_path, fast_config):
    result = train(fast_config())
    files = {p.name for p in result.out.iterdir()}
    assert {"last.pt", "best.pt", "model.safetensors", "best.safetensors", "metrics.csv", "metrics.jsonl"} <= files
    assert {"curves.png", "report.md"} <= files
    assert result.epochs_done == 2 and not result.stopped_early
    assert result.test_top1 > 60  # two epochs on 16x16 digits; the full default job reaches 97%+
    rows = [json.loads(line) for line in (result.out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2] and rows[-1]["test_top1"] == result.test_top1
    assert "final test error" in (result.out / "report.md").read_text()
    model = convzoo.create_model("resnet20", in_chans=1, weights=result.out / "model.safetensors")
    assert model.conv1.in_channels == 1


def test_resume_after_interruption_reaches_the_same_weights(tmp_path, fast_config):
    straight = train(fast_config("straight", recipe_overrides={"epochs": 3, "batch_size": 64}))

    cfg = fast_config("interrupted", recipe_overrides={"epochs": 3, "batch_size": 64})

    def stop_mid_epoch_two(state):
        if state.step == 30:  # 22 steps per epoch: the 8th step of epoch 2
            state.request_stop()

    first = Trainer(cfg, callbacks=[stop_mid_epoch_two]).run()
    assert first.stopped_early and first.steps_done == 30
    saved = load_checkpoint(first.out / "last.pt")
    assert saved["step"] == 30 and saved["step_in_epoch"] == 8
    resumed = train(cfg, resume=True)
    assert resumed.steps_done == straight.steps_done
    a = load_checkpoint(straight.out / "last.pt")["model"]["state_dict"]
    b = load_checkpoint(resumed.out / "last.pt")["model"]["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [r["test_top1"] for r in resumed.history] == [r["test_top1"] for r in straight.history]


def test_existing_folder_is_never_overwritten_and_resume_checks_settings(tmp_path, fast_config):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="already holds files; pass --resume"):
        train(fast_config("taken"))
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    with pytest.raises(FileNotFoundError, match="cannot resume"):
        train(fast_config("taken", resume=True))
    done = train(fast_config("done", recipe_overrides={"epochs": 1, "batch_size": 64}))
    before = (done.out / "last.pt").read_bytes()
    with pytest.raises(ValueError, match=r"changed settings[\s\S]*seed: 0 -> 1"):
        train(fast_config("done", recipe_overrides={"epochs": 1, "batch_size": 64}, resume=True, seed=1))
    assert (done.out / "last.pt").read_bytes() == before


def test_divergence_stops_with_step_and_rate_and_keeps_the_last_good_checkpoint(tmp_path, fast_config):
    def poison(state):
        if state.step == 25:
            with torch.no_grad():
                state.trainer.model.fc.weight.fill_(float("nan"))

    with pytest.raises(TrainingDiverged, match=r"loss became nan at step 25 \(epoch 2, learning rate"):
        Trainer(fast_config(), callbacks=[poison]).run()
    kept = load_checkpoint(tmp_path / "run" / "last.pt")
    assert kept["epoch"] == 1 and torch.isfinite(kept["model"]["state_dict"]["fc.weight"]).all()


def test_bad_input_fails_before_anything_is_written(tmp_path, fast_config):
    with pytest.raises(KeyError, match="unknown model name"):
        train(fast_config(model="resnet21"))
    with pytest.raises(KeyError, match="unknown recipe"):
        train(fast_config(recipe="fastest"))
    with pytest.raises(FileNotFoundError):
        train(fast_config(data=str(tmp_path / "missing.npz")))
    with pytest.raises(ValueError, match="fewer than one batch"):
        train(fast_config(recipe_overrides={"epochs": 1, "batch_size": 4096}))
    with pytest.raises(ValueError, match="--sync-bn needs CUDA"):
        train(fast_config(sync_bn=True, device="cpu"))
    with pytest.raises(ValueError, match="amp must be one of"):
        train(fast_config(amp="fp8"))
    assert not (tmp_path / "run").exists()


def test_checkpoint_errors(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x80\x02garbage")
    with pytest.raises(WeightsError, match="is corrupt or holds Python objects other than tensors"):
        load_checkpoint(bad)
    bad.write_bytes(b"PK\x03\x04 truncated zip")
    with pytest.raises(WeightsError, match="not a readable checkpoint"):
        load_checkpoint(bad)
    weights_only = tmp_path / "w.pt"
    torch.save(convzoo.create_model("resnet20").state_dict(), weights_only)
    with pytest.raises(WeightsError, match="not a convzoo training checkpoint"):
        load_checkpoint(weights_only)


def test_eval_and_predict_commands(tmp_path, capsys, fast_config):
    result = train(fast_config(recipe_overrides={"epochs": 1, "batch_size": 64}))
    capsys.readouterr()
    assert main(["eval", str(result.out / "best.pt")]) == 0
    out = capsys.readouterr().out
    assert "digits test set, 360 images: top-1 accuracy" in out
    model, data = load_trained(result.out / "best.pt")
    assert data["classes"][:3] == ["0", "1", "2"] and model.in_chans == 1
    from PIL import Image

    image = tmp_path / "digit.png"
    Image.new("L", (40, 40), 0).save(image)
    assert main(["predict", str(result.out / "best.pt"), str(image), "--top-k", "3"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"{image}: ") and line.count("%") == 3
    assert main(["predict", str(result.out / "best.pt"), str(tmp_path / "nope.png")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "broken.png").write_bytes(b"not an image")
    assert main(["predict", str(result.out / "best.pt"), str(tmp_path / "broken.png")]) == 2
    assert "cannot read image" in capsys.readouterr().err


def test_train_command_with_yaml_config(tmp_path, capsys):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("model: resnet20\ndata: digits\nimage_size: 16\nepochs: 1\nbatch_size: 64\nlabel_smoothing: 0.0\n")
    out = tmp_path / "yaml-run"
    assert main(["train", "--config", str(cfg), "--out", str(out), "--no-progress", "--lr", "0.02"]) == 0
    assert "done in" in capsys.readouterr().out
    saved = load_checkpoint(out / "last.pt")
    assert saved["recipe"]["lr"] == 0.02 and saved["recipe"]["label_smoothing"] == 0.0
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochz: 3\n")
    assert main(["train", "--config", str(bad), "--out", str(tmp_path / "x")]) == 2
    assert "unknown setting(s) ['epochz']" in capsys.readouterr().err


def test_two_processes_match_one_with_the_same_global_batch(tmp_path):
    # No batch norm and no augmentation, so the only difference is the order of floating-point sums. The memory
    # format is left to measurement (rank 0 measures and tells rank 1); either format sums in float32.
    common = ["--data", "digits", "--image-size", "32", "--epochs", "1", "--batch-size", "64", "--no-progress"]
    common += ["--amp", "off"]
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("crop_padding: 0\nflip: false\nlabel_smoothing: 0.0\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    single = [
        sys.executable,
        "-m",
        "convzoo.cli",
        "train",
        "lenet5",
        *common,
        "--config",
        str(recipe),
        "--out",
        str(tmp_path / "one"),
    ]
    subprocess.run(single, check=True, env=env, capture_output=True)
    double = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--standalone",
        "-m",
        "convzoo.cli",
        "train",
        "lenet5",
        *common,
        "--config",
        str(recipe),
        "--out",
        str(tmp_path / "two"),
    ]
    done = subprocess.run(double, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    a = load_checkpoint(tmp_path / "one" / "last.pt")
    b = load_checkpoint(tmp_path / "two" / "last.pt")
    assert b["config"]["model"] == "lenet5"
    for key, value in a["model"]["state_dict"].items():
        torch.testing.assert_close(b["model"]["state_dict"][key], value, atol=1e-4, rtol=1e-4)
    assert abs(a["history"][-1]["train_loss"] - b["history"][-1]["train_loss"]) < 1e-4


def test_mixed_precision_channels_last_clipping_and_ema(tmp_path, fast_config):
    result = train(
        fast_config(amp="bf16", channels_last=True, clip_grad=1.0, ema=0.9, deterministic=False),
    )
    assert result.test_top1 > 50
    saved = load_checkpoint(result.out / "last.pt")
    assert "ema" in saved and saved["config"]["amp"] == "bf16"
    model, _ = load_trained(result.out / "last.pt")  # the averaged weights
    raw, _ = load_trained(result.out / "last.pt", ema=False)
    assert not torch.equal(model.fc.weight, raw.fc.weight)


def test_ctrl_c_saves_a_checkpoint_and_exits_cleanly(tmp_path):
    import signal
    import time

    out = tmp_path / "interrupted"
    command = [
        sys.executable,
        "-m",
        "convzoo.cli",
        "train",
        "resnet20",
        "--image-size",
        "16",
        "--epochs",
        "50",
        "--out",
        str(out),
        "--no-progress",
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (out / "last.pt").exists() and time.time() < deadline:
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr[-2000:]
    assert "interrupt: saving a checkpoint" in stderr and "resume with: convzoo train --out" in stdout
    saved = load_checkpoint(out / "last.pt")
    assert 0 < saved["step"] < 50 * 22
