"""The degradation experiment (He et al. 2016, Figures 1 and 6): deeper plain nets train worse, residual ones do not.

Plain networks (CIFAR ResNets without shortcuts) and residual ones of each depth train with one recipe, through the
one engine, on the same images in the same order. From the recorded training errors the report answers: does the
deeper plain network end with the higher *training* error (degradation), and does the deeper residual network end
with a lower or equal one (the reversal)?

    result = run_degradation((20, 56), "digits")                                # fast: minutes on a CPU
    result = run_degradation((20, 56), "cifar10", epochs=30, train_size=10_000)  # full: the paper's recipe, shortened
"""

from __future__ import annotations

import functools
import json
import os
import re
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from convzoo._files import write_atomically
from convzoo.experiments.report import Evidence, ExperimentFolder, Table
from convzoo.train.config import AMP_MODES

__all__ = ["SETTINGS", "Comparison", "DegradationResult", "NetworkRun", "Verdict", "degradation_depths",
           "degradation_figure", "degradation_findings", "judge_degradation", "results_table",
           "run_degradation"]  # fmt: skip

# He et al. train CIFAR-10 for 64k iterations of 128 images: about 164 epochs of the 50,000 training images.
PAPER_EPOCHS = 64_000 * 128 / 50_000
# Below this many epochs a short run is the first suspect when an effect does not show.
FEW_EPOCHS = 30
# A training set this small is memorised by either depth, which hides how hard each is to optimise.
SMALL_TRAINING_SET = 10_000
# Training errors (percent) below this mean both networks fit their training set: nothing is left to separate them.
SATURATED_ERROR = 1.0
# Records what the runs' checkpoints cannot (the data subset), checked when an experiment is continued.
SETTINGS_FILE = "experiment.json"
_EMBEDDED = ("digits", "shapes")
# Warm colours for plain networks, cool for residual ones, light to dark as depth grows (never near white).
_COLOUR_MAPS = {False: ("YlOrRd", 0.4, 0.95), True: ("Blues", 0.45, 0.95)}
# The paper's way of telling the curves apart: thin (dashed in Figure 6) for training error, bold for test error.
_TRAIN_LINE = {"linestyle": "--", "linewidth": 0.9}
_TEST_LINE = {"linestyle": "-", "linewidth": 2.4}
_COLUMNS = (
    "network|shortcuts|depth|parameters|seed|epochs|train err final (%)|train err mean last {k} (%)|test err final (%)"
    "|test err mean last {k} (%)|best test err (%)|train time (s)|run folder"
)


# Defaults of the two ways to run the experiment (each can be overridden). Fast: batch 64 gives the 1,437 digits 22
# steps per epoch (the rate follows the batch: 0.05); digits are not mirror-symmetric, so no flips; a 16-pixel image
# gets half the paper's 4-pixel padding. Full: the paper's recipe at the networks' own 32x32, shortened.
SETTINGS: dict[str, dict[str, Any]] = {
    "fast": dict(recipe="resnet-cifar", recipe_overrides={"batch_size": 64, "flip": False, "crop_padding": 2},
                 epochs=8, image_size=16, description="the embedded digits at 16x16, 8 epochs: the mechanics in "
                 "minutes on a CPU, not the paper's numbers"),
    "full": dict(recipe="resnet-cifar", recipe_overrides={}, epochs=30, image_size=32,
                 description=f"He et al.'s CIFAR-10 recipe (section 4.2), its schedule (rate divided by 10 at 50% and "
                 f"75% of training) compressed from about {PAPER_EPOCHS:.0f} epochs into the epochs given"),
}  # fmt: skip


def degradation_depths() -> list[int]:
    """The depths with both a plain and a residual CIFAR network registered (``plain{d}`` and ``resnet{d}``)."""
    from convzoo.registry import get_model_card, list_models

    names = set(list_models(["plain*", "resnet*"]))
    # The CIFAR variants take 32x32 images; the ImageNet ones (18, 34, ...) are another architecture.
    matches = [m for m in map(re.compile(r"plain(\d+)").fullmatch, names) if m and f"resnet{m[1]}" in names]
    return sorted(int(m[1]) for m in matches if get_model_card(m[0]).input_size[-1] == 32)


@dataclass(frozen=True)
class Comparison:
    """The training errors (percent) of a shallower and a deeper network of one kind: (shallow, deep) after the last
    epoch (``final``) and averaged over the last ``window`` epochs (``mean``), and ``spread``, the larger standard
    deviation of the two over those epochs (how much the error moves from epoch to epoch)."""

    shallow: str
    deep: str
    final: tuple[float, float]
    mean: tuple[float, float]
    window: int
    spread: float

    @property
    def deeper_higher(self) -> str:
        """``"yes"`` (higher by both measures), ``"no"`` (lower or equal by both) or ``"mixed"``, for the deeper net."""
        votes = {self.final[1] > self.final[0], self.mean[1] > self.mean[0]}
        return "mixed" if len(votes) == 2 else ("yes" if votes == {True} else "no")

    def numbers(self) -> str:
        """Both measures in words, e.g. ``plain56 9.10% vs plain20 4.20% after the last epoch, ...``."""
        final = f"{self.deep} {self.final[1]:.2f}% vs {self.shallow} {self.final[0]:.2f}% after the last epoch"
        if self.window == 1:
            return final
        return f"{final}, {self.mean[1]:.2f}% vs {self.mean[0]:.2f}% averaged over the last {self.window} epochs"


@dataclass(frozen=True)
class Verdict:
    """The two claims, judged: `degradation` and `reversed` are ``"yes"``, ``"no"`` or ``"mixed"``."""

    plain: Comparison
    residual: Comparison

    @property
    def degradation(self) -> str:
        """Whether the deeper plain network has the higher training error."""
        return self.plain.deeper_higher

    @property
    def reversed(self) -> str:
        """Whether the deeper residual network's training error is lower or equal."""
        return {"yes": "no", "no": "yes", "mixed": "mixed"}[self.residual.deeper_higher]


def _compare(histories: Mapping[str, Sequence[Mapping[str, Any]]], shallow: str, deep: str, window: int) -> Comparison:
    errors = {name: [float(row["train_err"]) for row in histories[name]] for name in (shallow, deep)}
    if empty := [name for name, values in errors.items() if not values]:
        raise ValueError(f"{', '.join(empty)} has no finished epoch to judge")
    k = min(window, *(len(e) for e in errors.values()))
    tails = [errors[shallow][-k:], errors[deep][-k:]]
    final, mean = (errors[shallow][-1], errors[deep][-1]), (statistics.fmean(tails[0]), statistics.fmean(tails[1]))
    return Comparison(shallow, deep, final, mean, k, max(statistics.pstdev(t) for t in tails))


def judge_degradation(
    histories: Mapping[str, Sequence[Mapping[str, Any]]], depths: Sequence[int], *, window: int = 3
) -> Verdict:
    """Compare the training errors of the shallowest and the deepest plain and residual networks.

    ``histories`` holds the runs' rows of metrics.csv (``train_err`` in percent) by network (``plain20``, ...);
    ``window`` final epochs are averaged (fewer when the runs have fewer).
    """
    if len(set(depths)) < 2:
        raise ValueError(f"the experiment compares at least two depths; got {list(depths)}")
    if window < 1:
        raise ValueError(f"the window of final epochs must be at least 1; got {window}")
    shallow, deep = min(depths), max(depths)
    missing = [f"{kind}{d}" for d in (shallow, deep) for kind in ("plain", "resnet") if f"{kind}{d}" not in histories]
    if missing:
        raise KeyError(f"no history of {', '.join(missing)}")
    return Verdict(*(_compare(histories, f"{kind}{shallow}", f"{kind}{deep}", window) for kind in ("plain", "resnet")))


def degradation_findings(verdict: Verdict, *, epochs: int, train_images: int) -> list[str]:
    """The report's findings: each claim stated from the numbers and, when one fails, the likely reasons (from the
    runs' length in ``epochs``, the size of the training set and the numbers themselves)."""
    plain, residual = verdict.plain.numbers(), verdict.residual.numbers()
    lines = [
        {
            "yes": f"Degradation appears: the deeper plain network has the higher training error ({plain}), as in "
            f"He et al. 2016, Figure 1.",
            "no": f"Degradation does not appear: the deeper plain network's training error is not higher than the "
            f"shallower one's ({plain}).",
            "mixed": f"Degradation is unclear: the last epoch and the average of the last epochs disagree about which "
            f"plain network has the higher training error ({plain}).",
        }[verdict.degradation],
        {
            "yes": f"The residual networks reverse it: the deeper residual network's training error is lower than or "
            f"equal to the shallower one's ({residual}), as in Figure 6.",
            "no": f"The residual networks do not reverse it: the deeper residual network's training error is the "
            f"higher one ({residual}).",
            "mixed": f"Whether the residual networks reverse it is unclear: the last epoch and the average of the last "
            f"epochs disagree ({residual}).",
        }[verdict.reversed],
    ]
    if verdict.degradation != "yes" or verdict.reversed != "yes":
        lines += _reasons(verdict, epochs=epochs, train_images=train_images)
    return lines


def _reasons(verdict: Verdict, *, epochs: int, train_images: int) -> list[str]:
    """Why an expected effect may not have shown, from the settings and the numbers."""
    judged = ((verdict.plain, verdict.degradation), (verdict.residual, verdict.reversed))
    failing = [c for c, ok in judged if ok != "yes"]
    reasons = [
        f"Possible reason: only {_epochs(epochs)}. He et al. train for 64k iterations (about {PAPER_EPOCHS:.0f} "
        f"epochs); early in training every deeper network, residual or not, is still behind, and the curves separate "
        f"as training goes on. Run longer (--epochs)."
    ] * (epochs < FEW_EPOCHS) + [
        f"Possible reason: {train_images:,} training images. Both depths can memorise a small set, which hides how "
        f"hard each is to optimise; the paper trains on CIFAR-10's 50,000."
    ] * (train_images < SMALL_TRAINING_SET) + [
        f"Possible reason: the training errors are below {SATURATED_ERROR:g}%: both networks fit the training set, so "
        f"the task is too easy to tell them apart. Use a harder data set (CIFAR-10)."
    ] * any(max(c.mean) < SATURATED_ERROR for c in failing)  # fmt: skip
    for c in failing:
        if c.window > 1 and (gap := abs(c.mean[1] - c.mean[0])) <= c.spread:
            reasons.append(
                f"Possible reason: {c.deep} and {c.shallow} differ by {gap:.2f} points on average, no more than their "
                f"training errors move from epoch to epoch ({c.spread:.2f} points over the last {c.window} epochs); "
                f"one run per network cannot separate them. Run longer or repeat with other seeds (--seed)."
            )
    return reasons or [
        "The settings look adequate (enough epochs and images, errors not saturated); the result may depend on the "
        "seed: repeat with other seeds (--seed) before drawing conclusions."
    ]


@dataclass
class NetworkRun:
    """One network's training run: its engine run folder, one row of metrics.csv per epoch in ``history``, and
    ``status``: ``"trained"``, ``"resumed"``, ``"finished earlier"`` or ``"stopped"`` (interrupted)."""

    model: str
    residual: bool
    depth: int
    seed: int
    run_dir: Path
    parameters: int
    history: list[dict[str, Any]] = field(default_factory=list)
    status: str = "trained"


@dataclass
class DegradationResult:
    """What `run_degradation` produced: the experiment folder, the runs (by depth, plain first), and unless a run was
    interrupted (`stopped`: the same call again continues it), the verdict, the findings and report.md."""

    out: Path
    networks: list[NetworkRun]
    verdict: Verdict | None = None
    findings: list[str] = field(default_factory=list)
    report: Path | None = None

    @property
    def stopped(self) -> bool:
        return self.report is None


def degradation_figure(networks: Sequence[NetworkRun]) -> Any:
    """Every network's training error (thin, dashed) and test error (bold) against epochs in one chart, one colour
    per network (warm for plain, cool for residual, darker as depth grows), as in He et al. 2016's figures; the
    matplotlib figure (close it with ``matplotlib.pyplot.close``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import to_hex
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(8, 5))
    for kind, (cmap, lightest, darkest) in _COLOUR_MAPS.items():
        runs = sorted((n for n in networks if n.residual == kind), key=lambda n: n.depth)
        steps = [lightest + (darkest - lightest) * i / max(1, len(runs) - 1) for i in range(len(runs))]
        for run, t in zip(runs, steps):
            colour, label = (
                to_hex(matplotlib.colormaps[cmap](t)),
                f"{'ResNet' if run.residual else 'plain'}-{run.depth}",
            )
            epochs, train, test = ([row[key] for row in run.history] for key in ("epoch", "train_err", "test_err"))
            ax.plot(epochs, train, color=colour, gid="train", **_TRAIN_LINE)
            ax.plot(epochs, test, color=colour, gid="test", label=label, **_TEST_LINE)
    styles = [Line2D([], [], color="grey", label=f"{split} error ({look})", **line) for split, look, line in
              (("training", "thin, dashed", _TRAIN_LINE), ("test", "bold", _TEST_LINE))]  # fmt: skip
    ax.legend(handles=[*ax.get_legend_handles_labels()[0], *styles], fontsize=8, ncol=2)
    ax.set(xlabel="epoch", ylabel="error (%)", title="Plain vs residual networks: training and test error")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def _save_chart(networks: Sequence[NetworkRun], path: Path) -> None:
    import matplotlib.pyplot as plt

    fig = degradation_figure(networks)
    try:
        fig.savefig(path, dpi=110, format="png")
    finally:
        plt.close(fig)


def results_table(networks: Sequence[NetworkRun], *, window: int) -> Table:
    """One row per network: its final errors, their means over the last ``window`` epochs, the best test error."""
    table = Table(columns=_COLUMNS.format(k=window).split("|"))
    for n in networks:
        train, test = ([float(row[f"{split}_err"]) for row in n.history] for split in ("train", "test"))
        shortcuts, seconds = "identity (option A)" if n.residual else "none", sum(row["seconds"] for row in n.history)
        errors = (train[-1], statistics.fmean(train[-window:]), test[-1], statistics.fmean(test[-window:]), min(test))
        table.add(n.model, shortcuts, n.depth, n.parameters, n.seed, len(train), *errors, seconds, n.run_dir.name)
    return table


def _check_depths(depths: Sequence[int]) -> list[int]:
    valid = degradation_depths()
    listed = ", ".join(map(str, valid))
    if isinstance(depths, (str, bytes)) or not all(isinstance(d, int) and not isinstance(d, bool) for d in depths):
        raise TypeError(f"depths must be whole numbers (valid depths: {listed}); got {depths!r}")
    if unknown := [d for d in depths if d not in valid]:
        raise ValueError(
            f"no plain and residual CIFAR networks of depth {', '.join(map(str, unknown))}; valid depths: {listed}"
        )
    if len(set(depths)) != len(depths) or len(depths) < 2:
        raise ValueError(f"the experiment compares two or more different depths, e.g. 20 56; got {list(depths)}")
    return sorted(depths)


def _subset(ds: Any, size: int | None, seed: int, split: str) -> Any:
    """A class-balanced subset of ``size`` images (all of them when None), fixed by ``seed``."""
    if size is None or size == len(ds):
        return ds
    if size > len(ds):
        raise ValueError(f"a {split} subset of {size:,} images asked for, but {ds.name} has {len(ds):,}")
    return ds.balanced_subset(size, seed=seed)


def _check_settings_file(path: Path, settings: dict[str, Any]) -> None:
    """Refuse to continue an experiment that trained on other data (subset, image size) than this call's."""
    saved = json.loads(path.read_text()) if path.is_file() else settings
    if changed := [f"{k}: {saved.get(k)!r} -> {v!r}" for k, v in settings.items() if saved.get(k) != v]:
        raise ValueError(
            f"{path.parent} holds an experiment run on other data; give the same settings or choose another --out:"
            "\n  " + "\n  ".join(changed)
        )


def _count_params(model: str, num_classes: int, in_chans: int) -> int:
    from convzoo.analysis import count_params
    from convzoo.factory import create_model

    with torch.device("meta"):  # counting needs shapes only, not memory or initialisation
        return count_params(create_model(model, num_classes=num_classes, in_chans=in_chans))


def run_degradation(
    depths: Sequence[int] = (20, 56),
    data: str = "digits",
    *,
    setting: str = "auto",
    epochs: int | None = None,
    recipe: str | None = None,
    recipe_overrides: Mapping[str, Any] | None = None,
    image_size: int | None = None,
    train_size: int | None = None,
    test_size: int | None = None,
    window: int = 3,
    seed: int = 0,
    out: str | os.PathLike[str] | None = None,
    **engine: Any,
) -> DegradationResult:
    """Train plain and residual networks of each depth alike and report whether depth degrades training.

    Every input is checked and the data loaded before anything is written. Each network's run is an engine run folder
    in ``out`` named after it: the same call again reads back finished runs and resumes an interrupted one. A folder
    holding a finished report is refused (FileExistsError).

    Args:
        depths: Two or more of `degradation_depths` (20, 32, 44, 56, 110, 1202); the extremes are compared.
        data: A data set name (``digits``, ``shapes``, ``cifar10``, ...) or path, as `load_dataset` reads it.
        setting: ``"fast"``, ``"full"`` (see `SETTINGS`) or ``"auto"``: fast on the embedded data, full otherwise.
        epochs: Training length (default: the setting's).
        recipe: Named recipe of every network (default: the setting's, ``resnet-cifar``).
        recipe_overrides: Recipe changes on top of the setting's, e.g. ``{"lr": 0.05}``.
        image_size: Image side (default: the setting's; the networks take 32).
        train_size, test_size: Train (evaluate) on a class-balanced subset of this many images (default: all).
        window: How many final epochs the verdict averages, besides judging the last one.
        seed: Seed of every run (weights, data order, augmentation) and of the subsets.
        out: The experiment folder (default: ``runs/degradation-<time>``).
        **engine: Further `TrainConfig` settings of every run: ``data_root``, ``device``, ``amp``, ``channels_last``,
            ``deterministic``, ``progress``, ``eval_batch_size``, ...

    Raises:
        ValueError: An unknown depth (the message lists the valid ones), fewer than two, a count that is not positive,
            impossible settings, a subset larger than the data, earlier runs in ``out`` with other settings.
    """
    from convzoo.data import load_dataset
    from convzoo.experiments.report import hardware
    from convzoo.train import TrainConfig, Trainer, build_recipe, load_checkpoint

    depths = _check_depths(depths)
    if setting != "auto" and setting not in SETTINGS:
        raise ValueError(f"unknown setting {setting!r}; expected auto, {', '.join(SETTINGS)}")
    setting = ("fast" if data.lower() in _EMBEDDED else "full") if setting == "auto" else setting
    chosen, epochs = SETTINGS[setting], SETTINGS[setting]["epochs"] if epochs is None else epochs
    counts = dict(epochs=epochs, window=window, train_size=train_size, test_size=test_size, image_size=image_size)
    for key, value in counts.items():
        if (value is not None or key in ("epochs", "window")) and (type(value) is not int or value < 1):
            raise ValueError(f"{key} must be a positive whole number; got {value!r}")
    if fixed := sorted(set(engine) & {"model", "data", "recipe", "recipe_overrides", "image_size", "out", "seed"}):
        raise TypeError(f"{', '.join(fixed)}: set by the experiment or its own arguments, not as engine settings")
    size, overrides = image_size or chosen["image_size"], {**chosen["recipe_overrides"], **(recipe_overrides or {})}
    common = dict(data=data, recipe=recipe or chosen["recipe"], image_size=size, seed=seed, **engine)
    names = [f"{kind}{d}" for d in depths for kind in ("plain", "resnet")]
    configs = {n: TrainConfig(model=n, recipe_overrides={**overrides, "epochs": epochs}, **common) for n in names}
    config = configs[names[0]]
    if config.amp not in AMP_MODES:
        raise ValueError(f"amp must be one of {', '.join(AMP_MODES)}; got {config.amp!r}")
    trained_with = build_recipe(config)  # checks the recipe and the overrides
    full_train, full_test = load_dataset(data, root=config.data_root, image_size=size, seed=seed)
    train_set, test_set = _subset(full_train, train_size, seed, "training"), _subset(full_test, test_size, seed, "test")
    if trained_with.batch_size > len(train_set):
        raise ValueError(f"a batch of {trained_with.batch_size} is more than the {len(train_set)} training images")
    folder = ExperimentFolder(out, "degradation")
    states = {name: folder.run_state(name, config) for name, config in configs.items()}
    for name, config in configs.items():
        config.out, config.resume = str(folder.run_dir(name)), states[name] != "new"
    data_settings = dict(data=data, image_size=size, train_images=len(train_set), test_images=len(test_set))
    data_settings["subset_seed"] = seed if (train_size or test_size) else None
    _check_settings_file(folder.path / SETTINGS_FILE, data_settings)

    # Everything is checked: from here on the folder is written.
    write_atomically(folder.path / SETTINGS_FILE, lambda tmp: Path(tmp).write_text(json.dumps(data_settings, indent=2)))
    networks: list[NetworkRun] = []
    device = "cuda" if config.device == "auto" and torch.cuda.is_available() else config.device.replace("auto", "cpu")
    for i, (name, config) in enumerate(configs.items(), 1):
        residual, depth = name.startswith("resnet"), int(name.removeprefix("plain").removeprefix("resnet"))
        params = _count_params(name, full_train.num_classes, full_train.image_size[0])
        networks.append(run := NetworkRun(name, residual, depth, seed, folder.run_dir(name), params))
        if states[name] == "finished":
            print(f"[{i}/{len(configs)}] {name}: finished earlier, read from {run.run_dir}", flush=True)
            run.history, run.status = list(load_checkpoint(run.run_dir / "last.pt")["history"]), "finished earlier"
            continue
        print(f"[{i}/{len(configs)}] {name}: {'resuming' if config.resume else 'training'}", flush=True)
        trainer = Trainer(config, datasets=(train_set, test_set))
        device, result = str(trainer.device), trainer.run()
        run.history = list(result.history)
        run.status = "stopped" if result.stopped_early else "resumed" if config.resume else "trained"
        if result.stopped_early:
            return DegradationResult(out=folder.path, networks=networks)

    verdict = judge_degradation({n.model: n.history for n in networks}, depths, window=window)
    findings = degradation_findings(verdict, epochs=epochs, train_images=len(train_set))

    def images(kept: Any, whole: Any, split: str) -> str:
        subset = f" (a class-balanced subset of {len(whole):,}, seed {seed})" if len(kept) < len(whole) else ""
        return f"{len(kept):,} {split} images{subset}"

    as_run = ", ".join(f"{k} {v}" for k, v in trained_with.as_dict().items() if k not in ("name", "source"))
    settings = {"setting": f"{setting} ({chosen['description']})", "recipe": trained_with.source, "as run": as_run}
    settings |= {"amp": config.amp, "deterministic": config.deterministic}
    evidence = Evidence(
        experiment=f"Degradation (He et al. 2016, Figures 1 and 6): plain and residual networks of "
        f"{', '.join(map(str, depths[:-1]))} and {depths[-1]} layers trained alike",
        data=f"{data}: {images(train_set, full_train, 'training')} and {images(test_set, full_test, 'test')}, "
        f"{'x'.join(map(str, train_set.image_size))}",
        runs=f"{len(networks)} (one per network), {_epochs(epochs)} each",
        seeds=[n.seed for n in networks],
        settings=settings,
        device=device,
        hardware=hardware(device),
    )
    notes = [
        "The question is about *training* error: a deeper plain network that fits its training data worse than a "
        "shallower one is not overfitting; it could copy the shallower network and make its extra layers the "
        "identity, so the optimiser fails to find such a solution. Residual blocks make the identity the easy default "
        "(He et al. 2016, section 3.1).",
        "Training error is measured on the augmented training batches as each epoch trains (in training mode), as in "
        "the paper's curves; test error after each epoch. The verdicts compare the shallowest and the deepest network "
        f"of each kind after the last epoch and averaged over the last {_epochs(verdict.plain.window)}; a claim holds "
        f"when both agree. `{SETTINGS_FILE}` records the data the runs used, for continuing the experiment.",
    ]
    table = results_table(networks, window=verdict.plain.window)
    chart = functools.partial(_save_chart, networks)
    title = "Degradation: plain vs residual networks of growing depth"
    report = folder.write(title=title, evidence=evidence, table=table, findings=findings, chart=chart, notes=notes)
    return DegradationResult(out=folder.path, networks=networks, verdict=verdict, findings=findings, report=report)


def _epochs(n: int) -> str:
    return f"{n} epoch" if n == 1 else f"{n} epochs"
