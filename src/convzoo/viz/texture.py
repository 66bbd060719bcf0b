"""Texture or shape? The cue-conflict test of Geirhos et al., "ImageNet-trained CNNs are biased towards texture;
increasing shape bias improves accuracy and robustness" (ICLR 2019).

A cue-conflict stimulus shows the shape of one class with the texture of another. Counting, over such stimuli, the
network's decisions for the shape's class and for the texture's class gives its shape bias: shape decisions /
(shape + texture decisions); decisions for neither class do not count, and stimuli whose two cues name the same
class are dropped. On Geirhos's stimuli ImageNet-trained networks decide mostly by texture (ResNet-50 near 0.2), people
almost always by shape.

Two sources of stimuli:

- ``"shapes"``: silhouettes of the procedural shapes data set (`convzoo.data.make_shapes`) filled with the texture of
  another class. Each of the six shape classes owns one texture (`CLASS_TEXTURES`), so any network trained on the
  shapes classes can be measured. `make_cue_shapes` also draws the training sets that set the bias on purpose: the
  label given by the texture alone, by the silhouette alone, or by both agreeing.
- A folder of Geirhos's stimuli (``airplane1-bicycle2.png``: shape airplane, texture bicycle), for networks with
  ImageNet's 1000 classes, scored over the 16 categories of `convzoo.viz.imagenet16`.

    result = measure_shape_bias("runs/shapes/best.pt", "shapes")
    result = measure_shape_bias("resnet50", "~/cue-conflict", weights="resnet50.tv_imagenet1k_v1")
    paths = write_shape_bias_report(result, "texture-bias/")
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from convzoo.data.arrays import ArrayDataset, derive_seed, intra_op_threads
from convzoo.data.shapes import COLORS, SHAPES, make_shapes
from convzoo.viz._load import Network, load_network

__all__ = [
    "CLASS_TEXTURES",
    "CUES",
    "CUE_TEXTURES",
    "ShapeBias",
    "ShapeBiasReport",
    "make_cue_shapes",
    "measure_shape_bias",
    "plot_shape_bias",
    "shape_bias",
    "shape_bias_table",
    "write_shape_bias_report",
]

# The texture each shape class owns: SHAPES[i] is filled with CUE_TEXTURES[i] when the two cues agree.
CUE_TEXTURES = ("plain", "stripes", "dots", "checkerboard", "noise", "grid")
CLASS_TEXTURES = dict(zip(SHAPES, CUE_TEXTURES, strict=True))
CUES = ("both", "shape", "texture", "conflict")
_PERIOD = (0.12, 0.18)  # texture period as a fraction of the image side, as in the shapes data set
_DEFAULT_STIMULI = 1200  # 200 per shape class and 40 per (shape, texture) pair: a bias to about +-0.03


def _pattern(
    kind: str, x: torch.Tensor, y: torch.Tensor, p: dict[str, torch.Tensor], g: torch.Generator
) -> torch.Tensor:
    """Weight (B, H, W) of the main colour against its lighter tint at image coordinates (x, y)."""
    period = p["period"]
    b, h, w = period.shape[0], y.shape[-2], x.shape[-1]
    u, v = x / period + p["phase_x"], y / period + p["phase_y"]
    if kind == "plain":
        return torch.ones((b, h, w))
    if kind == "stripes":
        along = (x * torch.cos(p["angle"]) + y * torch.sin(p["angle"])) / period + p["phase_x"]
        return (along.remainder(1.0) < 0.5).float().expand(b, h, w)
    if kind == "dots":
        du, dv = u.remainder(1.0) - 0.5, v.remainder(1.0) - 0.5
        return (du.square() + dv.square() > 0.32**2).float()  # tinted dots on the main colour
    if kind == "checkerboard":
        return ((torch.floor(u) + torch.floor(v)).remainder(2) < 1).float()
    if kind == "noise":
        return torch.rand((b, h, w), generator=g)
    if kind == "grid":
        # Thin tinted lines on the main colour: unlike the checkerboard's halves, three quarters stay main.
        return ((u.remainder(1.0) >= 0.2) & (v.remainder(1.0) >= 0.2)).float()
    raise KeyError(kind)


def _fill(images: torch.Tensor, masks: torch.Tensor, texture: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """``images`` with each masked silhouette repainted in texture ``texture[i]`` (index into `CUE_TEXTURES`), in a
    random colour and its tint; the background stays as it was."""
    n, _, h, w = images.shape
    s = float(w)
    palette = torch.tensor(list(COLORS.values()))
    main = palette[torch.randint(len(COLORS), (n,), generator=g)] * (0.75 + 0.25 * torch.rand(n, generator=g))[:, None]
    tint = 0.45 * main + 0.55
    params = {
        "period": s * (_PERIOD[0] + (_PERIOD[1] - _PERIOD[0]) * torch.rand(n, generator=g)),
        "angle": math.pi * torch.rand(n, generator=g),
        "phase_x": torch.rand(n, generator=g),
        "phase_y": torch.rand(n, generator=g),
    }
    x = (torch.arange(w, dtype=torch.float32) + 0.5).view(1, 1, w)
    y = (torch.arange(h, dtype=torch.float32) + 0.5).view(1, h, 1)
    out = images.clone()
    chunk = max(1, (1 << 18) // (h * w))
    for start in range(0, n, chunk):
        sl = slice(start, min(n, start + chunk))
        weight = torch.empty((sl.stop - sl.start, h, w))
        for i, kind in enumerate(CUE_TEXTURES):
            sel = (texture[sl] == i).nonzero().flatten()
            if sel.numel():
                q = {key: value[sl][sel].view(-1, 1, 1) for key, value in params.items()}
                weight[sel] = _pattern(kind, x, y, q, g)
        a, b = tint[sl].view(-1, 3, 1, 1), main[sl].view(-1, 3, 1, 1)
        fill = torch.addcmul(a, weight.unsqueeze(1), b - a).mul_(255).add_(0.5).clamp_(0, 255).to(torch.uint8)
        out[sl] = torch.where(masks[sl].unsqueeze(1), fill, images[sl])
    return out


def make_cue_shapes(
    n: int, *, cue: str = "conflict", image_size: int = 32, seed: int = 0, split: str = "train"
) -> ArrayDataset:
    """Shapes whose silhouette and texture each name a class, agreeing, independent or in conflict.

    The silhouettes, positions, scales and backgrounds are those of `convzoo.data.make_shapes`; each silhouette is
    then filled with one of the class textures `CUE_TEXTURES` (``SHAPES[i]`` owns ``CUE_TEXTURES[i]``) in a random
    colour.

    Args:
        n: Number of images.
        cue: What the label follows:

            - ``"both"``: every shape wears its own class's texture, so either cue gives the label (as in natural
              images, where a cat has a cat's fur);
            - ``"shape"``: the silhouette; the texture is drawn independently, so it carries nothing;
            - ``"texture"``: the texture's class; the silhouette is drawn independently;
            - ``"conflict"``: cue-conflict stimuli: the silhouette of class A filled with the texture of a class
              B != A (pairs balanced), labelled A.
        image_size: Side of the square images (at least 12).
        seed: Seed; the same arguments always give the same images.
        split: Name of the random stream (``"train"``, ``"test"``, ...).

    Returns:
        An `ArrayDataset` named ``"cue-shapes-<cue>"`` with the classes `SHAPES`; its extras hold ``shape`` and
        ``texture`` (class indices of the two cues) and ``masks`` (N, H, W).

    Raises:
        ValueError: An unknown cue, a negative ``n`` or too small an image size.
    """
    if cue not in CUES:
        raise ValueError(f"unknown cue {cue!r}; expected one of {CUES}")
    base = make_shapes(n, image_size=image_size, seed=seed, split=split)
    g = torch.Generator().manual_seed(derive_seed("cue-shapes", seed, split, cue))
    k = len(SHAPES)
    shape, masks = base.labels, base.extras["masks"]
    if cue == "both":
        texture = shape.clone()
    elif cue == "conflict":
        texture = (shape + 1 + torch.randperm(n, generator=g) % (k - 1)) % k
    else:
        texture = torch.randperm(n, generator=g) % k  # make_shapes draws its own order: the two are independent
    with intra_op_threads(1):  # many small ops, as in make_shapes
        images = _fill(base.images, masks, texture, g)
    return ArrayDataset(
        images=images,
        labels=texture if cue == "texture" else shape,
        classes=list(SHAPES),
        name=f"cue-shapes-{cue}",
        extras={"shape": shape, "texture": texture, "masks": masks},
    )


@dataclass
class ShapeBias:
    """A network's decisions on cue-conflict stimuli, counted per category of the stimulus's shape.

    Attributes:
        categories: Category names.
        shape: Per shape category: decisions for the shape's category.
        texture: Per shape category: decisions for the texture's category.
        other: Per shape category: decisions for neither.
        dropped: Stimuli left out because their shape and texture name the same category.
        model: What was measured.
        stimuli: Where the stimuli came from.
    """

    categories: list[str]
    shape: list[int]
    texture: list[int]
    other: list[int]
    dropped: int = 0
    model: str = ""
    stimuli: str = ""

    @property
    def overall(self) -> float:
        """Shape decisions / (shape + texture decisions) over all stimuli; NaN when there were none of either."""
        return _ratio(sum(self.shape), sum(self.texture))

    @property
    def per_category(self) -> list[float]:
        """The shape bias of the stimuli of each shape category (NaN where neither cue was chosen)."""
        return [_ratio(s, t) for s, t in zip(self.shape, self.texture, strict=True)]

    @property
    def count(self) -> int:
        """Stimuli scored (the dropped ones not counted)."""
        return sum(self.shape) + sum(self.texture) + sum(self.other)


def _ratio(shape: int, texture: int) -> float:
    return shape / (shape + texture) if shape + texture else math.nan


def shape_bias(
    decisions: Sequence[int] | torch.Tensor,
    shapes: Sequence[int] | torch.Tensor,
    textures: Sequence[int] | torch.Tensor,
    categories: Sequence[str],
    *,
    model: str = "",
    stimuli: str = "",
) -> ShapeBias:
    """Count decisions for the shape's category, the texture's, or neither; stimuli with one category for both are
    dropped.

    Args:
        decisions: The category each stimulus was classified as (indices into ``categories``).
        shapes: Each stimulus's shape category.
        textures: Each stimulus's texture category.
        categories: Category names.
        model: What was measured, for the report.
        stimuli: Where the stimuli came from, for the report.

    Raises:
        ValueError: Sequences of different lengths, or an index outside the categories.
    """
    d, s, t = (torch.as_tensor(v, dtype=torch.int64).reshape(-1) for v in (decisions, shapes, textures))
    if not d.numel() == s.numel() == t.numel():
        raise ValueError(f"{d.numel()} decisions, {s.numel()} shapes and {t.numel()} textures; they must match")
    k = len(categories)
    for name, v in (("decision", d), ("shape", s), ("texture", t)):
        if v.numel() and (v.min() < 0 or v.max() >= k):
            raise ValueError(f"a {name} index outside the {k} categories")
    keep = s != t
    d, s, t = d[keep], s[keep], t[keep]
    on_shape, on_texture = d == s, d == t
    return ShapeBias(
        categories=list(categories),
        shape=torch.bincount(s[on_shape], minlength=k).tolist(),
        texture=torch.bincount(s[on_texture], minlength=k).tolist(),
        other=torch.bincount(s[~(on_shape | on_texture)], minlength=k).tolist(),
        dropped=int((~keep).sum()),
        model=model,
        stimuli=stimuli,
    )


@torch.no_grad()
def _decide(network: Network, batches: Any, *, imagenet16: bool) -> torch.Tensor:
    """The argmax decision on each batch of uint8 images (a list of (1, C, H, W) or one (N, C, H, W) per item);
    over the 16 categories of the ImageNet outputs when ``imagenet16``."""
    from convzoo.viz.imagenet16 import category_probabilities

    decisions = []
    for batch in batches:
        parts = batch if isinstance(batch, list) else [batch]
        x = torch.cat([network.normalize(p) for p in parts])  # stimuli of different sizes meet at the input size
        logits = network.model(x).float().cpu()
        scores = category_probabilities(logits.softmax(1)) if imagenet16 else logits
        decisions.append(scores.argmax(1))
    return torch.cat(decisions) if decisions else torch.empty(0, dtype=torch.int64)


def _shapes_stimuli(network: Network, count: int, seed: int, batch_size: int) -> ShapeBias:
    """Score ``network``, trained on (some of) the shapes classes, on generated cue-conflict stimuli."""
    unknown = [c for c in network.classes if c not in SHAPES]
    if unknown or len(set(network.classes)) < 2:
        raise ValueError(
            f"the generated shapes stimuli measure networks trained on the shapes classes {list(SHAPES)} (or two "
            f"or more of them); {network.label} has classes {_shorten(network.classes)}"
        )
    k = len(network.classes)
    # Pairs of two of the network's classes are a fraction k(k-1) / K(K-1) of all pairs: draw enough for `count`.
    drawn = math.ceil(count * len(SHAPES) * (len(SHAPES) - 1) / (k * (k - 1)))
    data = make_cue_shapes(drawn, cue="conflict", image_size=max(12, network.image_size), seed=seed, split="conflict")
    index = torch.full((len(SHAPES),), -1, dtype=torch.int64)
    index[[SHAPES.index(c) for c in network.classes]] = torch.arange(k)
    shapes, textures = index[data.extras["shape"]], index[data.extras["texture"]]
    keep = ((shapes >= 0) & (textures >= 0)).nonzero().flatten()[:count]
    images = data.images[keep]
    decisions = _decide(network, images.split(batch_size), imagenet16=False)
    described = f"{len(keep)} generated cue-conflict shapes ({data.image_size[-1]}x{data.image_size[-1]}, seed {seed})"
    return shape_bias(decisions, shapes[keep], textures[keep], network.classes, model=network.label, stimuli=described)


def _check_imagenet(network: Network) -> None:
    """Raise unless ``network`` classifies into ImageNet's 1000 classes (by count, and by name where it has names)."""
    from convzoo.pretrained import list_weights

    if len(network.classes) != 1000:
        raise ValueError(
            f"cue-conflict stimuli of the 16 ImageNet categories need a network with ImageNet's 1000 classes; "
            f"{network.label} has {len(network.classes)} ({_shorten(network.classes)})"
        )
    named = not all(c.isdigit() for c in network.classes)
    known = [list(w.classes) for w in list_weights() if len(w.classes) == 1000]
    if named and known and network.classes not in known:
        raise ValueError(
            f"{network.label} has 1000 classes, but not ImageNet's ({_shorten(network.classes)}); the 16-category "
            "mapping reads ImageNet's class indices"
        )


def _folder_stimuli(network: Network, folder: str | os.PathLike[str], batch_size: int) -> ShapeBias:
    """Score an ImageNet network on a folder of Geirhos's cue-conflict stimuli over the 16 categories."""
    from convzoo.viz._load import read_image
    from convzoo.viz.imagenet16 import CATEGORIES, find_stimuli

    stimuli = find_stimuli(folder)
    _check_imagenet(network)
    paths = [p for p, _, _ in stimuli]
    batches = ([read_image(p) for p in paths[i : i + batch_size]] for i in range(0, len(paths), batch_size))
    decisions = _decide(network, batches, imagenet16=True)
    shapes = [CATEGORIES.index(s) for _, s, _ in stimuli]
    textures = [CATEGORIES.index(t) for _, _, t in stimuli]
    described = f"{len(stimuli)} stimuli in {Path(folder).expanduser()}"
    return shape_bias(decisions, shapes, textures, CATEGORIES, model=network.label, stimuli=described)


def _shorten(names: Sequence[str], limit: int = 8) -> str:
    return ", ".join(names[:limit]) + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def measure_shape_bias(
    target: str | os.PathLike[str] | Network,
    stimuli: str | os.PathLike[str] = "shapes",
    *,
    weights: str | os.PathLike[str] | None = None,
    count: int = _DEFAULT_STIMULI,
    seed: int = 0,
    batch_size: int = 100,
) -> ShapeBias:
    """The shape bias of a network on cue-conflict stimuli.

    Args:
        target: A training checkpoint, a registered model name (with ``weights``), or a loaded `Network`.
        stimuli: ``"shapes"``: ``count`` generated stimuli, for a network trained on the shapes classes (all six
            or some); else a folder of Geirhos's stimuli, for a network with ImageNet's 1000 classes (write
            ``"./shapes"`` for a folder of that name).
        weights: For a model name: registered weights or a file (see `load_network`).
        count: Number of generated stimuli.
        seed: Seed of the generated stimuli.
        batch_size: Images per forward pass.

    Raises:
        ValueError: A network whose classes do not fit the stimuli; a folder whose file names carry no labels.
        FileNotFoundError: No such folder or checkpoint.
    """
    if count < 1 or batch_size < 1:
        raise ValueError(f"count and batch_size must be positive; got {count} and {batch_size}")
    network = target if isinstance(target, Network) else load_network(target, weights=weights)
    if os.fspath(stimuli) == "shapes":
        return _shapes_stimuli(network, count, seed, batch_size)
    return _folder_stimuli(network, stimuli, batch_size)


def shape_bias_table(result: ShapeBias) -> Any:
    """An `convzoo.experiments.Table` with one row per category and one for all: the counts and the shape bias."""
    from convzoo.experiments.report import Table

    table = Table(["category", "shape decisions", "texture decisions", "other decisions", "shape bias"], digits=3)
    rows = zip(result.categories, result.shape, result.texture, result.other, result.per_category, strict=True)
    for name, s, t, o, bias in rows:
        table.add(name, s, t, o, None if math.isnan(bias) else bias)
    overall = result.overall
    table.add(
        "all", sum(result.shape), sum(result.texture), sum(result.other), None if math.isnan(overall) else overall
    )
    return table


def plot_shape_bias(result: ShapeBias) -> Any:
    """Geirhos et al.'s Figure 4 for one network: per category, the fraction of shape decisions (bottom axis) and
    of texture decisions (top axis), with the overall shape bias as a vertical line. A matplotlib figure (close it
    with ``matplotlib.pyplot.close``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 0.8 + 0.32 * len(result.categories)))
    rows = list(range(len(result.categories)))
    values = result.per_category
    shown = [(v, r) for v, r in zip(values, rows, strict=True) if not math.isnan(v)]
    ax.scatter([v for v, _ in shown], [r for _, r in shown], marker="D", color="tab:blue", zorder=3, clip_on=False)
    for r in rows:
        if math.isnan(values[r]):
            ax.text(0.5, r, "no shape or texture decision", ha="center", va="center", fontsize=8, color="grey")
    if not math.isnan(result.overall):
        ax.axvline(result.overall, color="tab:blue", linestyle="--", label=f"shape bias {result.overall:.2f}")
        ax.legend(loc="lower right", fontsize=8)
    ax.set_yticks(rows, result.categories)
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.set_xlim(0, 1)
    ax.set_xlabel("fraction of 'shape' decisions")
    top = ax.secondary_xaxis("top", functions=(lambda x: 1 - x, lambda x: 1 - x))
    top.set_xlabel("fraction of 'texture' decisions")
    ax.grid(axis="x", alpha=0.3)
    ax.set_title(result.model, fontsize=9)
    fig.tight_layout()
    return fig


@dataclass
class ShapeBiasReport:
    """Where `write_shape_bias_report` wrote: the chart and the table in Markdown and CSV."""

    chart: Path
    markdown: Path
    csv: Path


def write_shape_bias_report(result: ShapeBias, out: str | os.PathLike[str]) -> ShapeBiasReport:
    """Write ``shape_bias.png``, ``shape_bias.md`` and ``shape_bias.csv`` into the folder ``out`` (made if need be)."""
    import matplotlib.pyplot as plt

    from convzoo._files import write_atomically

    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    paths = ShapeBiasReport(folder / "shape_bias.png", folder / "shape_bias.md", folder / "shape_bias.csv")
    table = shape_bias_table(result)
    overall = "undefined (no shape or texture decision)" if math.isnan(result.overall) else f"{result.overall:.3f}"
    markdown = "\n".join(
        [
            "# Shape bias",
            "",
            f"- model: {result.model}",
            f"- stimuli: {result.stimuli}; {result.count} scored, {result.dropped} dropped (same shape and texture)",
            f"- shape bias: {overall} (shape decisions / (shape + texture decisions); Geirhos et al. 2019)",
            "",
            table.markdown(),
            "",
        ]
    )
    paths.markdown.write_text(markdown)
    paths.csv.write_text(table.csv())
    fig = plot_shape_bias(result)
    try:
        write_atomically(paths.chart, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    finally:
        plt.close(fig)
    return paths
