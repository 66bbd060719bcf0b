"""Where a network puts images: its penultimate features (the input of the classifier), projected to two
dimensions, and the images it finds most alike.

A trained network maps images of a class close together in this space, and a linear classifier separates the
classes there; the pixels themselves, or a random network's features, are far less organised. The leave-one-out
nearest-neighbour accuracy puts one number on it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from convzoo.viz.grid import make_grid, pyplot, save_figure, to_display

__all__ = [
    "METRICS",
    "PROJECTIONS",
    "nearest_neighbour_accuracy",
    "nearest_neighbours",
    "penultimate_features",
    "plot_embedding",
    "plot_neighbours",
    "project",
]

METRICS = ("cosine", "euclidean")
PROJECTIONS = ("pca", "tsne")


def penultimate_features(
    model: nn.Module,
    images: torch.Tensor,
    *,
    normalize: Callable[[torch.Tensor], torch.Tensor] | None = None,
    batch_size: int = 128,
) -> np.ndarray:
    """The pre-logits features, ``forward_head(forward_features(x), pre_logits=True)``, of every image.

    Args:
        model: A convzoo classifier (in eval mode).
        images: (N, C, H, W): uint8 or float images, or inputs ready for the network.
        normalize: Turns a batch of ``images`` into the network's input (e.g. `convzoo.viz._load.Network.normalize`);
            default: uint8 scaled to [0, 1], float as given.
        batch_size: Images per forward pass.

    Returns:
        float32 (N, D), D being ``model.head_hidden_size``.
    """
    chunks = []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            batch = images[start : start + batch_size]
            if normalize is not None:
                x = normalize(batch)
            else:
                x = batch.float() / 255 if batch.dtype == torch.uint8 else batch
            features = model.forward_head(model.forward_features(x), pre_logits=True)
            chunks.append(features.flatten(1).float().cpu())
    return torch.cat(chunks).numpy()


def _check_metric(metric: str) -> None:
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")


def _distances(queries: torch.Tensor, keys: torch.Tensor, metric: str) -> torch.Tensor:
    """(Q, K) distances: Euclidean, or cosine distance (1 - cosine similarity)."""
    if metric == "cosine":
        return 1 - nn.functional.normalize(queries, dim=1) @ nn.functional.normalize(keys, dim=1).T
    return torch.cdist(queries, keys)


def nearest_neighbour_accuracy(
    features: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor, *, metric: str = "cosine"
) -> float:
    """Leave-one-out 1-nearest-neighbour accuracy: the share of points whose nearest other point has their label.

    Args:
        features: (N, D).
        labels: (N,) class indices.
        metric: ``cosine`` (the default: the angle between feature vectors, blind to their length, which a
            network's confidence inflates) or ``euclidean``.

    Returns:
        A fraction in [0, 1].
    """
    _check_metric(metric)
    x = torch.as_tensor(np.asarray(features), dtype=torch.float64)
    y = torch.as_tensor(np.asarray(labels)).reshape(-1)
    if x.dim() != 2 or len(x) != len(y) or len(x) < 2:
        raise ValueError(f"expected features (N, D) and N labels, N >= 2; got {tuple(x.shape)} and {tuple(y.shape)}")
    correct = 0
    for start in range(0, len(x), 1024):  # row blocks: N x N distances at once would not fit for large N
        d = _distances(x[start : start + 1024], x, metric)
        rows = torch.arange(len(d))
        d[rows, rows + start] = float("inf")  # leave the point itself out
        correct += int((y[d.argmin(dim=1)] == y[start : start + 1024]).sum())
    return correct / len(x)


def nearest_neighbours(
    features: np.ndarray | torch.Tensor,
    query: np.ndarray | torch.Tensor,
    *,
    k: int = 8,
    metric: str = "cosine",
    exclude: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` points of ``features`` (N, D) nearest to ``query`` (D,), nearest first.

    Args:
        features: (N, D).
        query: (D,).
        k: How many (fewer if there are fewer points).
        metric: ``cosine`` (1 - cosine similarity) or ``euclidean``.
        exclude: Index of a point to leave out (the query itself, when it is one of the points).

    Returns:
        Their indices and distances, each (k,).
    """
    _check_metric(metric)
    x = torch.as_tensor(np.asarray(features), dtype=torch.float64)
    q = torch.as_tensor(np.asarray(query), dtype=torch.float64).reshape(1, -1)
    d = _distances(q, x, metric)[0]
    if exclude is not None:
        d[exclude] = float("inf")
    count = min(k, len(x) - (exclude is not None))
    distances, indices = torch.topk(d, count, largest=False)
    return indices.numpy(), distances.numpy()


def project(features: np.ndarray, method: str = "pca", *, seed: int = 0) -> np.ndarray:
    """Features (N, D) in two dimensions: ``pca`` (the two directions of largest variance; distances along them
    are meaningful) or ``tsne`` (neighbourhoods kept, global distances and cluster sizes not).

    t-SNE runs on the first 50 principal components, as its authors recommend, with a perplexity of at most 30
    (less for few points).
    """
    from sklearn.decomposition import PCA

    if method not in PROJECTIONS:
        raise ValueError(f"unknown projection {method!r}; choose one of {', '.join(PROJECTIONS)}")
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or len(features) < 3:
        raise ValueError(f"expected features (N, D) with N >= 3; got shape {features.shape}")
    if method == "pca":
        return PCA(n_components=2, random_state=seed).fit_transform(features).astype(np.float32)
    from sklearn.manifold import TSNE

    if features.shape[1] > 50:
        features = PCA(n_components=min(50, len(features)), random_state=seed).fit_transform(features)
    perplexity = min(30.0, (len(features) - 1) / 3)
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed)
    return tsne.fit_transform(features).astype(np.float32)


def plot_embedding(
    points: np.ndarray,
    labels: np.ndarray | torch.Tensor,
    classes: Sequence[str],
    path: str | os.PathLike[str],
    *,
    title: str = "",
) -> Path:
    """Write a 2-D embedding as a scatter plot, one colour per class, and return its path."""
    plt = pyplot()
    labels = np.asarray(labels)
    cmap = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    for index, name in enumerate(classes):
        chosen = labels == index
        if chosen.any():
            ax.scatter(*points[chosen].T, s=9, alpha=0.8, color=cmap(index % cmap.N), label=name)
    ax.set_xticks([])
    ax.set_yticks([])
    if len(classes) <= 20:
        ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize="small", markerscale=2, frameon=False)
    ax.set_title(title)
    return save_figure(fig, path)


def plot_neighbours(
    query: torch.Tensor,
    images: torch.Tensor,
    indices: np.ndarray,
    distances: np.ndarray,
    path: str | os.PathLike[str],
    *,
    captions: Sequence[str] = (),
    query_caption: str = "query",
    metric: str = "cosine",
    title: str = "",
) -> Path:
    """Write a strip: the query image, then its nearest neighbours, each with its distance (and caption).

    Args:
        query: The query image (1, C, H, W), uint8 or float in [0, 1].
        images: The images the neighbours were found among (N, C, H, W), in the same form.
        indices: The neighbours' indices into ``images``, nearest first.
        distances: Their distances to the query.
        path: The PNG to write.
        captions: A line per neighbour (e.g. its class), under its distance.
        query_caption: The text under the query.
        metric: The metric the distances are in, for the title.
        title: Shown above the strip.
    """
    plt = pyplot()
    tiles = [to_display(query)[0]] + list(to_display(images[torch.as_tensor(indices, dtype=torch.long)]))
    fig, axes = plt.subplots(1, len(tiles), figsize=(1.3 * len(tiles), 1.9), squeeze=False)
    for i, (ax, tile) in enumerate(zip(axes[0], tiles)):
        ax.imshow(make_grid([tile], pad=0), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        if i == 0:
            ax.set_xlabel(query_caption, fontsize="small")
            for spine in ax.spines.values():
                spine.set_edgecolor("tab:red")
                spine.set_linewidth(2)
        else:
            text = f"{distances[i - 1]:.3f}" + (f"\n{captions[i - 1]}" if captions else "")
            ax.set_xlabel(text, fontsize="small")
    heading = f"nearest neighbours by {metric} distance of the penultimate features"
    fig.suptitle(f"{title}\n{heading}" if title else heading, fontsize="small")
    return save_figure(fig, path)
