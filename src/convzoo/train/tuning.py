"""Choosing the numeric format of a training step by measuring it.

Whether mixed precision and the channels-last memory format speed a training step up depends on the network and the
hardware, and not always in the same direction. Measured on one 2-core AVX-512-BF16 CPU (ms per step, fp32 /
channels-last / bf16 / both): ResNet-20 at batch 64, 147 / 109 / 97 / 75; MobileNet v2, 114 / 79 / 134 / 98;
DenseNet-BC-100, 1061 / 789 / 463 / 580; VGG-11 at 64 px, 668 / 1095 / 618 / 621. No fixed rule picks the best of
each, so ``--amp auto`` and channels-last ``auto`` time a few forward/backward passes of every candidate on a copy
of the model, as cuDNN's benchmark mode does for convolution algorithms, and keep the fastest. The choice is cached
per model, input, batch, device and torch version in ``$CONVZOO_HOME/step-formats.json``, so only the first run of a
job pays for the measurement (the first three, when the two fastest formats are within 10% of each other).
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from convzoo._files import convzoo_home, write_atomically
from convzoo.models.base import classification_loss

__all__ = ["StepFormat", "autocast", "candidate_formats", "measure_formats", "native_bf16", "resolve_step_format"]


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


def measure_formats(
    model: nn.Module,
    batch: tuple[torch.Tensor, torch.Tensor],
    candidates: list[StepFormat],
    *,
    criterion: Callable[..., torch.Tensor] | None = None,
    rounds: int = 3,
) -> dict[StepFormat, float]:
    """Seconds per forward/backward pass of ``model`` on ``batch`` in each format.

    Each format first runs once untimed (building kernels and caches), then the formats take turns for ``rounds``
    rounds and each keeps its fastest pass: a burst of load from elsewhere on the machine then slows one pass, not
    one format's every pass. The model is copied, so its weights, batch-norm statistics and gradients are untouched,
    and the random number generators are restored afterwards, so measuring does not change what the run computes.
    """
    x, y = batch
    device = x.device
    criterion = criterion or nn.CrossEntropyLoss()
    devices = [device] if device.type == "cuda" else []
    best: dict[StepFormat, float] = {}
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
                    start = time.perf_counter()
                    with autocast(device, fmt.amp):
                        loss = classification_loss(probe(inputs), y, criterion)
                    loss.float().backward()
                    _sync(device)
                    seconds = time.perf_counter() - start
                except torch.cuda.OutOfMemoryError:
                    # The copy doubles the weights; a format that does not fit beside them is not chosen.
                    failed.add(fmt)
                    seconds = None
                loss = None
                probe.zero_grad(set_to_none=True)
                if seconds is None:
                    torch.cuda.empty_cache()
                elif timed:
                    best[fmt] = min(seconds, best.get(fmt, math.inf))
        del probe
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return {fmt: best[fmt] for fmt in candidates if fmt in best}


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


def _write_cache(key: str, entry: dict[str, Any]) -> None:
    data = _read_cache()
    data[key] = entry
    with contextlib.suppress(OSError):  # a read-only home only costs the next run another measurement
        write_atomically(_cache_path(), lambda tmp: Path(tmp).write_text(json.dumps(data, indent=1, sort_keys=True)))


# When the two fastest formats are within this fraction of each other, one measurement may have picked the wrong
# one: the next runs measure again, up to SETTLED_AFTER measurements in all.
CLOSE_CALL = 0.1
SETTLED_AFTER = 3


def _close_call(ms_per_step: dict[str, float]) -> bool:
    fastest = sorted(ms_per_step.values())[:2]
    return len(fastest) == 2 and fastest[1] < fastest[0] * (1 + CLOSE_CALL)


def resolve_step_format(
    model: nn.Module,
    batch: tuple[torch.Tensor, torch.Tensor],
    candidates: list[StepFormat],
    *,
    key: str,
    criterion: Callable[..., torch.Tensor] | None = None,
    use_cache: bool = True,
) -> tuple[StepFormat, dict[StepFormat, float] | None]:
    """The fastest of ``candidates`` for this job, and the timings it was chosen by (None when read from the cache).

    Args:
        model: The network, on its device, in its training state (it is copied, not changed).
        batch: A training batch (images already on the device, and labels).
        candidates: Formats to choose from; with one, it is returned without measuring.
        key: What identifies the job (model and its arguments, input, batch); the device and torch version are added.
        criterion: The training loss.
        use_cache: Read and write ``$CONVZOO_HOME/step-formats.json``.
    """
    if len(candidates) == 1:
        return candidates[0], None
    device = batch[0].device
    full_key = f"{key} | {_device_name(device)} | torch {torch.__version__}"
    options = sorted(fmt.label for fmt in candidates)
    earlier: dict[str, float] = {}
    measured_runs = 0
    if use_cache:
        entry = _read_cache().get(full_key)
        if isinstance(entry, dict) and entry.get("options") == options:
            chosen = next((fmt for fmt in candidates if fmt.label == entry.get("chosen")), None)
            earlier = {k: float(v) for k, v in dict(entry.get("ms_per_step", {})).items()}
            measured_runs = int(entry.get("runs", 1))
            if chosen is not None and (measured_runs >= SETTLED_AFTER or not _close_call(earlier)):
                return chosen, None
    timings = measure_formats(model, batch, candidates, criterion=criterion)
    if not timings:
        return candidates[0], None
    # A close call is measured again by the next few runs; each format keeps its fastest time over all of them.
    best_ms = {fmt.label: min(1000 * s, earlier.get(fmt.label, math.inf)) for fmt, s in timings.items()}
    chosen = min(timings, key=lambda fmt: best_ms[fmt.label])
    if use_cache:
        _write_cache(
            full_key,
            {
                "options": options,
                "chosen": chosen.label,
                "ms_per_step": {label: round(ms, 2) for label, ms in best_ms.items()},
                "runs": measured_runs + 1,
            },
        )
    return chosen, timings
