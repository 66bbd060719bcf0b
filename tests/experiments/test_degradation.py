"""The degradation experiment: its report follows the runs' numbers, its verdicts follow the rules, it resumes."""

import csv
import shlex
import shutil

import pytest
import torch

from convzoo.cli import main
from convzoo.experiments.degradation import (
    SETTINGS_FILE,
    NetworkRun,
    degradation_depths,
    degradation_figure,
    degradation_findings,
    judge_degradation,
    run_degradation,
)
from convzoo.train import Trainer, load_checkpoint

# Tiny and fast: the digits at their own 8x8, a class-balanced subset of 128 (two batches of 64), 64 test images.
TINY = {"image_size": 8, "train_size": 128, "test_size": 64, "deterministic": True, "progress": False}
TINY_FLAGS = ["--image-size", "8", "--train-size", "128", "--test-size", "64", "--deterministic", "--no-progress"]
NETWORKS = ["plain20", "resnet20", "plain32", "resnet32"]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """One intra-op thread: on a busy 2-core machine the wake-ups of a second thread cost more than these tiny
    batches gain (a ResNet-32 step on 16x16 images took 13 s with two threads and 0.3 s with one)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One finished experiment: plain and residual networks of 20 and 32 layers, 2 epochs each."""
    return run_degradation((20, 32), "digits", epochs=2, out=tmp_path_factory.mktemp("deg") / "exp", **TINY)


def _history(folder, name):
    """A run's epochs as the engine's checkpoint recorded them, independently of the experiment's own copy."""
    return load_checkpoint(folder / name / "last.pt")["history"]


def _rows(folder):
    with open(folder / "results.csv", newline="") as f:
        return list(csv.DictReader(f))


# -- the report of a real (tiny) experiment ----------------------------------------------------------------------------


def test_report_folder_holds_table_chart_and_evidence(finished):
    out = finished.out
    assert finished.report == out / "report.md" and not finished.stopped
    assert {"report.md", "results.csv", "chart.png", SETTINGS_FILE, *NETWORKS} <= {p.name for p in out.iterdir()}
    assert (out / "chart.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [r["network"] for r in _rows(out)] == NETWORKS
    report = (out / "report.md").read_text()
    assert "| network | shortcuts | depth |" in report and "![chart](chart.png)" in report
    assert "- **Runs:** 4 (one per network), 2 epochs each; seeds 0, 0, 0, 0" in report
    assert "128 training images (a class-balanced subset of 1,437, seed 0)" in report
    assert (
        "lr 0.05, momentum 0.9, nesterov False, weight_decay 0.0001, decay_norm_and_bias True, batch_size 64" in report
    )
    for line in finished.findings:
        assert f"- {line}" in report
    for name in NETWORKS:
        assert (out / name / "report.md").is_file()  # each run is a whole engine run folder


def test_table_numbers_equal_the_run_histories(finished):
    rows = {r["network"]: r for r in _rows(finished.out)}
    for name in NETWORKS:
        history = _history(finished.out, name)
        row = rows[name]
        assert len(history) == int(row["epochs"]) == 2
        assert float(row["train err final (%)"]) == pytest.approx(history[-1]["train_err"], abs=1e-9)
        assert float(row["test err final (%)"]) == pytest.approx(history[-1]["test_err"], abs=1e-9)
        mean_train = (history[0]["train_err"] + history[1]["train_err"]) / 2
        assert float(row["train err mean last 2 (%)"]) == pytest.approx(mean_train, abs=1e-9)
        assert float(row["best test err (%)"]) == pytest.approx(min(h["test_err"] for h in history), abs=1e-9)
        assert int(row["depth"]) == int(name.removeprefix("plain").removeprefix("resnet"))
        assert row["shortcuts"] == ("none" if name.startswith("plain") else "identity (option A)")
    report = (finished.out / "report.md").read_text()
    assert f"| {_history(finished.out, 'plain32')[-1]['train_err']:.2f} |" in report


def test_findings_follow_the_recorded_numbers(finished):
    plain20, plain32 = _history(finished.out, "plain20"), _history(finished.out, "plain32")
    res20, res32 = _history(finished.out, "resnet20"), _history(finished.out, "resnet32")

    def mean(history):
        return sum(r["train_err"] for r in history) / len(history)

    plain_higher = {plain32[-1]["train_err"] > plain20[-1]["train_err"], mean(plain32) > mean(plain20)}
    residual_higher = {res32[-1]["train_err"] > res20[-1]["train_err"], mean(res32) > mean(res20)}
    expected_plain = {frozenset({True}): "appears", frozenset({False}): "does not appear"}.get(
        frozenset(plain_higher), "is unclear"
    )
    expected_residual = {frozenset({True}): "do not reverse", frozenset({False}): "reverse it"}.get(
        frozenset(residual_higher), "is unclear"
    )
    assert expected_plain in finished.findings[0]
    assert expected_residual in finished.findings[1]
    assert f"{plain32[-1]['train_err']:.2f}% vs plain20 {plain20[-1]['train_err']:.2f}%" in finished.findings[0]


# -- the verdict, on hand-made histories -------------------------------------------------------------------------------


def _epochs(*train_errs, test=50.0):
    return [{"epoch": i + 1, "train_err": e, "test_err": test, "seconds": 1.0} for i, e in enumerate(train_errs)]


def test_verdict_sees_degradation_and_its_reversal():
    histories = {
        "plain20": _epochs(30, 20, 10, 9, 8),
        "plain56": _epochs(40, 30, 20, 15, 14),  # deeper plain: higher training error
        "resnet20": _epochs(30, 20, 10, 9, 8),
        "resnet56": _epochs(30, 18, 9, 7, 6),  # deeper residual: lower
    }
    verdict = judge_degradation(histories, [20, 56], window=3)
    assert verdict.degradation == "yes" and verdict.reversed == "yes"
    assert verdict.plain.final == (8, 14) and verdict.plain.mean == pytest.approx((9, 49 / 3))
    findings = degradation_findings(verdict, epochs=164, train_images=50_000)
    assert findings[0].startswith("Degradation appears") and "plain56 14.00% vs plain20 8.00%" in findings[0]
    assert findings[1].startswith("The residual networks reverse it")
    assert len(findings) == 2  # nothing to explain


def test_verdict_without_degradation_explains_why():
    histories = {
        "plain20": _epochs(5, 0.6, 0.5),
        "plain56": _epochs(6, 0.5, 0.4),  # not higher: no degradation, and both near 0
        "resnet20": _epochs(5, 0.6, 0.5),
        "resnet56": _epochs(5, 0.7, 0.8),  # higher: not reversed
    }
    verdict = judge_degradation(histories, [56, 20], window=2)
    assert verdict.degradation == "no" and verdict.reversed == "no"
    findings = degradation_findings(verdict, epochs=3, train_images=1437)
    assert findings[0].startswith("Degradation does not appear")
    assert findings[1].startswith("The residual networks do not reverse it")
    reasons = " ".join(findings[2:])
    assert "only 3 epochs" in reasons and "1,437 training images" in reasons and "below 1%" in reasons


def test_verdict_is_unclear_when_last_epoch_and_mean_disagree_and_names_the_noise():
    histories = {
        "plain20": _epochs(20, 10, 12),
        "plain56": _epochs(20, 13, 11),  # lower at the end, higher on average
        "resnet20": _epochs(20, 10, 10),
        "resnet56": _epochs(20, 10, 10),  # equal: counts as reversed (lower or equal)
    }
    verdict = judge_degradation(histories, [20, 56], window=2)
    assert verdict.degradation == "mixed" and verdict.reversed == "yes"
    findings = degradation_findings(verdict, epochs=100, train_images=50_000)
    assert findings[0].startswith("Degradation is unclear")
    assert any("epoch to epoch" in line for line in findings[2:])


def test_verdict_window_is_clamped_to_the_run_and_bad_input_is_refused():
    histories = {name: _epochs(10) for name in ("plain20", "plain56", "resnet20", "resnet56")}
    assert judge_degradation(histories, [20, 56], window=5).plain.window == 1
    with pytest.raises(ValueError, match="at least two depths"):
        judge_degradation(histories, [20])
    with pytest.raises(KeyError, match="plain32"):
        judge_degradation(histories, [20, 32])
    with pytest.raises(ValueError, match="no finished epoch"):
        judge_degradation({**histories, "plain56": []}, [20, 56])


# -- the chart ---------------------------------------------------------------------------------------------------------


def test_chart_draws_thin_training_and_bold_test_lines_one_colour_per_network(tmp_path):
    import matplotlib.pyplot as plt

    networks = [
        NetworkRun(f"{kind}{d}", kind == "resnet", d, 0, tmp_path, 0, _epochs(30 - d / 10, 20 - d / 10, test=25))
        for d in (20, 32, 56)
        for kind in ("plain", "resnet")
    ]
    fig = degradation_figure(networks)
    try:
        lines = fig.axes[0].get_lines()
        train = {line.get_color(): line for line in lines if line.get_gid() == "train"}
        test = {line.get_color(): line for line in lines if line.get_gid() == "test"}
        assert len(train) == len(test) == len(networks)  # one colour per network, shared by its two curves
        assert set(train) == set(test)
        for colour, line in train.items():
            assert line.get_linewidth() < test[colour].get_linewidth() / 2
            assert line.get_linestyle() == "--" and test[colour].get_linestyle() == "-"
        legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
        assert {"plain-20", "ResNet-56", "training error (thin, dashed)", "test error (bold)"} <= set(legend)
    finally:
        plt.close(fig)


# -- the command, resuming and refusing --------------------------------------------------------------------------------


def test_command_runs_stops_and_continues_then_refuses_a_finished_folder(tmp_path, monkeypatch, capsys):
    out = tmp_path / "cli"
    run = Trainer.run

    def stop_at_first_step(self):
        self.stop_requested = True  # as a Ctrl-C: the engine saves last.pt after this step and returns
        return run(self)

    monkeypatch.setattr(Trainer, "run", stop_at_first_step)
    argv = ["experiment", "degradation", "--depths", "20", "32", "--epochs", "1", *TINY_FLAGS, "--out", str(out)]
    assert main(argv) == 130
    hint = capsys.readouterr().out.splitlines()[-1]
    assert hint.startswith("interrupted; to continue, run: convzoo experiment degradation --depths 20 32")
    assert not (out / "report.md").exists() and (out / "plain20" / "last.pt").is_file()
    assert load_checkpoint(out / "plain20" / "last.pt")["step"] == 1

    monkeypatch.setattr(Trainer, "run", run)
    continued = shlex.split(hint.removeprefix("interrupted; to continue, run: "))[1:]
    assert main(continued) == 0
    printed = capsys.readouterr().out
    assert "plain20: resuming" in printed and "resnet32: training" in printed
    assert f"report: {out / 'report.md'}" in printed and "Degradation" in printed
    assert [r["network"] for r in _rows(out)] == NETWORKS
    assert all(len(_history(out, name)) == 1 for name in NETWORKS)

    assert main(continued) == 2
    assert "already holds a finished degradation experiment" in capsys.readouterr().err


def test_rerun_skips_finished_runs_resumes_unfinished_and_checks_settings(finished, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(finished.out, out)
    for name in ("report.md", "results.csv", "chart.png", "plain32/report.md"):
        (out / name).unlink()  # the experiment and plain32's run look interrupted before their last files
    with pytest.raises(ValueError, match=r"(?s)other settings.*'epochs': 2} -> \{.*'epochs': 3}"):
        run_degradation((20, 32), "digits", epochs=3, out=out, **TINY)
    with pytest.raises(ValueError, match=r"(?s)other data.*train_images: 128 -> 120"):
        run_degradation((20, 32), "digits", epochs=2, out=out, **{**TINY, "train_size": 120})
    assert not (out / "report.md").exists()

    again = run_degradation((20, 32), "digits", epochs=2, out=out, **TINY)
    status = {n.model: n.status for n in again.networks}
    assert status == {name: "resumed" if name == "plain32" else "finished earlier" for name in NETWORKS}
    for before, after in zip(finished.networks, again.networks):
        assert before.history == after.history  # nothing was trained again
    assert again.findings == finished.findings and (out / "report.md").is_file()


# -- bad input: clear errors, nothing written --------------------------------------------------------------------------


def test_valid_depths_are_the_cifar_pairs():
    depths = degradation_depths()
    assert {20, 32, 44, 56, 110} <= set(depths)
    assert not {18, 34, 50} & set(depths)  # the ImageNet networks are another architecture


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"depths": (20, 21)}, ValueError, r"depth 21; valid depths: 20, 32, 44, 56, 110"),
        ({"depths": (20,)}, ValueError, "two or more different depths"),
        ({"depths": (20, 20)}, ValueError, "two or more different depths"),
        ({"depths": ("20", "56")}, TypeError, "whole numbers"),
        ({"epochs": 0}, ValueError, "epochs must be a positive whole number"),
        ({"window": -1}, ValueError, "window must be"),
        ({"train_size": 5000}, ValueError, "subset of 5,000 images asked for"),
        ({"recipe_overrides": {"lr": -1.0}}, ValueError, "must be positive"),
        ({"recipe": "nope"}, KeyError, "unknown recipe"),
        ({"setting": "slow"}, ValueError, "unknown setting 'slow'"),
        ({"amp": "fp8"}, ValueError, "amp must be one of"),
        ({"data": "missing/cifar10"}, FileNotFoundError, "missing/cifar10"),
        ({"model": "resnet20"}, TypeError, "model: set by the experiment"),
        ({"colour": "red"}, TypeError, "colour"),
    ],
)
def test_bad_input_is_refused_before_anything_is_written(tmp_path, kwargs, error, message):
    settings = {"depths": (20, 32), "data": "digits", "epochs": 1, **TINY, **kwargs}
    with pytest.raises(error, match=message):
        run_degradation(out=tmp_path / "exp", **settings)
    assert not (tmp_path / "exp").exists()


def test_command_reports_bad_depths_and_epochs(tmp_path, capsys):
    out = tmp_path / "exp"
    assert main(["experiment", "degradation", "--depths", "20", "57", "--out", str(out)]) == 2
    assert "valid depths: 20, 32, 44, 56, 110" in capsys.readouterr().err
    for bad in (["--epochs", "0"], ["--depths", "twenty"], ["--train-size", "-5"]):
        with pytest.raises(SystemExit) as exit_info:
            main(["experiment", "degradation", *bad, "--out", str(out)])
        assert exit_info.value.code == 2
    assert "must be a positive integer" in capsys.readouterr().err
    assert not out.exists()
