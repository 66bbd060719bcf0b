"""Choosing the numeric format of a training step by measuring it.

Whether mixed precision and the channels-last memory format speed a training step up depends on the network and the
hardware, and not always in the same direction. Measured on one 2-core AVX-512-BF16 CPU (ms per step, fp32 /
channels-last / bf16 / both): ResNet-20 at batch 64, 147 / 109 / 97 / 75; MobileNet v2, 114 / 79 / 134 / 98;
DenseNet-BC-100, 1061 / 789 / 463 / 580; VGG-11 at 64 px, 668 / 1095 / 618 / 621. No fixed rule picks the best of
each, so ``--amp auto`` and channels-last ``auto`` time a few forward/backward passes of every candidate on a copy
of the model, as cuDNN's benchmark mode does for convolution algorithms, and keep the fastest. The choice is cached
per model, input, batch, device and torch version in ``$CONVZOO_HOME/step-formats.json``, so only the first run of a
job pays for the measurement (the first three, when the two fastest formats are within 10% of each other).

A measurement whose passes of one format disagree (slowest over fastest above ``NOISY_SPREAD``) was disturbed by load
from elsewhere on the machine (fp32 took 2,752 ms per step for ResNet-20 while another process held a core): it
still chooses this run's format, but it is not remembered, so the next run measures again. A remembered choice is
forgotten with `clear_step_format_cache` or measured afresh with ``resolve_step_format(..., remeasure=True)``.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import platform
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from convzoo._files import convzoo_home, write_atomically
from convzoo.models.base import classification_loss

__all__ = [
    "NOISY_SPREAD",
    "NoisyMeasurementWarning",
    "StepFormat",
    "autocast",
    "cached_step_formats",
    "candidate_formats",
    "clear_step_format_cache",
    "measure_format_runs",
    "measure_formats",
    "native_bf16",
    "resolve_step_format",
]


@dataclass(frozen=True)
class StepFormat:
    """The numeric format of a training step.

    Attributes:
        amp: ``"off"``, ``"bf16"`` or ``"fp16"``.
        channels_last: Whether images and weights are in the channels-last memory format.
    """

    amp: str = "off"
    channels_last: bool = False

    @property
    def label(self) -> str:
        precision = "fp32" if self.amp == "off" else self.amp
        return precision + (" channels-last" if self.channels_last else "")

    def as_dict(self) -> dict[str, Any]:
        return {"amp": self.amp, "channels_last": self.channels_last}


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes in bfloat16 natively (an emulated bf16 is slower than float32)."""
    if device.type == "cuda":
        try:
            return torch.cuda.is_bf16_supported(including_emulation=False)
        except TypeError:  # torch before 2.4 has no emulation to exclude
            return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        try:
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):
            return False
    return False


def candidate_formats(
    device: torch.device, *, amp: str = "auto", channels_last: bool | None = None
) -> list[StepFormat]:
    """The formats worth measuring: every combination left open by ``amp`` (``"auto"``) and ``channels_last`` (None).

    ``auto`` precision considers float32 always, bf16 where the device runs it natively, and fp16 on CUDA.
    """
    if amp == "auto":
        amps = ["off"]
        if native_bf16(device):
            amps.append("bf16")
        if device.type == "cuda":
            amps.append("fp16")
    else:
        amps = [amp]
    layouts = [False, True] if channels_last is None else [channels_last]
    return [StepFormat(a, c) for a in amps for c in layouts]


def autocast(device: torch.device, amp: str):
    """The autocast context of a precision (a no-op for ``"off"``)."""
    if amp == "off":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_format_runs(
    model: nn.Module,
    batch: tuple[torch.Tensor, torch.Tensor],
    candidates: list[StepFormat],
    *,
    criterion: Callable[..., torch.Tensor] | None = None,
    rounds: int = 3,
    timer: Callable[[], float] = time.perf_counter,
) -> dict[StepFormat, list[float]]:
    """Seconds of every timed forward/backward pass of ``model`` on ``batch`` in each format.

    Each format first runs once untimed (building kernels and caches), then the formats take turns for ``rounds``
    rounds: a burst of load from elsewhere on the machine then slows one pass, not one format's every pass. The
    model is copied, so its weights, batch-norm statistics and gradients are untouched, and the random number
    generators are restored afterwards, so measuring does not change what the run computes. A format that runs out
    of memory is not run again (and left out if it never finished a timed pass).
    """
    x, y = batch
    device = x.device
    criterion = criterion or nn.CrossEntropyLoss()
    devices = [device] if device.type == "cuda" else []
    runs: dict[StepFormat, list[float]] = {}
    failed: set[StepFormat] = set()
    with torch.random.fork_rng(devices=devices):
        probe = copy.deepcopy(model).train()
        for timed in [False] + [True] * rounds:
            for fmt in candidates:
                if fmt in failed:
                    continue
                memory_format = torch.channels_last if fmt.channels_last else torch.contiguous_format
                probe = probe.to(memory_format=memory_format)
                inputs = x.contiguous(memory_format=memory_format)
                try:
                    _sync(device)
                    start = timer()
                    with autocast(device, fmt.amp):
                        loss = classification_loss(probe(inputs), y, criterion)
                    loss.float().backward()
                    _sync(device)
                    seconds = timer() - start
                except torch.cuda.OutOfMemoryError:
                    # The copy doubles the weights; a format that does not fit beside them is not chosen.
                    failed.add(fmt)
                    seconds = None
                loss = None
                probe.zero_grad(set_to_none=True)
                if seconds is None:
                    torch.cuda.empty_cache()
                elif timed:
                    runs.setdefault(fmt, []).append(seconds)
        del probe
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return {fmt: runs[fmt] for fmt in candidates if fmt in runs}


def measure_formats(
    model: nn.Module,
    batch: tuple[torch.Tensor, torch.Tensor],
    candidates: list[StepFormat],
    *,
    criterion: Callable[..., torch.Tensor] | None = None,
    rounds: int = 3,
) -> dict[StepFormat, float]:
    """Seconds per forward/backward pass of ``model`` on ``batch`` in each format: the fastest of its passes.

    See `measure_format_runs`, which this summarises.
    """
    runs = measure_format_runs(model, batch, candidates, criterion=criterion, rounds=rounds)
    return {fmt: min(times) for fmt, times in runs.items()}


def _cache_path() -> Path:
    return convzoo_home() / "step-formats.json"


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            name = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), name)
    except OSError:
        pass
    return f"{name}, {torch.get_num_threads()} threads"


def _read_cache() -> dict[str, Any]:
    try:
        data = json.loads(_cache_path().read_text())
    except (OSError, ValueError):
        return {}  # a missing or damaged cache only means measuring again
    return data if isinstance(data, dict) else {}


def _save_cache(data: dict[str, Any]) -> None:
    with contextlib.suppress(OSError):  # a read-only home only costs the next run another measurement
        write_atomically(_cache_path(), lambda tmp: Path(tmp).write_text(json.dumps(data, indent=1, sort_keys=True)))


def _write_cache(key: str, entry: dict[str, Any]) -> None:
    data = _read_cache()
    data[key] = entry
    _save_cache(data)


def cached_step_formats() -> dict[str, dict[str, Any]]:
    """The remembered choices, by job: the formats measured, the one chosen, ms per step and how many runs measured.

    A job's key reads ``"MODEL(ARGS) N classes | NxCxHxW | DEVICE | torch VERSION"``.
    """
    return {k: v for k, v in _read_cache().items() if isinstance(v, dict)}


def clear_step_format_cache(model: str | None = None) -> list[str]:
    """Forget remembered step-format choices, so that the next run of each job measures again.

    Args:
        model: Forget only the jobs of this model name (``"resnet20"`` forgets every ResNet-20 job, whatever its
            arguments, input or batch); default: every job.

    Returns:
        The keys of the jobs forgotten (see `cached_step_formats`); empty when there was nothing to forget.

    Raises:
        OSError: If the cache exists but cannot be rewritten or removed.
    """
    data = _read_cache()
    path = _cache_path()
    removed = [k for k in data if model is None or k.startswith(f"{model}(")]
    if not removed:
        if model is None and path.exists():
            path.unlink()  # an unreadable file holds nothing worth keeping
        return []
    kept = {k: v for k, v in data.items() if k not in removed}
    if kept:
        write_atomically(path, lambda tmp: Path(tmp).write_text(json.dumps(kept, indent=1, sort_keys=True)))
    else:
        path.unlink(missing_ok=True)
    return removed


# When the two fastest formats are within this fraction of each other, one measurement may have picked the wrong
# one: the next runs measure again, up to SETTLED_AFTER measurements in all.
CLOSE_CALL = 0.1
SETTLED_AFTER = 3

# Slowest over fastest pass of one format above which a measurement is not remembered. On an idle machine a
# format's passes agree within a few percent; load from another process slows some of them. Load that slows every
# pass alike leaves no spread and is not detected: `clear_step_format_cache` forgets what it chose.
NOISY_SPREAD = 1.5


class NoisyMeasurementWarning(UserWarning):
    """The passes of a step-format measurement disagree: the machine was probably busy; the choice is not cached."""


def _close_call(ms_per_step: dict[str, float]) -> bool:
    fastest = sorted(ms_per_step.values())[:2]
    return len(fastest) == 2 and fastest[1] < fastest[0] * (1 + CLOSE_CALL)


def _spread(times: Sequence[float]) -> float:
    fastest = min(times)
    return max(times) / fastest if fastest > 0 else math.inf


def resolve_step_format(
    model: nn.Module,
    batch: tuple[torch.Tensor, torch.Tensor],
    candidates: list[StepFormat],
    *,
    key: str,
    criterion: Callable[..., torch.Tensor] | None = None,
    use_cache: bool = True,
    remeasure: bool = False,
    noisy_spread: float = NOISY_SPREAD,
) -> tuple[StepFormat, dict[StepFormat, float] | None]:
    """The fastest of ``candidates`` for this job, and the timings it was chosen by (None when read from the cache).

    Each format's time is the fastest of its passes. When the passes of a format disagree by more than
    ``noisy_spread`` (slowest over fastest), the choice stands for this run but is not cached, and a
    `NoisyMeasurementWarning` says so.

    Args:
        model: The network, on its device, in its training state (it is copied, not changed).
        batch: A training batch (images already on the device, and labels).
        candidates: Formats to choose from; with one, it is returned without measuring.
        key: What identifies the job (model and its arguments, input, batch); the device and torch version are added.
        criterion: The training loss.
        use_cache: Read and write ``$CONVZOO_HOME/step-formats.json``.
        remeasure: Measure even if the cache holds a choice, and replace it with this measurement's.
        noisy_spread: Slowest over fastest pass of a format above which the measurement is not cached.
    """
    if len(candidates) == 1:
        return candidates[0], None
    device = batch[0].device
    full_key = f"{key} | {_device_name(device)} | torch {torch.__version__}"
    options = sorted(fmt.label for fmt in candidates)
    earlier: dict[str, float] = {}
    measured_runs = 0
    if use_cache and not remeasure:
        entry = _read_cache().get(full_key)
        if isinstance(entry, dict) and entry.get("options") == options:
            chosen = next((fmt for fmt in candidates if fmt.label == entry.get("chosen")), None)
            earlier = {k: float(v) for k, v in dict(entry.get("ms_per_step", {})).items()}
            measured_runs = int(entry.get("runs", 1))
            if chosen is not None and (measured_runs >= SETTLED_AFTER or not _close_call(earlier)):
                return chosen, None
    runs = measure_format_runs(model, batch, candidates, criterion=criterion)
    if not runs:
        return candidates[0], None
    timings = {fmt: min(times) for fmt, times in runs.items()}
    spreads = {fmt.label: _spread(times) for fmt, times in runs.items()}
    # A close call is measured again by the next few runs; each format keeps its fastest time over all of them.
    best_ms = {fmt.label: min(1000 * s, earlier.get(fmt.label, math.inf)) for fmt, s in timings.items()}
    chosen = min(timings, key=lambda fmt: best_ms[fmt.label])
    noisy = {label: spread for label, spread in spreads.items() if spread > noisy_spread}
    if noisy:
        described = ", ".join(
            f"{fmt.label} {1000 * min(runs[fmt]):.0f} to {1000 * max(runs[fmt]):.0f} ms"
            for fmt in runs
            if fmt.label in noisy
        )
        warnings.warn(
            f"the step-format measurement disagreed with itself ({described} per step); another process was "
            f"probably using the machine. Training in {chosen.label}; the choice is not remembered, so the next "
            f"run measures again",
            NoisyMeasurementWarning,
            stacklevel=2,
        )
    elif use_cache:
        _write_cache(
            full_key,
            {
                "options": options,
                "chosen": chosen.label,
                "ms_per_step": {label: round(ms, 2) for label, ms in best_ms.items()},
                "spread": {label: round(spread, 3) for label, spread in spreads.items()},
                "runs": measured_runs + 1,
            },
        )
    return chosen, timings
