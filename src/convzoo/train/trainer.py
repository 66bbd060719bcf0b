"""The training loop: one for every model, task, recipe, data set and device, on one process or many.

A run lives in a folder: ``last.pt`` (every epoch, written atomically), ``best.pt``, ``model.safetensors`` (final
weights), ``best.safetensors``, ``metrics.csv``/``metrics.jsonl``, ``curves.png`` and ``report.md``. Nothing in an
existing folder is overwritten unless the run resumes from it, and everything is checked before the folder is made.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import platform
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from convzoo.train import distributed as dist_utils
from convzoo.train.checkpoint import Checkpoints, Progress, resume_state
from convzoo.train.components import (
    build_ema,
    build_model,
    build_optimizer,
    check_device,
    choose_step_format,
    load_run_data,
    process_switches,
    wrap_model,
)
from convzoo.train.config import AMP_MODES, TrainConfig, build_recipe, default_out_dir
from convzoo.train.evaluation import evaluate, to_channels_last
from convzoo.train.recipes import LearningRate
from convzoo.train.results import EpochResult, RunResult, StepState, TrainingDiverged
from convzoo.train.run_folder import RunFolder, TensorBoard
from convzoo.train.tasks import Batch, ClassificationTask, Metrics, Task, task_for
from convzoo.train.tuning import autocast

__all__ = ["EpochResult", "RunResult", "StepState", "Trainer", "TrainingDiverged", "train"]


class Trainer:
    """Runs one training job described by a `TrainConfig`.

    The constructor checks the settings, loads the data, builds the network, optimiser and schedule, and when
    resuming restores them, all before the run folder is touched; `run` trains.

    The experiments built on the engine (transfer learning, probing, distillation) pass what they prepared
    themselves: a network (a pretrained one with a new head, a frozen trunk with probes) and data sets (a class
    subset, precomputed features). ``config.model`` and ``config.data`` then only name them in the log, the report
    and the checkpoints; resuming such a run means passing the same network and data again.

    Args:
        config: The run's settings.
        callbacks: Called with a `StepState` after every optimiser step.
        task: What the run learns; default: classification with the recipe's label smoothing.
        model: The network to train instead of ``create_model(config.model, ...)``; its parameters with
            ``requires_grad`` off stay frozen (see `Task.keep_frozen`).
        datasets: (train, test) splits, `ArrayDataset` images or `FeatureSet` vectors, instead of loading
            ``config.data``.
        extras: Names of the splits' per-image ``extras`` the batches carry after the labels (for the task).
    """

    def __init__(
        self,
        config: TrainConfig,
        callbacks: list[Callable[[StepState], None]] | None = None,
        *,
        task: Task | None = None,
        model: nn.Module | None = None,
        datasets: tuple[Any, Any] | None = None,
        extras: tuple[str, ...] = (),
    ) -> None:
        from convzoo.registry import get_model_card

        if config.amp not in AMP_MODES:
            raise ValueError(f"amp must be one of {AMP_MODES}; got {config.amp!r}")
        self.config = config
        self.callbacks = list(callbacks or [])
        self.stop_requested = False
        self.lr = 0.0
        self.recipe = build_recipe(config)
        if task is None:
            task = task_for(config.model, label_smoothing=self.recipe.label_smoothing) if model is None else None
        self.task = task or ClassificationTask(label_smoothing=self.recipe.label_smoothing)
        extras = tuple(dict.fromkeys((*self.task.extras, *extras)))
        if config.image_size:
            size = config.image_size
        elif datasets is not None:
            size = datasets[0].image_size[-1]
        else:
            size = get_model_card(config.model).input_size[-1]
        self.out = Path(config.out) if config.out else default_out_dir(config)
        saved = resume_state(config, self.out)
        self.dist, self.device = dist_utils.setup(config.device)
        try:
            check_device(config, self.device)
            with process_switches(config):
                torch.manual_seed(config.seed)
                kind = get_model_card(config.model).task if model is None and datasets is None else None
                self.data = load_run_data(
                    config,
                    self.recipe,
                    size,
                    self.dist,
                    self.device,
                    datasets=datasets,
                    extras=extras,
                    task=kind,
                    prepare=self.task.prepare_data,
                )
                # Tell the task what the data holds: whether the log shows top-5, how the report names classes.
                if getattr(self.task, "num_classes", 0) is None:
                    self.task.num_classes = self.data.num_classes
                if getattr(self.task, "classes", 0) is None:
                    self.task.classes = list(self.data.train_set.classes)
                if model is None:
                    model = build_model(config, self.data, self.dist, self.device)
                else:
                    model = model.to(self.device)
                self.step_format, self.format_note = choose_step_format(
                    config,
                    model,
                    self.data,
                    saved=saved,
                    dist=self.dist,
                    device=self.device,
                    criterion=self.task.criterion,
                    measure=self.task.measures_step_format,
                )
                self.model = model.to(memory_format=torch.channels_last) if self.step_format.channels_last else model
                self.ema = build_ema(self.model, config.ema)
                self.optimizer = build_optimizer(self.model, self.recipe, self.task.lr_scale)
                self.scaler = torch.amp.GradScaler("cuda", enabled=self.step_format.amp == "fp16")
                steps_per_epoch = len(self.data.train_loader)
                self.total_steps = self.recipe.iterations or self.recipe.epochs * steps_per_epoch
                self.epochs = math.ceil(self.total_steps / steps_per_epoch)
                self.schedule = LearningRate(self.recipe, self.recipe.lr, self.total_steps, steps_per_epoch)
                self.net = wrap_model(self.model, config, self.dist, self.device)
                self.checkpoints = self._checkpoints()
                self.progress = self.checkpoints.restore(saved) if saved is not None else Progress()
        except BaseException:
            dist_utils.teardown(self.dist)
            raise
        smoothing = self.recipe.label_smoothing
        self.folder = RunFolder(
            self.out,
            title=f"{config.model} on {config.data}",
            curves=self.task.curves,
            writes=self.dist.is_main,
            note=f"training loss with label smoothing {smoothing:g}: above the test loss" if smoothing else "",
        )

    def _checkpoints(self) -> Checkpoints:
        return Checkpoints(
            self.out,
            config=self.config,
            recipe=self.recipe,
            model=self.model,
            ema=self.ema,
            optimizer=self.optimizer,
            scaler=self.scaler,
            schedule=self.schedule,
            step_format=self.step_format,
            model_info={"num_classes": self.data.num_classes, "in_chans": self.data.in_chans},
            data_info=self.data.description(),
            best_key=f"best_{self.task.best_metric}",
            writes=self.dist.is_main,
        )

    # -- the loop -----------------------------------------------------------------------------------------------------

    def run(self) -> RunResult:
        """Train, evaluate every epoch, checkpoint, and write the run folder's files."""
        # Deterministic mode changes process-wide switches; they are put back, so a run leaves its caller as it was.
        with process_switches(self.config):
            return self._run()

    def _run(self) -> RunResult:
        self.folder.create()
        tensorboard = self.folder.tensorboard() if self.config.tensorboard else None
        self._log(self._header())
        previous_handler = signal.getsignal(signal.SIGINT)
        if self.dist.is_main or not self.dist.enabled:
            signal.signal(signal.SIGINT, self._on_interrupt)
        start = time.perf_counter()
        try:
            stopped = self._loop(tensorboard)
        except TrainingDiverged:
            self.folder.write_metrics(self.progress.history, plot=True)
            self._log(f"kept the last good checkpoint: {self.out / 'last.pt'}")
            raise
        finally:
            signal.signal(signal.SIGINT, previous_handler)
            if tensorboard is not None:
                tensorboard.close()
        seconds = time.perf_counter() - start
        self._finish(stopped, seconds)
        history = self.progress.history
        last = history[-1] if history else {}
        return RunResult(
            out=self.out,
            epochs_done=self.progress.epoch,
            steps_done=self.progress.step,
            test_top1=last.get("test_top1"),
            test_top5=last.get("test_top5"),
            best_top1=max((row["test_top1"] for row in history if "test_top1" in row), default=None),
            seconds=seconds,
            stopped_early=stopped,
            history=history,
            best=self.progress.best,
            is_main=self.dist.is_main,
        )

    def _loop(self, tensorboard: TensorBoard | None) -> bool:
        """Train epoch after epoch to the last step; True when stopped early (Ctrl-C or `StepState.request_stop`)."""
        progress = self.progress
        while progress.step < self.total_steps:
            result = self._train_epoch(progress.epoch, progress.step, progress.step_in_epoch)
            progress.step = result.step
            if not result.finished:
                # Interrupted mid-epoch: save where we are, so --resume continues from this very batch.
                progress.step_in_epoch = result.step_in_epoch
                self.checkpoints.save("last.pt", progress)
                self._log(f"stopped at epoch {progress.epoch + 1}, step {progress.step}; saved {self.out / 'last.pt'}")
                return True
            progress.step_in_epoch = 0
            row = self._end_of_epoch(progress.epoch, progress.step, result)
            if tensorboard is not None:
                tensorboard.add(row, progress.step)
            progress.epoch += 1
            self.checkpoints.save("last.pt", progress)
            if row["is_best"]:
                self.checkpoints.save("best.pt", progress)
                self.folder.write_weights(self._eval_model(), "best.safetensors")
            self.folder.write_metrics(progress.history)
        return False

    def _on_interrupt(self, signum: int, frame: object) -> None:
        if self.stop_requested:  # a second Ctrl-C: stop at once
            raise KeyboardInterrupt
        self.stop_requested = True
        print("\ninterrupt: saving a checkpoint after this step (Ctrl-C again to abort)", file=sys.stderr)

    def _train_epoch(self, epoch: int, step: int, skip: int) -> EpochResult:
        """Train on the batches of ``epoch`` from batch ``skip`` on (where an interrupted run stopped)."""
        loader = self.data.train_loader
        self.net.train()
        self.task.keep_frozen(self.model)
        loader.set_epoch(epoch)
        metrics = self.task.train_metrics()
        batches = min(len(loader), self.total_steps - step + skip)
        bar = self._progress_bar(epoch, batches, skip)
        start = time.perf_counter()
        samples, i, stopped = 0, -1, False
        for i, batch in enumerate(loader):
            if i < skip:
                continue  # resuming mid-epoch: the loader reproduced these batches, the model saw them already
            if i >= batches:
                break
            loss, lr = self._train_step(epoch, step, batch, metrics)
            step += 1
            samples += len(batch[0])
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.3f}", **metrics.progress(), lr=f"{lr:.3g}")
            for callback in self.callbacks:
                callback(StepState(epoch, step, loss, lr, self))
            if dist_utils.broadcast_flag(self.stop_requested, self.dist, self.device):
                stopped = True
                break
        bar.close()
        finished = not stopped or (i + 1 >= batches and step >= self.total_steps)
        return EpochResult(step, i + 1, finished, samples, time.perf_counter() - start, metrics)

    def _train_step(self, epoch: int, step: int, batch: Batch, metrics: Metrics) -> tuple[float, float]:
        """One optimiser step on ``batch``; its loss and learning rate.

        Raises:
            TrainingDiverged: The loss is NaN or infinite.
        """
        cfg = self.config
        lr = self.schedule(step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        self.lr = lr
        if self.step_format.channels_last:
            batch = to_channels_last(batch)
        with autocast(self.device, self.step_format.amp):
            out = self.task.train_step(self.net, batch)
        loss = out.loss.item()
        if not math.isfinite(loss):
            raise TrainingDiverged(
                f"the loss became {loss} at step {step} (epoch {epoch + 1}, learning rate {lr:.4g}). "
                f"Try a lower learning rate (--lr), gradient clipping (--clip-grad 1.0), a warm-up, or --amp off."
            )
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(out.loss).backward()
        if cfg.clip_grad:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), cfg.clip_grad)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.ema is not None:
            self.ema.update(self.model)
        metrics.update(batch, out.outputs, loss)
        return loss, lr

    def _end_of_epoch(self, epoch: int, step: int, result: EpochResult) -> dict[str, Any]:
        """Evaluate, keep the best score, log the epoch, and add its row to metrics.csv; the row."""
        train = result.metrics.compute(self._reduce)
        (samples,) = self._reduce([result.samples])
        model = self._eval_model()
        self._share_buffers(model)
        test = evaluate(
            model,
            self.data.test_loader,
            device=self.device,
            amp=self.step_format.amp,
            channels_last=self.step_format.channels_last,
            task=self.task,
            reduce=self._reduce,
        )
        score = self._score(test)
        self.schedule.end_of_epoch(score if self.task.higher_is_better else -score)  # a plateau wants higher-better
        is_best = self.task.is_better(score, self.progress.best)
        if is_best:
            self.progress.best = score
        row = {
            "epoch": epoch + 1,
            "step": step,
            "lr": self.lr,  # the recipe's rate; parameter groups may train at a fraction of it (Task.lr_scale)
            **self.task.columns(train, test),
            # The weights the test columns measure: those best.pt is picked by and model.safetensors exports.
            "evaluated": "ema" if self.ema is not None else "model",
            "images_per_s": samples / max(1e-9, result.seconds),
            "seconds": result.seconds,
            "is_best": is_best,
        }
        self.progress.history.append(row)
        remaining = (self.total_steps - step) / max(1, len(self.data.train_loader)) * result.seconds
        self._log(
            f"epoch {epoch + 1:>3}/{self.epochs}  {self.task.describe(row)}  lr {row['lr']:.4g}  "
            f"{row['images_per_s']:.0f} img/s  ETA {datetime.timedelta(seconds=round(remaining))}"
        )
        return row

    def _score(self, test: dict[str, float]) -> float:
        if self.task.best_metric not in test:
            raise KeyError(
                f"{type(self.task).__name__}.best_metric {self.task.best_metric!r} is none of its evaluation "
                f"metrics {sorted(test)}"
            )
        return test[self.task.best_metric]

    def _reduce(self, values: list[float]) -> list[float]:
        return dist_utils.all_reduce_sum(values, self.dist, self.device)

    def _share_buffers(self, model: nn.Module) -> None:
        """Give every process rank 0's buffers, so that the shards of the test set are evaluated with one model.

        Batch-norm statistics drift apart between processes after the last step (each normalised its own batches;
        DistributedDataParallel would send rank 0's at the next forward pass). Rank 0's are the ones it saves.
        """
        if self.dist.enabled:
            for buffer in model.buffers():
                torch.distributed.broadcast(buffer, src=0)

    def _eval_model(self) -> nn.Module:
        return self.ema.module if self.ema is not None else self.model

    # -- outputs ------------------------------------------------------------------------------------------------------

    def _log(self, text: str) -> None:
        if self.dist.is_main:
            print(text, flush=True)

    def _progress_bar(self, epoch: int, total: int, initial: int) -> Any:
        from tqdm import tqdm

        progress = self.config.progress
        return tqdm(
            total=total,
            initial=initial,
            desc=f"epoch {epoch + 1}/{self.epochs}",
            unit="batch",
            leave=False,
            disable=not self.dist.is_main or (progress is False) or (None if progress is None else False),
        )

    def _header(self) -> str:
        cfg, r, data, progress = self.config, self.recipe, self.data, self.progress
        return (
            f"{cfg.model} on {cfg.data} ({len(data.train_set)} train / {len(data.test_set)} test images, "
            f"{data.num_classes} classes) | recipe {r.name}: {r.optimizer} lr {r.lr:g}, batch {r.batch_size}, "
            f"{self.total_steps} steps ({self.epochs} epochs) | {self.device}"
            + (f" x{self.dist.world_size}" if self.dist.enabled else "")
            + f" | {self.format_note}"
            + (f" | resuming at epoch {progress.epoch + 1}, step {progress.step}" if cfg.resume else "")
        )

    def _finish(self, stopped: bool, seconds: float) -> None:
        """Write the final weights, metrics, curves and report (of a stopped run: metrics and curves)."""
        if not stopped:
            self.folder.write_weights(self._eval_model(), "model.safetensors", metadata={"data": self.config.data})
        self.folder.write_metrics(self.progress.history, plot=True)
        if not stopped:
            last = self.progress.history[-1]
            results = self.task.report(last, self.progress.best)
            self.folder.write_report(
                self._facts(seconds), [*results, ("epochs / steps", f"{last['epoch']} / {last['step']}")]
            )
        dist_utils.barrier(self.dist)

    def _facts(self, seconds: float) -> list[str]:
        from convzoo.analysis import count_params

        cfg, r, data = self.config, self.recipe, self.data
        settings = {k: v for k, v in r.as_dict().items() if k not in ("name", "source")}
        settings |= {"ema": cfg.ema, "amp": cfg.amp, "channels_last": cfg.channels_last, "seed": cfg.seed}
        return [
            f"Finished {datetime.datetime.now().isoformat(timespec='seconds')} in {seconds:.1f} s on {self.device}"
            + (f" x{self.dist.world_size} processes" if self.dist.enabled else "")
            + f" ({platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}).",
            f"Model: {cfg.model}, {count_params(self.model):,} parameters, {data.in_chans} input channel(s), "
            f"{data.num_classes} classes" + (f", arguments {cfg.model_args}" if cfg.model_args else "") + ".",
            f"Data: {cfg.data}, {len(data.train_set)} training and {len(data.test_set)} test images of "
            f"{'x'.join(map(str, data.train_set.image_size))}.",
            f"Recipe: {r.name} ({r.source}).",
            f"Step format: {self.format_note}.",
            (
                f"EMA: on, decay {cfg.ema} after a warm-up of min(decay, (1 + t) / (10 + t)) at update t; the test "
                f"metrics, best.pt and model.safetensors are of the averaged weights."
                if self.ema is not None
                else "EMA: off; the test metrics, best.pt and model.safetensors are of the trained weights."
            ),
            f"Settings: {json.dumps(settings)}",
            *(
                [
                    f"Label smoothing {r.label_smoothing:g}: the training loss is measured against smoothed targets, "
                    f"so it sits above the test loss (plain cross-entropy) even when the network fits the data."
                ]
                if r.label_smoothing
                else []
            ),
        ]


def train(config: TrainConfig | None = None, *, task: Task | None = None, **kwargs: Any) -> RunResult:
    """Run a training job: ``train(model="resnet20", data="digits")`` or ``train(TrainConfig(...))``.

    Args:
        config: The run's settings; default: a `TrainConfig` of ``kwargs``.
        task: What the run learns; default: classification.
        **kwargs: `TrainConfig` settings, replacing those of ``config``.
    """
    if config is None:
        config = TrainConfig(**kwargs)
    elif kwargs:
        config = dataclasses.replace(config, **kwargs)
    trainer = Trainer(config, task=task)
    try:
        return trainer.run()
    finally:
        dist_utils.teardown(trainer.dist)
