"""The training engine: one loop for every model, recipe, data set and device, on one process or many.

A run lives in a folder: ``last.pt`` (every epoch, written atomically), ``best.pt``, ``model.safetensors`` (final
weights), ``best.safetensors``, ``metrics.csv``/``metrics.jsonl``, ``curves.png`` and ``report.md``. Nothing in an
existing folder is overwritten unless the run resumes from it, and everything is checked before the folder is made.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime
import json
import math
import os
import platform
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from convzoo.models.base import classification_loss, main_logits
from convzoo.train import distributed as dist_utils
from convzoo.train.checkpoint import load_checkpoint, save_checkpoint
from convzoo.train.recipes import LearningRate, Recipe, get_recipe
from convzoo.train.tuning import StepFormat, autocast, candidate_formats, resolve_step_format

AMP_MODES = ("auto", "off", "bf16", "fp16")
# Drawing curves.png costs about half a second on a small CPU; during a run it is redrawn at most this often (and
# always at the end, on Ctrl-C and on divergence), so short epochs are not slowed by plotting.
PLOT_EVERY_S = 30.0
# Settings that may differ between an interrupted run and its resumption.
_RESUMABLE_CHANGES = {"resume", "progress", "out", "tensorboard"}


@dataclass
class TrainConfig:
    """Everything a run depends on. Saved in every checkpoint; a resumed run must match it.

    Attributes:
        model: Registered model name.
        data: Data set name (``digits``, ``shapes``, ``cifar10``, ...) or a path (.npz file or image folder).
        data_root: Where named real data sets live (default: ``$CONVZOO_DATA`` or ``~/.cache/convzoo/data``).
        recipe: Named recipe (see ``convzoo.train.RECIPES``).
        recipe_overrides: Recipe settings to change, e.g. ``{"epochs": 5, "lr": 0.05}``.
        model_args: Architecture overrides passed to ``create_model``.
        weights: Initial weights (path, URL or registered name), e.g. for fine-tuning.
        image_size: Side of the training images; default: the model card's input size.
        out: Run folder; default ``runs/<model>-<data>-<timestamp>``.
        resume: Continue the run in ``out`` from its ``last.pt``.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        amp: Mixed precision: ``"off"``, ``"bf16"`` (CPU or CUDA), ``"fp16"`` (CUDA, with loss scaling), or
            ``"auto"``: the fastest of those the device runs natively, measured at the start of the run (see
            `convzoo.train.tuning`; float32 in deterministic mode).
        channels_last: Train in the channels-last memory format; None: whichever is faster, measured with ``amp``
            (contiguous in deterministic mode).
        compile: Compile the model with ``torch.compile``.
        clip_grad: Clip the global gradient norm to this value.
        ema: Keep an exponential moving average of the weights with this decay (e.g. 0.999) and evaluate it.
        seed: Seed of weights, data order and augmentation.
        deterministic: Use deterministic kernels only (bitwise-reproducible runs).
        sync_bn: Synchronise batch-norm statistics across processes (CUDA only, as PyTorch's SyncBatchNorm).
        skip_corrupt: Skip unreadable images in image folders (counted) instead of failing.
        eval_batch_size: Batch size for evaluation.
        progress: Show progress bars (None: only on a terminal).
        tensorboard: Also write TensorBoard event files.
    """

    model: str = "resnet20"
    data: str = "digits"
    data_root: str | None = None
    recipe: str = "quick"
    recipe_overrides: dict[str, Any] = field(default_factory=dict)
    model_args: dict[str, Any] = field(default_factory=dict)
    weights: str | None = None
    image_size: int | None = None
    out: str | None = None
    resume: bool = False
    device: str = "auto"
    amp: str = "auto"
    channels_last: bool | None = None
    compile: bool = False
    clip_grad: float | None = None
    ema: float | None = None
    seed: int = 0
    deterministic: bool = False
    sync_bn: bool = False
    skip_corrupt: bool = False
    eval_batch_size: int = 256
    progress: bool | None = None
    tensorboard: bool = False

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


@dataclass
class RunResult:
    """What a finished (or stopped) run produced."""

    out: Path
    epochs_done: int
    steps_done: int
    test_top1: float | None
    test_top5: float | None
    best_top1: float | None
    seconds: float
    stopped_early: bool
    history: list[dict[str, Any]]


@dataclass
class StepState:
    """Passed to callbacks after every optimiser step."""

    epoch: int
    step: int
    loss: float
    lr: float
    trainer: Trainer

    def request_stop(self) -> None:
        """Save a checkpoint at this step and stop, as Ctrl-C does."""
        self.trainer.stop_requested = True


def build_recipe(config: TrainConfig) -> Recipe:
    """The recipe with the config's overrides.

    The learning rate follows a batch-size override linearly, and an ``epochs`` override replaces a length in steps.
    """
    recipe = get_recipe(config.recipe)
    overrides = dict(config.recipe_overrides)
    if "epochs" in overrides and "iterations" not in overrides:
        overrides["iterations"] = None  # a length given in epochs replaces a recipe's length in steps
    if "batch_size" in overrides and "lr" not in overrides:
        overrides["lr"] = recipe.lr * overrides["batch_size"] / recipe.batch_size
    return recipe.replace(**overrides) if overrides else recipe


def evaluate(
    model: nn.Module,
    loader: Any,
    *,
    device: torch.device,
    amp: str = "off",
    channels_last: bool = False,
) -> dict[str, float]:
    """Top-1 and top-5 accuracy (percent) and mean cross-entropy of ``model`` over ``loader``."""
    was_training = model.training
    model.eval()
    correct1 = correct5 = total = 0
    loss_sum = 0.0
    with torch.no_grad():
        for x, y in loader:
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast(device, amp):
                logits = main_logits(model(x)).float()
            loss_sum += nn.functional.cross_entropy(logits, y, reduction="sum").item()
            k = min(5, logits.shape[1])
            top = logits.topk(k, dim=1).indices
            hits = top.eq(y[:, None])
            correct1 += hits[:, 0].sum().item()
            correct5 += hits.any(dim=1).sum().item()
            total += y.numel()
    model.train(was_training)
    if total == 0:
        raise ValueError("the evaluation data set is empty")
    return {"top1": 100.0 * correct1 / total, "top5": 100.0 * correct5 / total, "loss": loss_sum / total, "n": total}


def default_out_dir(config: TrainConfig) -> Path:
    data = Path(config.data).stem if os.sep in config.data or config.data.endswith(".npz") else config.data
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{config.model}-{data}-{stamp}"


class Trainer:
    """Runs one training job described by a `TrainConfig`.

    Args:
        config: The run's settings.
        callbacks: Called with a `StepState` after every optimiser step.
    """

    def __init__(self, config: TrainConfig, callbacks: list[Callable[[StepState], None]] | None = None) -> None:
        self.config = config
        self.callbacks = callbacks or []
        self.stop_requested = False

    # -- set-up: everything is checked before the run folder is touched ------------------------------------------

    def _prepare(self) -> None:
        from convzoo.data import Augment, FastLoader, load_dataset
        from convzoo.factory import create_model
        from convzoo.registry import get_model_card

        cfg = self.config
        if cfg.amp not in AMP_MODES:
            raise ValueError(f"amp must be one of {AMP_MODES}; got {cfg.amp!r}")
        self.recipe = build_recipe(cfg)
        card = get_model_card(cfg.model)
        self.out = Path(cfg.out) if cfg.out else default_out_dir(cfg)
        self.resume_state = None
        if cfg.resume:
            last = self.out / "last.pt"
            if not last.is_file():
                raise FileNotFoundError(f"cannot resume: {last} does not exist (give the run folder with --out)")
            self.resume_state = load_checkpoint(last)
            self._check_same_settings(self.resume_state["config"])
        elif self.out.exists() and any(self.out.iterdir()):
            raise FileExistsError(
                f"run folder {self.out} already holds files; pass --resume to continue that run or choose another --out"
            )
        if cfg.amp == "fp16" and cfg.device == "cpu":
            raise ValueError("fp16 mixed precision needs CUDA; use --amp bf16 on the CPU")

        self.dist, self.device = dist_utils.setup(cfg.device)
        if cfg.amp == "fp16" and self.device.type != "cuda":
            raise ValueError("fp16 mixed precision needs CUDA; use --amp bf16 on the CPU")
        if cfg.sync_bn and self.device.type != "cuda":
            # DistributedDataParallel accepts SyncBatchNorm layers only on GPUs.
            raise ValueError(
                f"--sync-bn needs CUDA devices (PyTorch's SyncBatchNorm does not run on {self.device.type}); "
                f"on the CPU each process normalises its own share of the batch, so drop --sync-bn"
            )
        if cfg.deterministic:
            torch.use_deterministic_algorithms(True)
            torch.backends.cudnn.benchmark = False
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.manual_seed(cfg.seed)

        size = cfg.image_size or card.input_size[-1]
        self.train_set, self.test_set = load_dataset(
            cfg.data, root=cfg.data_root, image_size=size, seed=cfg.seed, skip_corrupt=cfg.skip_corrupt
        )
        self.in_chans = self.train_set.image_size[0]
        self.num_classes = self.train_set.num_classes
        mean, std = self.train_set.mean_std()
        self.mean, self.std = mean, std

        if self.recipe.batch_size % self.dist.world_size:
            raise ValueError(
                f"the global batch size {self.recipe.batch_size} must divide evenly over "
                f"{self.dist.world_size} processes"
            )
        per_rank = self.recipe.batch_size // self.dist.world_size
        r = self.recipe
        augment = Augment(
            crop=size if (r.crop_padding or r.random_resized_crop) else None,
            padding=r.crop_padding,
            flip=r.flip,
            random_resized_crop=r.random_resized_crop,
            out_size=size,
            color_jitter=r.color_jitter,
            mean=mean,
            std=std,
        )
        self.train_loader = FastLoader(
            self.train_set,
            batch_size=per_rank,
            shuffle=True,
            augment=augment,
            device=self.device,
            drop_last=True,
            seed=cfg.seed,
            rank=self.dist.rank,
            world_size=self.dist.world_size,
        )
        if len(self.train_loader) == 0:
            raise ValueError(
                f"the training set has {len(self.train_set)} images, fewer than one batch of {per_rank}; "
                f"lower --batch-size"
            )
        self.test_loader = FastLoader(
            self.test_set,
            batch_size=cfg.eval_batch_size,
            shuffle=False,
            augment=Augment(mean=mean, std=std, out_size=size),
            device=self.device,
        )

        model = create_model(
            cfg.model, num_classes=self.num_classes, in_chans=self.in_chans, weights=cfg.weights, **cfg.model_args
        )
        if cfg.sync_bn and self.dist.enabled:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        model = model.to(self.device)
        self.criterion = nn.CrossEntropyLoss(label_smoothing=r.label_smoothing)
        self.step_format, self.format_note = self._step_format(model, per_rank, size)
        if self.step_format.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        self.ema = None
        if cfg.ema:
            from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

            self.ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema), use_buffers=True)
        self.optimizer = self._optimizer(model)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.step_format.amp == "fp16")
        steps_per_epoch = len(self.train_loader)
        self.total_steps = r.iterations or r.epochs * steps_per_epoch
        self.epochs = math.ceil(self.total_steps / steps_per_epoch)
        self.schedule = LearningRate(r, r.lr, self.total_steps, steps_per_epoch)
        self.net = model
        if self.dist.enabled:
            self.net = nn.parallel.DistributedDataParallel(
                model, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        if cfg.compile:
            self.net = torch.compile(self.net)

    def _step_format(self, model: nn.Module, batch_size: int, size: int) -> tuple[StepFormat, str]:
        """Precision and memory format of the training step, and how they were chosen (for the log and report)."""
        cfg = self.config
        left_open = cfg.amp == "auto" or cfg.channels_last is None
        if self.resume_state is not None and "step_format" in self.resume_state:
            fmt = StepFormat(**self.resume_state["step_format"])
            return fmt, fmt.label + (" (as the run began)" if left_open else "")
        if cfg.deterministic or self.resume_state is not None:
            # A deterministic run must not depend on a timing; a checkpoint without a recorded format predates
            # the automatic choice, whose defaults were float32 and contiguous.
            fmt = StepFormat("off" if cfg.amp == "auto" else cfg.amp, bool(cfg.channels_last))
            if not left_open:
                return fmt, fmt.label
            return fmt, fmt.label + (" (as the run began)" if cfg.resume else " (deterministic mode measures nothing)")
        candidates = candidate_formats(self.device, amp=cfg.amp, channels_last=cfg.channels_last)
        if len(candidates) == 1:
            return candidates[0], candidates[0].label
        chosen, timings = StepFormat(), None
        if self.dist.is_main:
            generator = torch.Generator().manual_seed(0)  # the run's own random streams are left alone
            x = torch.randn(batch_size, self.in_chans, size, size, generator=generator).to(self.device)
            y = torch.randint(0, self.num_classes, (batch_size,), generator=generator).to(self.device)
            args = ",".join(f"{k}={v}" for k, v in sorted(cfg.model_args.items()))
            key = f"{cfg.model}({args}) {self.num_classes} classes | {batch_size}x{self.in_chans}x{size}x{size}"
            chosen, timings = resolve_step_format(model, (x, y), candidates, key=key, criterion=self.criterion)
        chosen = dist_utils.broadcast_object(chosen, self.dist)
        if timings:
            measured = ", ".join(f"{fmt.label} {1000 * t:.0f}" for fmt, t in timings.items())
            return chosen, f"{chosen.label} (fastest measured, ms per forward/backward: {measured})"
        return chosen, f"{chosen.label} (fastest, from an earlier measurement)"

    def _check_same_settings(self, saved: dict[str, Any]) -> None:
        now = self.config.as_dict()
        changed = [
            f"{k}: {saved.get(k)!r} -> {now.get(k)!r}"
            for k in sorted(set(now) | set(saved))
            if k not in _RESUMABLE_CHANGES and saved.get(k) != now.get(k)
        ]
        if changed:
            raise ValueError(
                "cannot resume with changed settings (start a new run to change them):\n  " + "\n  ".join(changed)
            )

    def _optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        r = self.recipe
        decay, no_decay = [], []
        for p in model.parameters():
            if not p.requires_grad:
                continue
            (no_decay if p.ndim <= 1 and not r.decay_norm_and_bias else decay).append(p)
        groups = [{"params": decay, "weight_decay": r.weight_decay}]
        if no_decay:
            groups.append({"params": no_decay, "weight_decay": 0.0})
        if r.optimizer == "sgd":
            return torch.optim.SGD(groups, lr=r.lr, momentum=r.momentum, nesterov=r.nesterov)
        return torch.optim.AdamW(groups, lr=r.lr, betas=(r.momentum, 0.999))

    # -- checkpoints ----------------------------------------------------------------------------------------------

    def _state(self, epoch: int, step: int, step_in_epoch: int) -> dict[str, Any]:
        from convzoo.weights import classifier_prefix

        state = {
            "config": self.config.as_dict(),
            "recipe": self.recipe.as_dict(),
            "model": {
                "name": self.config.model,
                "num_classes": self.num_classes,
                "in_chans": self.in_chans,
                "model_args": dict(self.config.model_args),
                "state_dict": self.model.state_dict(),
                "classifier": classifier_prefix(self.model),
            },
            "data": {
                "name": self.config.data,
                "classes": list(self.train_set.classes),
                "image_size": list(self.train_set.image_size),
                "mean": list(self.mean),
                "std": list(self.std),
            },
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "schedule": self.schedule.state_dict(),
            "epoch": epoch,
            "step": step,
            "step_in_epoch": step_in_epoch,
            "step_format": self.step_format.as_dict(),
            "rng": {"torch": torch.get_rng_state()},
            "history": self.history,
            "best_top1": self.best_top1,
        }
        if torch.cuda.is_available():
            state["rng"]["cuda"] = torch.cuda.get_rng_state_all()
        if self.ema is not None:
            state["ema"] = self.ema.state_dict()
        return state

    def _restore(self, state: dict[str, Any]) -> tuple[int, int, int]:
        self.model.load_state_dict(state["model"]["state_dict"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.schedule.load_state_dict(state["schedule"])
        torch.set_rng_state(state["rng"]["torch"])
        if "cuda" in state["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])
        self.history = list(state["history"])
        self.best_top1 = state["best_top1"]
        return int(state["epoch"]), int(state["step"]), int(state["step_in_epoch"])

    def _save(self, name: str, epoch: int, step: int, step_in_epoch: int) -> None:
        if self.dist.is_main:
            save_checkpoint(self._state(epoch, step, step_in_epoch), self.out / name)

    # -- the loop ---------------------------------------------------------------------------------------------------

    def run(self) -> RunResult:
        """Train, evaluate every epoch, checkpoint, and write the run folder's files."""
        # Deterministic mode changes process-wide switches; they are put back, so a run leaves its caller as it was.
        previous = torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark
        try:
            return self._run()
        finally:
            torch.use_deterministic_algorithms(previous[0])
            torch.backends.cudnn.benchmark = previous[1]

    def _run(self) -> RunResult:
        self._prepare()
        cfg, r = self.config, self.recipe
        self.history: list[dict[str, Any]] = []
        self.best_top1: float | None = None
        epoch, step, skip = 0, 0, 0
        if self.resume_state is not None:
            epoch, step, skip = self._restore(self.resume_state)
        if self.dist.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
        writer = self._tensorboard()
        main = self.dist.is_main
        if main:
            self._log(
                f"{cfg.model} on {cfg.data} ({len(self.train_set)} train / {len(self.test_set)} test images, "
                f"{self.num_classes} classes) | recipe {r.name}: {r.optimizer} lr {r.lr:g}, batch {r.batch_size}, "
                f"{self.total_steps} steps ({self.epochs} epochs) | {self.device}"
                + (f" x{self.dist.world_size}" if self.dist.enabled else "")
                + f" | {self.format_note}"
                + (f" | resuming at epoch {epoch + 1}, step {step}" if self.resume_state is not None else "")
            )
        previous_handler = signal.getsignal(signal.SIGINT)
        if main or not self.dist.enabled:
            signal.signal(signal.SIGINT, self._on_interrupt)
        start = time.perf_counter()
        self._last_plot = start
        stopped = False
        try:
            while step < self.total_steps and not stopped:
                epoch_result = self._train_epoch(epoch, step, skip)
                step, finished_epoch = epoch_result["step"], epoch_result["finished"]
                skip = 0
                if not finished_epoch:
                    # Interrupted mid-epoch: save where we are, so --resume continues from this very batch.
                    self._save("last.pt", epoch, step, epoch_result["step_in_epoch"])
                    stopped = True
                    if main:
                        self._log(f"stopped at epoch {epoch + 1}, step {step}; saved {self.out / 'last.pt'}")
                    break
                metrics = self._end_of_epoch(epoch, step, epoch_result)
                if writer is not None:
                    for key, value in metrics.items():
                        if isinstance(value, (int, float)) and key not in ("epoch", "step"):
                            writer.add_scalar(key, value, step)
                epoch += 1
                self._save("last.pt", epoch, step, 0)
                if metrics["is_best"]:
                    self._save("best.pt", epoch, step, 0)
                    if main:
                        from convzoo.weights import save_weights

                        save_weights(self._eval_model(), self.out / "best.safetensors")
                if main:
                    self._write_metrics(plot=time.perf_counter() - self._last_plot >= PLOT_EVERY_S)
        except TrainingDiverged:
            if main:
                self._write_metrics(plot=True)
                self._log(f"kept the last good checkpoint: {self.out / 'last.pt'}")
            raise
        finally:
            signal.signal(signal.SIGINT, previous_handler)
            if writer is not None:
                writer.close()
        seconds = time.perf_counter() - start
        if main and not stopped:
            from convzoo.weights import save_weights

            save_weights(self._eval_model(), self.out / "model.safetensors", metadata={"data": cfg.data})
            self._write_metrics(plot=True)
            self._write_report(seconds)
        elif main and stopped:
            self._write_metrics(plot=True)
        dist_utils.barrier(self.dist)
        last = self.history[-1] if self.history else {}
        return RunResult(
            out=self.out,
            epochs_done=epoch,
            steps_done=step,
            test_top1=last.get("test_top1"),
            test_top5=last.get("test_top5"),
            best_top1=self.best_top1,
            seconds=seconds,
            stopped_early=stopped,
            history=self.history,
        )

    def _on_interrupt(self, signum: int, frame: object) -> None:
        if self.stop_requested:  # a second Ctrl-C: stop at once
            raise KeyboardInterrupt
        self.stop_requested = True
        print("\ninterrupt: saving a checkpoint after this step (Ctrl-C again to abort)", file=sys.stderr)

    def _train_epoch(self, epoch: int, step: int, skip: int) -> dict[str, Any]:
        from tqdm import tqdm

        cfg = self.config
        self.net.train()
        self.train_loader.set_epoch(epoch)
        loss_sum = correct = seen = 0.0
        steps_this_epoch = min(len(self.train_loader), self.total_steps - step + skip)
        bar = tqdm(
            total=steps_this_epoch,
            initial=skip,
            desc=f"epoch {epoch + 1}/{self.epochs}",
            unit="batch",
            leave=False,
            disable=not self.dist.is_main or (cfg.progress is False) or (None if cfg.progress is None else False),
        )
        t0 = time.perf_counter()
        i = -1
        for i, (x, y) in enumerate(self.train_loader):
            if i < skip:
                continue  # resuming mid-epoch: the loader reproduced these batches, the model saw them already
            if i >= steps_this_epoch:
                break
            lr = self.schedule(step)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            if self.step_format.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast(self.device, self.step_format.amp):
                output = self.net(x)
                loss = classification_loss(output, y, self.criterion)
            loss_value = loss.item()
            if not math.isfinite(loss_value):
                raise TrainingDiverged(
                    f"the loss became {loss_value} at step {step} (epoch {epoch + 1}, learning rate {lr:.4g}). "
                    f"Try a lower learning rate (--lr), gradient clipping (--clip-grad 1.0), a warm-up, or --amp off."
                )
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            if cfg.clip_grad:
                self.scaler.unscale_(self.optimizer)
                nn.utils.clip_grad_norm_(self.model.parameters(), cfg.clip_grad)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            if self.ema is not None:
                self.ema.update_parameters(self.model)
            step += 1
            logits = main_logits(output).detach()
            loss_sum += loss_value * y.numel()
            correct += logits.argmax(1).eq(y).sum().item()
            seen += y.numel()
            bar.update(1)
            bar.set_postfix(loss=f"{loss_value:.3f}", err=f"{100 - 100 * correct / seen:.1f}%", lr=f"{lr:.3g}")
            for callback in self.callbacks:
                callback(StepState(epoch, step, loss_value, lr, self))
            if dist_utils.broadcast_flag(self.stop_requested, self.dist, self.device):
                bar.close()
                return {
                    "step": step,
                    "finished": i + 1 >= steps_this_epoch and step >= self.total_steps,
                    "step_in_epoch": i + 1,
                    "loss_sum": loss_sum,
                    "correct": correct,
                    "seen": seen,
                    "seconds": time.perf_counter() - t0,
                }
        bar.close()
        return {
            "step": step,
            "finished": True,
            "step_in_epoch": i + 1,
            "loss_sum": loss_sum,
            "correct": correct,
            "seen": seen,
            "seconds": time.perf_counter() - t0,
        }

    def _eval_model(self) -> nn.Module:
        return self.ema.module if self.ema is not None else self.model

    def _end_of_epoch(self, epoch: int, step: int, result: dict[str, Any]) -> dict[str, Any]:
        loss_sum, correct, seen = dist_utils.all_reduce_sum(
            [result["loss_sum"], result["correct"], result["seen"]], self.dist, self.device
        )
        test = evaluate(
            self._eval_model(),
            self.test_loader,
            device=self.device,
            amp=self.step_format.amp,
            channels_last=self.step_format.channels_last,
        )
        self.schedule.end_of_epoch(test["top1"])
        is_best = self.best_top1 is None or test["top1"] > self.best_top1
        if is_best:
            self.best_top1 = test["top1"]
        metrics = {
            "epoch": epoch + 1,
            "step": step,
            "lr": self.optimizer.param_groups[0]["lr"],
            "train_loss": loss_sum / max(1, seen),
            "train_err": 100 - 100 * correct / max(1, seen),
            "test_loss": test["loss"],
            "test_top1": test["top1"],
            "test_top5": test["top5"],
            "test_err": 100 - test["top1"],
            "images_per_s": seen / max(1e-9, result["seconds"]),
            "seconds": result["seconds"],
            "is_best": is_best,
        }
        self.history.append(metrics)
        if self.dist.is_main:
            remaining = (self.total_steps - step) / max(1, len(self.train_loader)) * result["seconds"]
            self._log(
                f"epoch {epoch + 1:>3}/{self.epochs}  train loss {metrics['train_loss']:.4f} err "
                f"{metrics['train_err']:5.2f}%  test loss {test['loss']:.4f} err {metrics['test_err']:5.2f}% "
                f"(top-5 err {100 - test['top5']:.2f}%)  lr {metrics['lr']:.4g}  "
                f"{metrics['images_per_s']:.0f} img/s  ETA {datetime.timedelta(seconds=round(remaining))}"
            )
        return metrics

    # -- outputs ------------------------------------------------------------------------------------------------------

    def _log(self, text: str) -> None:
        print(text, flush=True)

    def _tensorboard(self):
        if not self.config.tensorboard or not self.dist.is_main:
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as e:
            raise ImportError("--tensorboard needs the tensorboard package: pip install tensorboard") from e
        return SummaryWriter(log_dir=str(self.out / "tensorboard"))

    def _write_metrics(self, *, plot: bool) -> None:
        """Rewrite metrics.csv and metrics.jsonl; redraw curves.png when `plot`."""
        if not self.history:
            return
        keys = list(self.history[0])
        with open(self.out / "metrics.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=keys)
            writer.writeheader()
            writer.writerows(self.history)
        with open(self.out / "metrics.jsonl", "w") as f:
            for row in self.history:
                f.write(json.dumps(row) + "\n")
        if plot:
            plot_curves(self.history, self.out / "curves.png", title=f"{self.config.model} on {self.config.data}")
            self._last_plot = time.perf_counter()

    def _write_report(self, seconds: float) -> None:
        from convzoo.analysis import count_params

        cfg, r = self.config, self.recipe
        last = self.history[-1]
        lines = [
            f"# {cfg.model} on {cfg.data}",
            "",
            f"- Finished {datetime.datetime.now().isoformat(timespec='seconds')} in {seconds:.1f} s on "
            f"{self.device}"
            + (f" x{self.dist.world_size} processes" if self.dist.enabled else "")
            + f" ({platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}).",
            f"- Model: {cfg.model}, {count_params(self.model):,} parameters, {self.in_chans} input channel(s), "
            f"{self.num_classes} classes" + (f", arguments {cfg.model_args}" if cfg.model_args else "") + ".",
            f"- Data: {cfg.data}, {len(self.train_set)} training and {len(self.test_set)} test images of "
            f"{'x'.join(map(str, self.train_set.image_size))}.",
            f"- Recipe: {r.name} ({r.source}).",
            f"- Step format: {self.format_note}.",
            f"- Settings: {json.dumps({k: v for k, v in r.as_dict().items() if k not in ('name', 'source')})}",
            "",
            "| result | value |",
            "|---|---:|",
            f"| final test error | {last['test_err']:.2f}% |",
            f"| final test top-5 error | {100 - last['test_top5']:.2f}% |",
            f"| best test accuracy | {self.best_top1:.2f}% |",
            f"| final training error | {last['train_err']:.2f}% |",
            f"| epochs / steps | {last['epoch']} / {last['step']} |",
            "",
            "![training curves](curves.png)",
            "",
            "Files: `model.safetensors` (final weights; `convzoo.create_model(name, weights=...)`), `last.pt` and "
            "`best.pt` (checkpoints; `convzoo eval`, `convzoo predict`, `--resume`), `metrics.csv`, `metrics.jsonl`.",
        ]
        (self.out / "report.md").write_text("\n".join(lines) + "\n")


def plot_curves(history: list[dict[str, Any]], path: str | os.PathLike[str], *, title: str = "") -> None:
    """Training and test error and loss against epochs, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, (ax_err, ax_loss) = plt.subplots(1, 2, figsize=(11, 4))
    ax_err.plot(epochs, [h["train_err"] for h in history], "o-", label="training error", markersize=3)
    ax_err.plot(epochs, [h["test_err"] for h in history], "o-", label="test error", markersize=3)
    ax_err.set_ylabel("error (%)")
    ax_loss.plot(epochs, [h["train_loss"] for h in history], "o-", label="training loss", markersize=3)
    ax_loss.plot(epochs, [h["test_loss"] for h in history], "o-", label="test loss", markersize=3)
    ax_loss.set_ylabel("cross-entropy")
    for ax in (ax_err, ax_loss):
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend()
    ax_err.set_yscale("log" if min(h["test_err"] for h in history) > 0 else "linear")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def train(config: TrainConfig | None = None, **kwargs: Any) -> RunResult:
    """Run a training job: ``train(model="resnet20", data="digits")`` or ``train(TrainConfig(...))``."""
    if config is None:
        config = TrainConfig(**kwargs)
    elif kwargs:
        config = dataclasses.replace(config, **kwargs)
    trainer = Trainer(config)
    try:
        return trainer.run()
    finally:
        dist_utils.teardown(getattr(trainer, "dist", dist_utils.DistInfo()))


def load_trained(path: str | os.PathLike[str], *, ema: bool = True) -> tuple[nn.Module, dict[str, Any]]:
    """A model rebuilt from a training checkpoint, and the checkpoint's data description.

    Args:
        path: A ``last.pt`` or ``best.pt``.
        ema: Use the averaged weights when the run kept them.
    """
    from convzoo.factory import create_model

    state = load_checkpoint(path)
    info = state["model"]
    model = create_model(info["name"], num_classes=info["num_classes"], in_chans=info["in_chans"], **info["model_args"])
    weights = info["state_dict"]
    if ema and "ema" in state:
        prefix = "module."
        weights = {k[len(prefix) :]: v for k, v in state["ema"].items() if k.startswith(prefix)}
    from convzoo.weights import load_weights

    load_weights(model, weights)
    model.eval()
    return model, state["data"]


__all__ = [
    "RunResult",
    "StepState",
    "TrainConfig",
    "Trainer",
    "TrainingDiverged",
    "build_recipe",
    "evaluate",
    "load_trained",
    "plot_curves",
    "train",
]
