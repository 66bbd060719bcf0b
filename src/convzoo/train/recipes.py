"""Named training recipes: the hyper-parameters the papers and lectures used, inspectable and overridable.

Each recipe states its source. Schedules are pure functions of the step (warm-up, then step, multi-step or cosine),
or reduce-on-plateau driven by the test metric, so a resumed run follows exactly the same learning rates.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from dataclasses import dataclass, field
from typing import Any

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("constant", "step", "multistep", "cosine", "plateau")


@dataclass(frozen=True)
class Recipe:
    """How to train: optimiser, schedule, regularisation, augmentation and length.

    Attributes:
        name: The preset's name.
        source: Where the numbers come from.
        optimizer: ``"sgd"`` or ``"adamw"``.
        lr: Peak learning rate for ``batch_size``; scaled linearly when the batch size is overridden.
        momentum: SGD momentum (AdamW's beta1 is fixed at 0.9).
        nesterov: Nesterov momentum for SGD.
        weight_decay: L2 penalty (SGD) or decoupled decay (AdamW).
        decay_norm_and_bias: Apply weight decay to normalisation parameters and biases too (the papers did);
            False keeps it off them.
        batch_size: Global batch size (split across processes in distributed runs).
        epochs: Training length in epochs; ``iterations`` overrides it when set.
        iterations: Training length in optimiser steps (He et al. state 64k for CIFAR).
        schedule: ``"constant"``, ``"step"``, ``"multistep"``, ``"cosine"`` or ``"plateau"``.
        milestones: Fractions of training at which a multistep schedule multiplies the rate by ``gamma``.
        step_every: Epochs between drops of a step schedule.
        gamma: Factor of each drop.
        plateau_patience: Epochs without improvement of test accuracy before a plateau drop.
        warmup_epochs: Linear warm-up length in epochs (fractions allowed).
        warmup_lr: A constant warm-up rate instead of a linear ramp (He et al.: 0.01 for ResNet-110 until training
            error falls below 80%, about 400 iterations); None for a linear ramp from zero.
        label_smoothing: Cross-entropy label smoothing.
        crop_padding: Random crop with this much zero padding (0: off).
        random_resized_crop: Scale range of a random resized crop, or None.
        flip: Random horizontal flips.
        color_jitter: Strength of brightness/contrast/saturation jitter (0: off).
        min_lr: Floor of the cosine schedule.
    """

    name: str
    source: str
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 1e-4
    decay_norm_and_bias: bool = True
    batch_size: int = 128
    epochs: int = 90
    iterations: int | None = None
    schedule: str = "multistep"
    milestones: tuple[float, ...] = (0.5, 0.75)
    step_every: int = 30
    gamma: float = 0.1
    plateau_patience: int = 5
    warmup_epochs: float = 0.0
    warmup_lr: float | None = None
    label_smoothing: float = 0.0
    crop_padding: int = 0
    random_resized_crop: tuple[float, float] | None = None
    flip: bool = False
    color_jitter: float = 0.0
    min_lr: float = 0.0

    def validate(self) -> None:
        """Raise a ValueError naming the first impossible setting."""
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"recipe {self.name}: unknown optimizer {self.optimizer!r}; expected one of {OPTIMIZERS}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"recipe {self.name}: unknown schedule {self.schedule!r}; expected one of {SCHEDULES}")
        if self.lr <= 0 or self.batch_size < 1 or self.epochs < 1:
            raise ValueError(f"recipe {self.name}: lr, batch_size and epochs must be positive")
        if self.iterations is not None and self.iterations < 1:
            raise ValueError(f"recipe {self.name}: iterations must be positive")
        if any(not 0 < m < 1 for m in self.milestones):
            raise ValueError(
                f"recipe {self.name}: milestones are fractions of training in (0, 1); got {self.milestones}"
            )
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"recipe {self.name}: label_smoothing must lie in [0, 1)")

    def replace(self, **changes: Any) -> Recipe:
        """A copy with some settings changed; unknown names raise a TypeError listing the accepted ones."""
        names = [f.name for f in dataclasses.fields(self)]
        unknown = [k for k in changes if k not in names]
        if unknown:
            hints = [
                f"{k!r}" + "".join(f" (did you mean {c!r}?)" for c in difflib.get_close_matches(k, names, 1))
                for k in unknown
            ]
            raise TypeError(f"unknown recipe setting(s) {', '.join(hints)}; accepted: {', '.join(names)}")
        for key in ("milestones", "random_resized_crop"):
            if isinstance(changes.get(key), list):
                changes[key] = tuple(changes[key])
        updated = dataclasses.replace(self, **changes)
        updated.validate()
        return updated

    def as_dict(self) -> dict[str, Any]:
        """Plain values (for checkpoints, YAML and reports)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


@dataclass
class LearningRate:
    """The learning rate at every step of a run: warm-up, then the recipe's schedule.

    Reduce-on-plateau keeps its state here (``scale``, ``best``, ``bad_epochs``); it is saved with checkpoints.
    """

    recipe: Recipe
    base_lr: float
    total_steps: int
    steps_per_epoch: int
    scale: float = 1.0
    best: float = -math.inf
    bad_epochs: int = 0
    history: list[float] = field(default_factory=list)

    def __call__(self, step: int) -> float:
        r = self.recipe
        warmup = round(r.warmup_epochs * self.steps_per_epoch)
        if step < warmup:
            return r.warmup_lr if r.warmup_lr is not None else self.base_lr * (step + 1) / warmup
        progress = step / max(1, self.total_steps)
        if r.schedule == "constant":
            return self.base_lr
        if r.schedule == "step":
            return self.base_lr * r.gamma ** (step // (r.step_every * self.steps_per_epoch))
        if r.schedule == "multistep":
            return self.base_lr * r.gamma ** sum(progress >= m for m in r.milestones)
        if r.schedule == "cosine":
            span = max(1, self.total_steps - warmup)
            t = min(1.0, (step - warmup) / span)
            return r.min_lr + (self.base_lr - r.min_lr) * 0.5 * (1 + math.cos(math.pi * t))
        return self.base_lr * self.scale  # plateau

    def end_of_epoch(self, metric: float) -> None:
        """Tell a plateau schedule the epoch's test accuracy (higher is better)."""
        if self.recipe.schedule != "plateau":
            return
        if metric > self.best + 1e-4:
            self.best, self.bad_epochs = metric, 0
        else:
            self.bad_epochs += 1
            if self.bad_epochs > self.recipe.plateau_patience:
                self.scale *= self.recipe.gamma
                self.bad_epochs = 0

    def state_dict(self) -> dict[str, float | int]:
        return {"scale": self.scale, "best": self.best, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict[str, float | int]) -> None:
        self.scale, self.best, self.bad_epochs = float(state["scale"]), float(state["best"]), int(state["bad_epochs"])


RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in [
        Recipe(
            name="alexnet",
            source="Krizhevsky et al. 2012, section 5 (and lecture 9): SGD momentum 0.9, batch 128, weight decay 5e-4, "
            "lr 0.01 divided by 10 when validation error plateaus, dropout 0.5, crops and flips",
            lr=0.01,
            weight_decay=5e-4,
            batch_size=128,
            epochs=90,
            schedule="plateau",
            random_resized_crop=(0.35, 1.0),
            flip=True,
            color_jitter=0.1,
        ),
        Recipe(
            name="vgg",
            source="Simonyan and Zisserman 2015, section 3.1: batch 256, momentum 0.9, weight decay 5e-4, lr 0.01 "
            "divided by 10 three times on plateau (74 epochs), dropout 0.5, random crops, flips and colour shift",
            lr=0.01,
            weight_decay=5e-4,
            batch_size=256,
            epochs=74,
            schedule="plateau",
            random_resized_crop=(0.25, 1.0),
            flip=True,
            color_jitter=0.1,
        ),
        Recipe(
            name="resnet-imagenet",
            source="He et al. 2016, section 3.4: batch 256, lr 0.1 divided by 10 when the error plateaus, weight "
            "decay 1e-4 (the lecture slide prints 1e-5), momentum 0.9, up to 60e4 iterations, scale augmentation, "
            "flips, no dropout; drops every 30 epochs as in common reproductions",
            lr=0.1,
            weight_decay=1e-4,
            batch_size=256,
            epochs=90,
            schedule="step",
            step_every=30,
            random_resized_crop=(0.08, 1.0),
            flip=True,
        ),
        Recipe(
            name="resnet-cifar",
            source="He et al. 2016, section 4.2: lr 0.1, momentum 0.9, weight decay 1e-4, batch 128, divided by 10 "
            "at 32k and 48k iterations, 64k in total, 4-pixel padding with 32x32 crops and flips; ResNet-110 and "
            "deeper warm up at 0.01 for about 400 iterations",
            lr=0.1,
            weight_decay=1e-4,
            batch_size=128,
            iterations=64_000,
            schedule="multistep",
            milestones=(0.5, 0.75),
            crop_padding=4,
            flip=True,
        ),
        Recipe(
            name="densenet-cifar",
            source="Huang et al. 2017, section 4.2: batch 64, 300 epochs, lr 0.1 divided by 10 at 50% and 75%, weight "
            "decay 1e-4, Nesterov momentum 0.9, standard CIFAR augmentation",
            lr=0.1,
            nesterov=True,
            weight_decay=1e-4,
            batch_size=64,
            epochs=300,
            schedule="multistep",
            milestones=(0.5, 0.75),
            crop_padding=4,
            flip=True,
        ),
        Recipe(
            name="wrn-cifar",
            source="Zagoruyko and Komodakis 2016, section 3: SGD with Nesterov momentum 0.9, weight decay 5e-4, "
            "batch 128, lr 0.1 multiplied by 0.2 at epochs 60, 120 and 160 of 200",
            lr=0.1,
            nesterov=True,
            weight_decay=5e-4,
            batch_size=128,
            epochs=200,
            schedule="multistep",
            milestones=(0.3, 0.6, 0.8),
            gamma=0.2,
            crop_padding=4,
            flip=True,
        ),
        Recipe(
            name="modern",
            source="Common current practice (e.g. 'Bag of Tricks', He et al. 2019): cosine schedule, linear warm-up, "
            "label smoothing 0.1, no weight decay on norms and biases, Nesterov momentum",
            lr=0.1,
            nesterov=True,
            weight_decay=5e-4,
            decay_norm_and_bias=False,
            batch_size=128,
            epochs=100,
            schedule="cosine",
            warmup_epochs=5,
            label_smoothing=0.1,
            crop_padding=4,
            flip=True,
        ),
        Recipe(
            name="quick",
            source="The 'modern' recipe shortened for small embedded data sets (the default job: ResNet-20 on "
            "digits, no flips since digits are not mirror-symmetric)",
            lr=0.05,
            nesterov=True,
            weight_decay=5e-4,
            decay_norm_and_bias=False,
            batch_size=64,
            epochs=15,
            schedule="cosine",
            warmup_epochs=1,
            label_smoothing=0.1,
            crop_padding=2,
        ),
    ]
}


def get_recipe(name: str) -> Recipe:
    """A named recipe.

    Raises:
        KeyError: For an unknown name, listing the known ones.
    """
    if name not in RECIPES:
        close = difflib.get_close_matches(name, list(RECIPES), n=3)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise KeyError(f"unknown recipe {name!r}; {hint}known recipes: {', '.join(RECIPES)}")
    return RECIPES[name]
