"""Measuring the training step's precision and memory format: candidates, measurement, cache, and the engine."""

import json
import math
import os

import pytest
import torch

import convzoo
from convzoo.cli import build_parser
from convzoo.train import TrainConfig, Trainer, load_checkpoint, train, tuning
from convzoo.train.tuning import (
    NoisyMeasurementWarning,
    StepFormat,
    cached_step_formats,
    candidate_formats,
    clear_step_format_cache,
    measure_format_runs,
    measure_formats,
    resolve_step_format,
)

CPU = torch.device("cpu")
FP32, FP32_CL, BF16, BF16_CL = StepFormat(), StepFormat("off", True), StepFormat("bf16"), StepFormat("bf16", True)


def small_batch():
    return torch.randn(4, 1, 16, 16), torch.randint(0, 10, (4,))


def test_candidates_follow_what_is_left_open(monkeypatch):
    monkeypatch.setattr(tuning, "native_bf16", lambda device: True)
    assert candidate_formats(CPU) == [FP32, FP32_CL, BF16, BF16_CL]
    assert candidate_formats(CPU, channels_last=False) == [FP32, BF16]
    assert candidate_formats(CPU, amp="off") == [FP32, FP32_CL]
    assert candidate_formats(CPU, amp="bf16", channels_last=True) == [BF16_CL]
    monkeypatch.setattr(tuning, "native_bf16", lambda device: False)  # emulated bf16 is never worth measuring
    assert candidate_formats(CPU) == [FP32, FP32_CL]
    assert FP32.label == "fp32" and BF16_CL.label == "bf16 channels-last"


def test_measuring_changes_neither_the_model_nor_the_random_streams():
    model = convzoo.create_model("resnet20", in_chans=1, num_classes=10)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    batch = small_batch()
    rng = torch.get_rng_state()
    timings = measure_formats(model, batch, [FP32, FP32_CL])
    assert set(timings) == {FP32, FP32_CL} and all(t > 0 for t in timings.values())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # BN statistics included
    assert all(p.grad is None for p in model.parameters())
    assert model.conv1.weight.is_contiguous()
    assert torch.equal(torch.get_rng_state(), rng)


def test_the_choice_is_cached_per_job_and_measured_again_when_the_options_change(tmp_path, monkeypatch):
    monkeypatch.setenv("CONVZOO_HOME", str(tmp_path))
    model = convzoo.create_model("lenet5", num_classes=10)
    batch = torch.randn(2, 1, 32, 32), torch.randint(0, 10, (2,))
    calls = []

    def fake_measure(model, batch, candidates, criterion=None):
        calls.append(list(candidates))
        return {fmt: [0.001 if fmt == FP32_CL else 0.002] for fmt in candidates}

    monkeypatch.setattr(tuning, "measure_format_runs", fake_measure)
    chosen, timings = resolve_step_format(model, batch, [FP32, FP32_CL], key="lenet5 job")
    assert chosen == FP32_CL and timings[FP32] == 0.002 and len(calls) == 1
    saved = json.loads((tmp_path / "step-formats.json").read_text())
    (entry,) = saved.values()
    assert entry["chosen"] == "fp32 channels-last" and entry["ms_per_step"] == {"fp32": 2.0, "fp32 channels-last": 1.0}
    assert resolve_step_format(model, batch, [FP32, FP32_CL], key="lenet5 job") == (FP32_CL, None)
    assert len(calls) == 1  # read from the cache
    resolve_step_format(model, batch, [FP32, FP32_CL, BF16, BF16_CL], key="lenet5 job")
    resolve_step_format(model, batch, [FP32, FP32_CL], key="another job")
    assert len(calls) == 3
    assert len(json.loads((tmp_path / "step-formats.json").read_text())) == 2
    (tmp_path / "step-formats.json").write_text("{not json")  # a damaged cache means measuring again
    assert resolve_step_format(model, batch, [FP32, FP32_CL], key="lenet5 job")[0] == FP32_CL
    assert len(calls) == 4
    assert resolve_step_format(model, batch, [BF16], key="x") == (BF16, None) and len(calls) == 4


def test_a_close_call_is_measured_again_by_the_next_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("CONVZOO_HOME", str(tmp_path))
    model = convzoo.create_model("lenet5", num_classes=10)
    batch = torch.randn(2, 1, 32, 32), torch.randint(0, 10, (2,))
    draws = iter([(1.00, 1.05), (1.20, 0.98), (1.10, 1.10), (0.5, 0.5)])  # ms for fp32, fp32 channels-last

    def fake_measure(model, batch, candidates, criterion=None):
        a, b = next(draws)
        return {FP32: [a / 1000], FP32_CL: [b / 1000]}

    monkeypatch.setattr(tuning, "measure_format_runs", fake_measure)
    chosen = [resolve_step_format(model, batch, [FP32, FP32_CL], key="close")[0] for _ in range(4)]
    assert chosen == [FP32, FP32_CL, FP32_CL, FP32_CL]  # the fourth run reads the settled choice
    (entry,) = json.loads((tmp_path / "step-formats.json").read_text()).values()
    assert entry["runs"] == 3 and entry["ms_per_step"] == {"fp32": 1.0, "fp32 channels-last": 0.98}
    assert next(draws) == (0.5, 0.5)  # not measured a fourth time


def test_the_timed_passes_are_kept_and_summarised_by_the_fastest():
    model = convzoo.create_model("lenet5", num_classes=10)
    batch = torch.randn(2, 1, 32, 32), torch.randint(0, 10, (2,))
    clock = iter(range(100)).__next__  # one tick between readings: every pass takes exactly 1 "second"
    runs = measure_format_runs(model, batch, [FP32, FP32_CL], rounds=2, timer=clock)
    assert runs == {FP32: [1, 1], FP32_CL: [1, 1]}  # the untimed first pass of each format is left out
    assert set(measure_formats(model, batch, [FP32], rounds=1)) == {FP32}


def test_a_measurement_whose_passes_disagree_is_not_remembered(tmp_path, monkeypatch):
    monkeypatch.setenv("CONVZOO_HOME", str(tmp_path))
    model = convzoo.create_model("lenet5", num_classes=10)
    batch = torch.randn(2, 1, 32, 32), torch.randint(0, 10, (2,))
    # Seconds of three passes of each format: the first measurement was disturbed (fp32 once took 2.752 s).
    draws = iter(
        [
            {FP32: [0.150, 2.752, 0.160], FP32_CL: [0.110, 0.112, 0.109]},
            {FP32: [0.150, 0.148, 0.151], FP32_CL: [0.110, 0.112, 0.109]},
        ]
    )
    monkeypatch.setattr(tuning, "measure_format_runs", lambda *args, **kwargs: next(draws))
    with pytest.warns(NoisyMeasurementWarning, match="fp32 150 to 2752 ms per step.*not remembered"):
        chosen, timings = resolve_step_format(model, batch, [FP32, FP32_CL], key="busy")
    assert chosen == FP32_CL and timings == {FP32: 0.150, FP32_CL: 0.109}  # this run still uses the choice
    assert cached_step_formats() == {}
    chosen, timings = resolve_step_format(model, batch, [FP32, FP32_CL], key="busy")  # measured again
    assert chosen == FP32_CL and timings is not None
    (entry,) = cached_step_formats().values()
    assert entry["runs"] == 1 and entry["spread"] == {
        "fp32": pytest.approx(1.02, abs=0.001),
        "fp32 channels-last": 1.028,
    }
    assert resolve_step_format(model, batch, [FP32, FP32_CL], key="busy") == (FP32_CL, None)


def test_a_remembered_choice_can_be_forgotten_or_measured_again(tmp_path, monkeypatch):
    monkeypatch.setenv("CONVZOO_HOME", str(tmp_path))
    model = convzoo.create_model("lenet5", num_classes=10)
    batch = torch.randn(2, 1, 32, 32), torch.randint(0, 10, (2,))
    winner = {"fmt": FP32}

    def fake_measure(model, batch, candidates, criterion=None):
        return {fmt: [0.001 if fmt == winner["fmt"] else 0.002] for fmt in candidates}

    monkeypatch.setattr(tuning, "measure_format_runs", fake_measure)
    assert clear_step_format_cache() == []  # nothing to forget
    for key in ("lenet5(width=2) 10 classes | 2x1x32x32", "lenet5() 10 classes | 2x1x32x32", "resnet20() 10 classes"):
        resolve_step_format(model, batch, [FP32, FP32_CL], key=key)
    assert len(cached_step_formats()) == 3
    winner["fmt"] = FP32_CL  # the machine's opinion changed; the remembered choice stands...
    assert resolve_step_format(model, batch, [FP32, FP32_CL], key="resnet20() 10 classes") == (FP32, None)
    # ...until measured afresh, which replaces it
    chosen, timings = resolve_step_format(model, batch, [FP32, FP32_CL], key="resnet20() 10 classes", remeasure=True)
    assert chosen == FP32_CL and timings is not None
    assert resolve_step_format(model, batch, [FP32, FP32_CL], key="resnet20() 10 classes") == (FP32_CL, None)
    removed = clear_step_format_cache("lenet5")
    assert len(removed) == 2 and all(k.startswith("lenet5(") for k in removed)
    (left,) = cached_step_formats()
    assert left.startswith("resnet20() 10 classes")
    assert clear_step_format_cache("lenet") == []  # a model name, not a prefix of one
    assert clear_step_format_cache() == [left]
    assert not (tmp_path / "step-formats.json").exists()
    (tmp_path / "step-formats.json").write_text("{not json")
    assert clear_step_format_cache() == [] and not (tmp_path / "step-formats.json").exists()


def fast_config(tmp_path, name, **kwargs):
    settings = dict(
        data="digits", image_size=16, recipe_overrides={"epochs": 1}, out=str(tmp_path / name), progress=False
    )
    return TrainConfig(**{**settings, **kwargs})


def force(monkeypatch, tmp_path, winner):
    """Make the measurement pick ``winner`` among the candidates, with an empty cache."""
    monkeypatch.setenv("CONVZOO_HOME", str(tmp_path / "home"))
    seen = []

    def fake_measure(model, batch, candidates, criterion=None):
        seen.append(candidates)
        assert batch[0].shape == (64, 1, 16, 16)
        return {fmt: [0.001 if fmt == winner else 0.002] for fmt in candidates}

    monkeypatch.setattr(tuning, "measure_format_runs", fake_measure)
    monkeypatch.setattr(tuning, "native_bf16", lambda device: True)
    return seen


def test_the_engine_trains_in_the_measured_format_and_resumes_in_it(tmp_path, monkeypatch, capsys):
    seen = force(monkeypatch, tmp_path, BF16_CL)
    cfg = fast_config(tmp_path, "auto", recipe_overrides={"epochs": 2})

    def stop(state):
        if state.step == 5:
            assert state.trainer.model.conv1.weight.is_contiguous(memory_format=torch.channels_last)
            state.request_stop()

    Trainer(cfg, callbacks=[stop]).run()
    assert seen == [[FP32, FP32_CL, BF16, BF16_CL]]
    assert "bf16 channels-last (fastest measured" in capsys.readouterr().out
    assert load_checkpoint(tmp_path / "auto" / "last.pt")["step_format"] == {"amp": "bf16", "channels_last": True}
    force(monkeypatch, tmp_path, FP32)  # the machine's opinion changed; the run keeps the format it began with
    (tmp_path / "home" / "step-formats.json").unlink()
    resumed = train(cfg, resume=True)
    assert "as the run began" in (resumed.out / "report.md").read_text()
    assert load_checkpoint(resumed.out / "last.pt")["step_format"] == {"amp": "bf16", "channels_last": True}


def test_measuring_does_not_change_the_result(tmp_path, monkeypatch):
    force(monkeypatch, tmp_path, FP32)
    measured = train(fast_config(tmp_path, "measured"))
    fixed = train(fast_config(tmp_path, "fixed", amp="off", channels_last=False))
    a = load_checkpoint(measured.out / "last.pt")["model"]["state_dict"]
    b = load_checkpoint(fixed.out / "last.pt")["model"]["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_deterministic_runs_measure_nothing(tmp_path, monkeypatch):
    seen = force(monkeypatch, tmp_path, BF16_CL)
    result = train(fast_config(tmp_path, "det", deterministic=True))
    assert seen == []
    assert not torch.are_deterministic_algorithms_enabled()  # the process-wide switch is put back
    assert load_checkpoint(result.out / "last.pt")["step_format"] == {"amp": "off", "channels_last": False}
    assert "deterministic mode measures nothing" in (result.out / "report.md").read_text()


def test_command_line_flags():
    parser = build_parser()
    args = parser.parse_args(["train", "resnet20"])
    # Flags not given stay out of the arguments, so TrainConfig's defaults (auto) apply.
    assert not hasattr(args, "amp") and not hasattr(args, "channels_last")
    args = parser.parse_args(["train", "resnet20", "--amp", "auto", "--no-channels-last"])
    assert args.amp == "auto" and args.channels_last is False
    assert parser.parse_args(["train", "resnet20", "--channels-last"]).channels_last is True
    assert TrainConfig().amp == "auto" and TrainConfig().channels_last is None


def test_a_real_measurement(tmp_path, monkeypatch):
    monkeypatch.setenv("CONVZOO_HOME", str(tmp_path))
    model = convzoo.create_model("resnet20", in_chans=1, num_classes=10)
    candidates = candidate_formats(CPU)  # with bf16 too where this CPU has it natively
    # However busy the test machine, this measurement is remembered: the file is what is checked here.
    chosen, timings = resolve_step_format(model, small_batch(), candidates, key="resnet20 tiny", noisy_spread=math.inf)
    assert set(timings) == set(candidates) and chosen == min(timings, key=timings.get)
    assert os.path.isfile(tmp_path / "step-formats.json")
