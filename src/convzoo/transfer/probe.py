"""Linear probing: how much each layer of a frozen network knows about the classes, layer by layer.

Zhang, Isola and Efros. Split-Brain Autoencoders: Unsupervised Learning by Cross-Channel Prediction. CVPR 2017,
section 4.1 and Table 2 (lecture 6). The network is frozen; each stage's output (conv1..conv5 of AlexNet, after their
ReLUs) is average-pooled to about 9,000 values (AlexNet: conv1 10x10x96 = 9,600, conv2 6x6x256 = 9,216, conv3 and
conv4 5x5x384 = 9,600, conv5 6x6x256 = 9,216), normalised by a batch norm without affine parameters and read by one
linear classifier. Their ILSVRC-12 AlexNet's probes reach 19.3, 36.3, 44.2, 48.3 and 50.5% from conv1 to conv5; the
same network randomly initialised 11.6, 17.1, 16.9, 16.3 and 14.1%.

`Probes`: a frozen trunk whose one pass per batch feeds a probe per layer; `ProbeTask`: their joint training in the
engine; `run_probe`: a trained network against its random twin, with the table, a chart and the findings.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from convzoo.train.tasks import Batch, Curve, Metrics, StepOutput, SumMetrics, Task
from convzoo.transfer.source import Source, load_source

__all__ = [
    "PROBE_RECIPE",
    "TARGET_FEATURES",
    "LayerProbe",
    "LayerResult",
    "ProbeResult",
    "ProbeTask",
    "Probes",
    "pool_size",
    "probe_points",
    "run_probe",
]

TARGET_FEATURES = 9000
"""The number of pooled values per layer that Zhang et al. aim for."""

# How the probes train: the `quick` recipe (SGD, Nesterov momentum 0.9, weight decay 5e-4, cosine decay) without its
# warm-up, label smoothing (a linear read-out's accuracy is measured) and crops (the trunk is fixed: augmenting only
# changes the features each epoch). The rate: with 2,560 CIFAR-10 training images (5 epochs, 1,000 test images),
# ResNet-20's probes reached 0.7 to 3.6 points more at 0.01 than at 0.05 at every layer of the trained and of the
# random network; 0.002 gained nothing more over 0.01.
PROBE_RECIPE = {"lr": 0.01, "batch_size": 128, "warmup_epochs": 0.0, "label_smoothing": 0.0, "crop_padding": 0}


def pool_size(channels: int, height: int, width: int | None = None, *, target: int = TARGET_FEATURES) -> int:
    """The side ``s`` of the square average pooling whose ``channels * s * s`` values come nearest ``target``.

    ``s`` never exceeds the map (pooling to a larger grid would only repeat values); a tie goes to the smaller grid.
    With AlexNet's widths at 227 pixels this gives Zhang et al.'s grids: 10, 6, 5, 5 and 6.

    Raises:
        ValueError: A channel count, map side or target below 1.
    """
    width = height if width is None else width
    if min(channels, height, width, target) < 1:
        raise ValueError(f"pool_size needs positive channels, map sides and target; got {channels}, {height}x{width}")
    ideal = math.sqrt(target / channels)
    sides = {max(1, min(height, width, math.floor(ideal))), max(1, min(height, width, math.ceil(ideal)))}
    return min(sides, key=lambda s: (abs(channels * s * s - target), s))


@dataclass(frozen=True)
class ProbePoint:
    """A layer that can be probed: its ``name`` for the user, the ``module`` `forward_taps` reads, its ``channels``."""

    name: str
    module: str
    channels: int


def probe_points(model: nn.Module) -> list[ProbePoint]:
    """The layers of ``model`` that can be probed, from the input on.

    AlexNet-family networks (AlexNet, ZFNet) offer their convolutions, ``conv1`` to ``conv5``, read after the ReLUs as
    Zhang et al. read them (their ``feature_info`` taps only the last layer at each resolution). Every other network
    offers the tap points of its ``feature_info`` (its stage outputs), named by their modules.
    """
    from convzoo.models.alexnet import AlexNet

    if not isinstance(model, AlexNet):
        return [ProbePoint(f.module, f.module, f.num_chs) for f in getattr(model, "feature_info", None) or []]
    layers = list(model.features.named_children())
    pairs = [(conv, name) for (_, conv), (name, act) in zip(layers, layers[1:]) if isinstance(act, nn.ReLU)]
    return [
        ProbePoint(f"conv{i + 1}", f"features.{name}", conv.out_channels)
        for i, (conv, name) in enumerate(p for p in pairs if isinstance(p[0], nn.Conv2d))
    ]


class LayerProbe(nn.Module):
    """One layer's probe: square average pooling, a batch norm without affine parameters, a linear classifier.

    The batch norm (Zhang et al.'s) puts layers whose activations differ in scale by orders of magnitude on one
    footing, so one learning rate serves every probe; it normalises each channel, as Caffe's does, and learns nothing.
    """

    def __init__(self, channels: int, grid: int, num_classes: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(grid)
        self.norm = nn.BatchNorm2d(channels, affine=False)
        self.fc = nn.Linear(channels * grid * grid, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.norm(self.pool(x)), 1))


class Probes(nn.Module):
    """A frozen network with a linear probe on each chosen layer; the forward returns the probes' logits, in order.

    The trunk runs once per batch, under ``torch.no_grad`` (nothing flows back into it), up to the deepest probed
    layer; every probe reads that one pass. It is frozen and stays in evaluation mode (its batch norms keep their
    statistics, its dropout stays off) while the probes' own batch norms train.

    Args:
        trunk: The network (a convzoo classifier); its classifier is removed (``reset_classifier(0)``).
        num_classes: Classes of every probe.
        input_size: (channels, height, width) of the images; the map sizes, and so the pooled grids, follow from it.
        layers: Names of the layers to probe (see `probe_points`); None probes them all.
        target_features: Values per layer to pool to (see `pool_size`).

    Raises:
        ValueError: An unknown layer (the valid ones are listed), a network without spatial feature maps, or an
            input the network does not accept.
    """

    def __init__(
        self,
        trunk: nn.Module,
        num_classes: int,
        input_size: tuple[int, int, int],
        *,
        layers: Sequence[str] | None = None,
        target_features: int = TARGET_FEATURES,
    ) -> None:
        super().__init__()
        name = getattr(trunk, "model_name", type(trunk).__name__)
        points = probe_points(trunk)
        if not points:
            raise ValueError(f"{name} names no feature maps (feature_info is empty), so it has no layer to probe")
        valid = {p.name: p.module for p in points}
        wanted = list(valid) if layers is None else [layer.strip() for layer in layers if layer.strip()]
        unknown = [layer for layer in wanted if layer not in valid]
        if unknown or not wanted:
            raise ValueError(f"{name} has no layer(s) {', '.join(unknown)} to probe; valid layers: {', '.join(valid)}")
        like = next(trunk.parameters())
        with torch.no_grad():  # one image gives every map's size, and so the pooled grids
            x = torch.zeros(1, *input_size, device=like.device, dtype=like.dtype)
            maps = trunk.eval().forward_taps(x, set(valid.values()))
        shapes = {m: tuple(x.shape[1:]) for m, x in maps.items()}
        if all(len(shape) != 3 or shape[1:] == (1, 1) for shape in shapes.values()):
            maps = ", ".join(f"{p.name} {'x'.join(map(str, shapes[p.module]))}" for p in points)
            raise ValueError(
                f"{name} has no spatial feature maps at {input_size[1]}x{input_size[2]} (its layers: {maps}); linear "
                "probing pools feature maps, so it needs stages that keep a spatial grid (or larger images)"
            )
        if hasattr(trunk, "reset_classifier"):
            trunk.reset_classifier(0)
        self.trunk = trunk.requires_grad_(False)
        self.points = [p for p in points if p.name in wanted]
        self.shapes = {p.name: shapes[p.module] for p in self.points}
        self.probes = nn.ModuleDict()
        for p in self.points:
            grid = pool_size(*self.shapes[p.name], target=target_features)
            self.probes[p.name.replace(".", "_")] = LayerProbe(p.channels, grid, num_classes)  # keys hold no dots

    @property
    def layer_names(self) -> list[str]:
        """The probed layers, from the input on."""
        return [p.name for p in self.points]

    def probe(self, layer: str) -> LayerProbe:
        """The probe of ``layer``."""
        return self.probes[layer.replace(".", "_")]

    def pooling(self, layer: str) -> tuple[int, tuple[int, int, int], int]:
        """How ``layer`` is read: (values its probe reads, the map's (C, H, W), the pooled grid's side)."""
        probe = self.probe(layer)
        return probe.fc.in_features, self.shapes[layer], probe.pool.output_size

    def train(self, mode: bool = True) -> Probes:
        # The trunk is a fixed feature extractor whatever the caller does: in training mode its batch norms would
        # normalise with each batch's statistics (and overwrite their running ones) and its dropout would drop.
        super().train(mode)
        self.trunk.eval()
        return self

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        with torch.no_grad():
            maps = self.trunk.forward_taps(x, {p.module for p in self.points}, stop_early=True)
        return tuple(self.probe(p.name)(maps[p.module]) for p in self.points)


class SummedCrossEntropy(nn.Module):
    """The probes' joint loss: the sum of each probe's cross-entropy."""

    def forward(self, outputs: Sequence[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        return sum(nn.functional.cross_entropy(logits.float(), target) for logits in outputs)


class _ProbeMetrics(SumMetrics):
    """The summed loss and each probe's hits: errors (training) or accuracies (evaluation), per layer and mean."""

    def __init__(self, layers: Sequence[str], *, training: bool) -> None:
        self.layers, self.training = tuple(layers), training
        self.sums = ("loss", "n", *(f"correct_{layer}" for layer in self.layers))
        super().__init__()

    def update(self, batch: Batch, outputs: Any, loss: float | None = None) -> None:
        y = batch[1]
        self.totals["loss"] += (SummedCrossEntropy()(outputs, y).item() if loss is None else loss) * y.numel()
        self.totals["n"] += y.numel()
        for layer, logits in zip(self.layers, outputs):
            self.totals[f"correct_{layer}"] += logits.detach().argmax(1).eq(y).sum().item()

    def summarise(self, totals: dict[str, float]) -> dict[str, float]:
        n = max(1.0, totals["n"])
        accuracy = {layer: 100.0 * totals[f"correct_{layer}"] / n for layer in self.layers}
        mean = sum(accuracy.values()) / len(accuracy)
        if self.training:
            return {"loss": totals["loss"] / n, "err": 100 - mean} | {f"err_{k}": 100 - v for k, v in accuracy.items()}
        return {"loss": totals["loss"] / n, "top1": mean, "err": 100 - mean, "n": n} | {
            f"top1_{k}": v for k, v in accuracy.items()
        }


class ProbeTask(Task):
    """The probes of a `Probes` network, trained together on the sum of their cross-entropies.

    Evaluation reports each probe's top-1 accuracy (``test_top1_<layer>`` in metrics.csv) and their mean (``top1``,
    which picks ``best.pt``). ``layers``: the probed layers, in the order the network returns their logits.
    """

    best_metric = "top1"
    curves = (Curve("err", "mean probe error", "error (%), mean of the probes"), Curve("loss", "loss", "summed loss"))

    def __init__(self, layers: Sequence[str]) -> None:
        self.layers = tuple(layers)
        self.criterion = SummedCrossEntropy()

    def train_step(self, model: nn.Module, batch: Batch) -> StepOutput:
        outputs = model(batch[0])
        return StepOutput(self.criterion(outputs, batch[1]), outputs)

    def eval_step(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, ...]:
        return tuple(logits.float() for logits in model(batch[0]))

    def train_metrics(self) -> Metrics:
        return _ProbeMetrics(self.layers, training=True)

    def eval_metrics(self) -> Metrics:
        return _ProbeMetrics(self.layers, training=False)

    def describe(self, row: dict[str, Any]) -> str:
        accuracies = " ".join(f"{layer} {row[f'test_top1_{layer}']:.1f}" for layer in self.layers)
        return f"train loss {row['train_loss']:.4f}  test loss {row['test_loss']:.4f}  test top-1 (%): {accuracies}"


@dataclass(frozen=True)
class LayerResult:
    """One row of the table: the ``layer``, the ``features`` its probe reads, its map ``shape`` (C, H, W), the pooled
    ``grid`` side, and the test accuracy (percent) of its probe on the ``trained`` and the ``random`` network."""

    layer: str
    features: int
    shape: tuple[int, int, int]
    grid: int
    trained: float
    random: float


@dataclass
class ProbeResult:
    """What `run_probe` produced: the experiment folder ``out``, its ``report``, one `LayerResult` per layer, and
    the engine's result of each run (``runs["trained"]``, ``runs["random"]``)."""

    out: Path
    report: Path
    layers: list[LayerResult]
    runs: dict[str, Any]


def run_probe(
    source: str | os.PathLike[str],
    data: str | os.PathLike[str],
    layers: Sequence[str] | None = None,
    *,
    weights: str | os.PathLike[str] | None = None,
    out: str | os.PathLike[str] | None = None,
    image_size: int | None = None,
    epochs: int = 10,
    target_features: int = TARGET_FEATURES,
    seed: int = 0,
    recipe_overrides: dict[str, Any] | None = None,
    **settings: Any,
) -> ProbeResult:
    """Probe the chosen layers of a trained network and of the same architecture randomly initialised.

    Everything (source, data, layers, both runs' settings) is checked before anything is written. Each network's
    probes train in one engine run, ``out/trained`` and ``out/random``; ``report.md``, ``results.csv`` and
    ``chart.png`` give each layer's test accuracy after the last epoch (nothing is chosen on the test set). Run
    again with the same ``out``, an interrupted experiment resumes.

    Args:
        source: A training checkpoint or a registered model name, with ``weights`` (see `load_source`).
        data: The data set the probes train and are tested on (a name or path, as `load_dataset` takes).
        layers: Layers to probe (default: all; see `probe_points`).
        out: The experiment folder (default: ``runs/probe-<time>``).
        image_size: Side of the images (default: the side the network was trained on).
        target_features: Values each layer is pooled to, about (see `pool_size`).
        seed: Seed of the random network, the probes' initial weights and the data order.
        recipe_overrides: Settings replacing `PROBE_RECIPE`'s; a batch size alone scales the rate linearly.
        **settings: Further `TrainConfig` settings of both runs (``data_root``, ``device``, ``amp``, ``progress``).

    Raises:
        FileExistsError: ``out`` already holds a finished probing experiment.
        ValueError: An unknown layer (the valid ones are listed), a network without spatial feature maps, a
            checkpoint trained on other classes than ``data``'s, a model without weights, impossible settings.
    """
    from convzoo.data import load_dataset
    from convzoo.experiments import ExperimentFolder
    from convzoo.train import TrainConfig, Trainer

    folder = ExperimentFolder(out, "probe")
    loaded = load_source(source, weights=weights)
    size, in_chans, root = image_size or loaded.image_size, loaded.model.in_chans, settings.get("data_root")
    train_set, test_set = load_dataset(data, root=root, image_size=size, in_chans=in_chans, seed=seed)
    if loaded.classes is not None and list(train_set.classes) != list(loaded.classes):
        raise ValueError(
            f"{loaded.label} was trained on other classes than {os.fspath(data)} has ({loaded.classes[:10]} against "
            f"{train_set.classes[:10]}); probe a checkpoint on the data set it was trained on"
        )
    probes, shape, target = {}, (in_chans, size, size), target_features
    for label, network in (("trained", loaded.model), ("random", loaded.untrained(seed))):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)  # the same initial probes on both networks: only the trunk differs
            probes[label] = Probes(network, train_set.num_classes, shape, layers=layers, target_features=target)
    recipe = {**PROBE_RECIPE, **(recipe_overrides or {}), "epochs": epochs}
    if "lr" not in (recipe_overrides or {}):  # the linear scaling rule, as the engine applies it to recipes
        recipe["lr"] = PROBE_RECIPE["lr"] * recipe["batch_size"] / PROBE_RECIPE["batch_size"]
    names = probes["trained"].layer_names
    # model_args name what the runs probe rather than a network to build (it is passed in): the engine refuses to
    # resume a run whose settings changed, so an interrupted experiment resumes only on the same layers and source.
    probed = {"source": loaded.label, "layers": ",".join(names), "target": target_features}
    base = TrainConfig(**settings, recipe_overrides=recipe, model_args=probed, image_size=size, seed=seed)
    base = dataclasses.replace(base, model=f"{loaded.arch}-probes", data=os.fspath(data))  # labels of the runs
    trainers = {}
    for label, network in probes.items():
        run = folder.run_dir(label)
        config = dataclasses.replace(base, out=os.fspath(run), resume=(run / "last.pt").is_file())
        trainers[label] = Trainer(config, task=ProbeTask(names), model=network, datasets=(train_set, test_set))
    runs = {}
    for label, trainer in trainers.items():
        runs[label] = trainer.run()
        if runs[label].stopped_early:
            raise RuntimeError(f"the {label} run stopped early; run the same command (--out {folder.path}) to resume")
    last = {label: result.history[-1] for label, result in runs.items()}
    accuracy = {n: [last[k][f"test_top1_{n}"] for k in ("trained", "random")] for n in names}
    rows = [LayerResult(n, *probes["trained"].pooling(n), *accuracy[n]) for n in names]
    report = _write_report(folder, loaded, rows, trainers["trained"], data=os.fspath(data), target=target_features)
    return ProbeResult(folder.path, report, rows, runs)


def _findings(rows: list[LayerResult], name: str, chance: float) -> list[str]:
    """What the table shows, computed from it: where each network peaks, whether depth helps, trained against random."""
    names, trained, random = [r.layer for r in rows], [r.trained for r in rows], [r.random for r in rows]
    top, top_random = trained.index(max(trained)), random.index(max(random))
    after = ", the deepest layer probed" if top == len(rows) - 1 else f"; it falls to {trained[-1]:.2f}% at {names[-1]}"
    rises = "rises" if all(b >= a for a, b in zip(trained, trained[1:])) else "does not rise"
    behind = [r.layer for r in rows if r.trained <= r.random]
    gap = max(rows, key=lambda r: r.trained - r.random)
    return [
        f"Trained {name}: accuracy peaks at {names[top]} ({trained[top]:.2f}%){after}.",
        f"Random {name}: accuracy peaks at {names[top_random]} ({random[top_random]:.2f}%, layer {top_random + 1} of "
        f"{len(rows)}), against {chance:.2f}% for always answering the most frequent class.",
        "Zhang et al.'s trained AlexNet gains accuracy at every depth (19.3% at conv1 to 50.5% at conv5) while the "
        f"random one peaks early (17.1% at conv2); here the trained network's accuracy {rises} at every depth.",
        f"The trained network beats the random one at {len(rows) - len(behind)} of {len(rows)} depths"
        + (f" (not at {', '.join(behind)})" if behind else "")
        + f"; the gap is largest at {gap.layer}: {gap.trained - gap.random:+.2f} points.",
    ]


def _chart(rows: list[LayerResult], title: str, chance: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    depth = list(range(1, len(rows) + 1))
    fig, ax = plt.subplots(figsize=(max(5.5, 0.9 * len(rows) + 2), 4))
    ax.plot(depth, [r.trained for r in rows], "o-", label="trained")
    ax.plot(depth, [r.random for r in rows], "s--", label="random initialisation")
    ax.axhline(chance, color="grey", linewidth=0.8, linestyle=":", label=f"most frequent class ({chance:.1f}%)")
    ax.set_xticks(depth, [r.layer for r in rows], rotation=30 if len(rows) > 6 else 0)
    ax.set(xlabel="probed layer (input to output)", ylabel="test accuracy of the linear probe (%)", title=title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110, format="png")  # the report writer hands a temporary name without .png
    plt.close(fig)


def _write_report(folder: Any, loaded: Source, rows: list[LayerResult], trainer: Any, *, data: str, target: int):
    from convzoo.experiments import Evidence, Table

    sets, recipe, epochs, seed = trainer.data, trainer.recipe, trainer.epochs, trainer.config.seed
    chance = 100.0 * max(torch.bincount(sets.test_set.labels).tolist()) / len(sets.test_set)
    table = Table(["layer", "features", "trained accuracy (%)", "random accuracy (%)"])
    for r in rows:
        table.add(r.layer, r.features, r.trained, r.random)
    evidence = Evidence(
        experiment=f"Linear probes of every stage of {loaded.arch} ({loaded.label}) and of the same network randomly "
        "initialised, Zhang et al. 2017's protocol: frozen trunk, each layer average-pooled to the square grid "
        f"nearest {target:,} values (no larger than its map), a batch norm without affine parameters, one linear "
        "classifier per layer, all trained together on one pass of the trunk",
        data=f"{data}: {len(sets.train_set):,} training and {len(sets.test_set):,} test images, "
        f"{sets.num_classes} classes, {'x'.join(map(str, sets.train_set.image_size))}",
        runs=f"2 (trained and random {loaded.arch}), {epochs} epoch{'s' * (epochs != 1)} of probe training each",
        seeds=[seed],
        settings={"optimizer": recipe.optimizer, "lr": recipe.lr, "batch": recipe.batch_size}
        | {"schedule": recipe.schedule, "weight decay": recipe.weight_decay, "step format": trainer.step_format.label},
        device=str(trainer.device),
    )
    pooling = "; ".join(f"{r.layer} {'x'.join(map(str, r.shape))} to {r.grid}x{r.grid} ({r.features:,})" for r in rows)
    notes = [
        "Accuracy: top-1 on the test set after the last epoch (the runs' best.pt, picked on the test set, is unused). "
        f"Pooling (C x H x W to grid): {pooling}. The random network: {loaded.arch} from create_model with seed "
        f"{seed} (the family's initialisation); both networks' probes start from the same weights."
    ]
    return folder.write(
        title=f"Linear probing of {loaded.arch} on {data}: accuracy by depth",
        evidence=evidence,
        table=table,
        findings=_findings(rows, loaded.arch, chance),
        chart=lambda path: _chart(rows, f"Linear probes of {loaded.arch} on {data}", chance, path),
        notes=notes,
    )
