"""Training behaviours of the engine: the weight average, the report, file permissions, resuming, several processes."""

import json

import pytest
import torch

from convzoo.train import TrainConfig, Trainer, load_checkpoint, load_trained, train


def test_ema_of_a_short_run_learns_and_is_what_the_run_evaluates_and_reports(tmp_path, fast_config):
    # 44 steps: without a warm-up a decay of 0.999 would keep 96% of the random initialisation.
    plain = train(fast_config("plain"))
    averaged = train(fast_config("ema", ema=0.999))
    assert plain.test_top1 > 60
    assert averaged.test_top1 > 60 and averaged.test_top1 > plain.test_top1 - 15
    assert [row["evaluated"] for row in averaged.history] == ["ema", "ema"]
    assert plain.history[-1]["evaluated"] == "model"
    report = (averaged.out / "report.md").read_text()
    assert "EMA: on, decay 0.999" in report and "EMA: off" in (plain.out / "report.md").read_text()
    settings = json.loads(next(line for line in report.splitlines() if "Settings: " in line).split("Settings: ", 1)[1])
    assert settings["ema"] == 0.999 and settings["seed"] == 0 and settings["amp"] == "auto"
    saved = load_checkpoint(averaged.out / "last.pt")
    assert int(saved["ema"]["n_updates"]) == averaged.steps_done
    model, _ = load_trained(averaged.out / "last.pt")
    raw, _ = load_trained(averaged.out / "last.pt", ema=False)
    assert not torch.equal(model.fc.weight, raw.fc.weight)
    # Batch-norm statistics are the trained model's, not a slow average of them.
    assert torch.equal(model.bn1.running_var, raw.bn1.running_var)


def test_ema_warm_up_and_buffers():
    from convzoo.train.components import ModelEma

    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    ema = ModelEma(net, 0.999)
    assert ema.current_decay() == pytest.approx(0.1)
    with torch.no_grad():
        net[0].weight.fill_(1.0)
        net[1].running_mean.fill_(3.0)
    ema.update(net)
    assert int(ema.n_updates) == 1 and ema.current_decay() == pytest.approx(2 / 11)
    assert torch.equal(ema.module[1].running_mean, net[1].running_mean)
    for _ in range(10_000):
        ema.update(net)
    assert ema.current_decay() == 0.999
    torch.testing.assert_close(ema.module[0].weight, net[0].weight)
    with pytest.raises(ValueError, match="between 0 and 1"):
        ModelEma(net, 1.5)


def test_resume_with_ema_is_bitwise(tmp_path, fast_config):
    recipe = {"epochs": 2, "batch_size": 64}
    straight = train(fast_config("straight", recipe_overrides=recipe, ema=0.99))
    cfg = fast_config("interrupted", recipe_overrides=recipe, ema=0.99)

    def stop(state):
        if state.step == 30:
            state.request_stop()

    assert Trainer(cfg, callbacks=[stop]).run().stopped_early
    assert int(load_checkpoint(tmp_path / "interrupted" / "last.pt")["ema"]["n_updates"]) == 30
    resumed = train(cfg, resume=True)
    a = load_checkpoint(straight.out / "last.pt")["ema"]
    b = load_checkpoint(resumed.out / "last.pt")["ema"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [r["test_top1"] for r in resumed.history] == [r["test_top1"] for r in straight.history]
    rows = [json.loads(line) for line in (resumed.out / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2


def test_curves_keep_a_zero_error_on_the_log_chart_with_whole_epoch_ticks(tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    from convzoo.train.run_folder import LOG_FLOOR, plot_curves

    figures = []
    monkeypatch.setattr(Figure, "savefig", lambda fig, *args, **kwargs: figures.append(fig))
    history = [
        {"epoch": e, "train_err": err, "test_err": 2.0, "train_loss": 0.3, "test_loss": 0.1}
        for e, err in ((1, 5.0), (2, 0.0))
    ]
    plot_curves(history, tmp_path / "curves.png", title="t", note="training loss with label smoothing 0.1")
    (fig,) = figures
    errors, losses = fig.axes
    assert errors.get_yscale() == "log"
    train_line = errors.get_lines()[0]
    assert list(train_line.get_ydata()) == [5.0, LOG_FLOOR]
    assert f"drawn at {LOG_FLOOR:g}" in errors.get_ylabel()
    lo, hi = errors.get_ylim()
    assert lo <= LOG_FLOOR <= hi
    for ax in (errors, losses):
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks)
    assert "label smoothing" in fig._suptitle.get_text()


def test_checkpoints_get_the_permissions_of_other_files(tmp_path):
    import os

    from convzoo.train.checkpoint import save_checkpoint

    previous = os.umask(0o027)
    try:
        save_checkpoint({"step": 1}, tmp_path / "last.pt")
        (tmp_path / "metrics.csv").write_text("step\n1\n")
    finally:
        os.umask(previous)
    assert (tmp_path / "last.pt").stat().st_mode & 0o777 == (tmp_path / "metrics.csv").stat().st_mode & 0o777 == 0o640


def test_data_root_follows_convzoo_home(tmp_path, monkeypatch):
    from pathlib import Path

    from convzoo.data import default_data_root

    monkeypatch.delenv("CONVZOO_DATA", raising=False)
    monkeypatch.setenv("CONVZOO_HOME", str(tmp_path / "home"))
    assert default_data_root() == tmp_path / "home" / "data"
    monkeypatch.setenv("CONVZOO_DATA", str(tmp_path / "data"))
    assert default_data_root() == tmp_path / "data"
    monkeypatch.delenv("CONVZOO_DATA")
    monkeypatch.delenv("CONVZOO_HOME")
    assert default_data_root() == Path.home() / ".cache" / "convzoo" / "data"


def test_resume_config_takes_the_saved_settings_and_refuses_only_explicit_changes(tmp_path):
    from convzoo.train.checkpoint import resume_config, save_checkpoint
    from convzoo.train.config import check_same_settings

    out = tmp_path / "run"
    saved = TrainConfig(
        data="shapes", model="resnet20", recipe_overrides={"epochs": 5}, ema=0.999, seed=3, out=str(out)
    )
    save_checkpoint({"config": saved.as_dict(), "recipe": {"epochs": 5, "lr": 0.05, "batch_size": 64}}, out / "last.pt")

    # Only the folder: every setting is the saved run's, not TrainConfig's defaults (data would be "digits").
    cfg = resume_config(out, {"out": str(out), "resume": True})
    assert cfg.data == "shapes" and cfg.ema == 0.999 and cfg.seed == 3 and cfg.resume and cfg.out == str(out)
    check_same_settings(saved.as_dict(), cfg)
    # Explicit settings equal to the saved ones are fine; so are changes to the display settings.
    cfg = resume_config(out, {"data": "shapes", "recipe_overrides": {"epochs": 5, "lr": 0.05}, "progress": False})
    assert cfg.progress is False and cfg.recipe_overrides == {"epochs": 5}
    with pytest.raises(ValueError, match=r"changed settings[\s\S]*data: 'shapes' -> 'digits'[\s\S]*lr: 0.05 -> 0.1"):
        resume_config(out, {"data": "digits", "recipe_overrides": {"lr": 0.1}})
    with pytest.raises(ValueError, match="unknown setting"):
        resume_config(out, {"epochz": 3})
    with pytest.raises(FileNotFoundError, match="cannot resume"):
        resume_config(tmp_path / "nothing")


def test_top5_is_left_out_of_the_display_for_five_classes_or_fewer():
    from convzoo.train.tasks import ClassificationTask

    row = {
        "train_loss": 0.5,
        "train_err": 10.0,
        "test_loss": 0.4,
        "test_err": 8.0,
        "test_top1": 92.0,
        "test_top5": 100.0,
    }
    few, many, unknown = (ClassificationTask(num_classes=n) for n in (5, 10, None))
    assert "top-5" not in few.describe(row) and "top-5" in many.describe(row) and "top-5" in unknown.describe(row)
    assert all("top-5" not in name for name, _ in few.report(row, 92.0))
    assert any("top-5" in name for name, _ in many.report(row, 92.0))
    assert set(few.columns({"loss": 0.5, "err": 10.0}, {"loss": 0.4, "top1": 92.0, "top5": 100.0})) == set(row)


RANK_SCRIPT = """
import json, os, sys
from convzoo.train import TrainConfig, train

out = sys.argv[1]
recipe = {"epochs": 1, "batch_size": 64}
config = TrainConfig(model="resnet20", data="digits", image_size=16, recipe_overrides=recipe, out=out + "/run",
                     progress=False, amp="off", channels_last=False)
result = train(config)
with open(f"{out}/rank{os.environ['RANK']}.json", "w") as f:
    json.dump({"is_main": result.is_main, "top1": result.test_top1, "history": result.history}, f)
"""


def test_two_processes_print_once_and_agree_on_metrics_of_the_whole_test_set(tmp_path):
    import os
    import subprocess
    import sys

    from convzoo.data import Augment, FastLoader
    from convzoo.train import evaluate

    script = tmp_path / "run.py"
    script.write_text(RANK_SCRIPT)
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone", str(script)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([*command, str(tmp_path)], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("epoch   1/1") == 1 and done.stdout.count("resnet20 on digits") == 1
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["is_main"] for r in ranks] == [True, False]
    # Batch norm makes the processes' statistics drift apart; both report the metrics of rank 0's saved model.
    metrics = [
        [{k: v for k, v in row.items() if k.startswith(("train_", "test_"))} for row in r["history"]] for r in ranks
    ]
    assert metrics[0] == metrics[1] and metrics[0][0]["test_top1"] > 0
    model, data = load_trained(tmp_path / "run" / "last.pt")
    from convzoo.data import load_dataset

    _, test = load_dataset("digits", image_size=16)
    loader = FastLoader(
        test,
        batch_size=256,
        shuffle=False,
        augment=Augment(mean=tuple(data["mean"]), std=tuple(data["std"]), out_size=16),
    )
    whole = evaluate(model, loader, device=torch.device("cpu"))
    assert whole["n"] == 360
    assert ranks[0]["top1"] == pytest.approx(whole["top1"])
    assert ranks[0]["history"][-1]["test_loss"] == pytest.approx(whole["loss"], rel=1e-4)
