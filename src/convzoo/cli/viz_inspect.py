"""The viz actions that look at what a network computes: filters, feature maps, top images, embeddings."""

from __future__ import annotations

import argparse
from pathlib import Path

from convzoo.cli._args import add_command, positive_int

_TARGET_HELP = "training checkpoint (best.pt, last.pt), or registered model name"
_WEIGHTS_HELP = "for a model name: registered weights, or a file (default: its registered weights, else random)"


def _channel_list(text: str) -> list[int]:
    """Channels as indices and ranges: ``0-7``, ``3,5,9``, ``0-3,10``."""
    channels: list[int] = []
    try:
        for part in filter(None, (p.strip() for p in text.split(","))):
            low, _, high = part.partition("-")
            channels += list(range(int(low), int(high) + 1)) if high else [int(low)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be channel indices or ranges such as 0-7,12; got {text!r}") from None
    if not channels or min(channels) < 0:
        raise argparse.ArgumentTypeError(f"must be channel indices (0 or more) or ranges such as 0-7,12; got {text!r}")
    return list(dict.fromkeys(channels))


def _network(args: argparse.Namespace):  # noqa: ANN202 - a convzoo.viz._load.Network
    import torch

    from convzoo.viz._load import load_network

    net = load_network(args.target, weights=args.weights)
    device = getattr(args, "device", "cpu")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    net.model.to(device)
    return net


def _dataset(args: argparse.Namespace, net):  # noqa: ANN001, ANN202 - a Network; returns (images, labels, classes)
    """The images of --data (its --split) at the network's input size and channels, at most --limit of them."""
    import torch

    from convzoo.data import load_dataset

    train, test = load_dataset(args.data, root=args.data_root, image_size=net.image_size, in_chans=net.in_chans)
    data = test if args.split == "test" else train
    images, labels = data.images, data.labels
    if args.limit < len(images):
        # A seeded sample, not the first images: some sets are stored sorted by class.
        chosen = torch.randperm(len(images), generator=torch.Generator().manual_seed(args.seed))[: args.limit].sort()
        images, labels = images[chosen.values], labels[chosen.values]
    return images, labels, data.classes


def _file(args: argparse.Namespace, net, what: str) -> Path:  # noqa: ANN001 - a Network
    return Path(args.out) / f"{net.arch}-{what}.png"


def _cmd_filters(args: argparse.Namespace) -> int:
    from convzoo.viz.filters import conv_layer_names, plot_filters

    net = _network(args)
    layer = args.layer or conv_layer_names(net.model)[0]
    path = plot_filters(net.model, _file(args, net, f"filters-{layer}"), layer, title=net.label)
    print(f"filters of {layer}: {path}")
    return 0


def _cmd_maps(args: argparse.Namespace) -> int:
    from convzoo.viz._load import read_image
    from convzoo.viz.maps import find_layer, plot_feature_maps

    image = read_image(args.image)  # before loading the network: a bad file fails fast
    net = _network(args)
    x = net.normalize(image)
    layers = args.layer or [f.module for f in net.model.feature_info]
    for layer in layers:  # all checked before the first file is written
        find_layer(net.model, layer)
    for layer in layers:
        path = plot_feature_maps(
            net.model, x, layer, _file(args, net, f"maps-{layer}"), max_channels=args.max_channels, title=net.label
        )
        print(f"feature maps of {layer}: {path}")
    return 0


def _cmd_top(args: argparse.Namespace) -> int:
    from collections import Counter

    from convzoo.viz.maps import plot_top_activations, top_activations

    net = _network(args)
    images, labels, classes = _dataset(args, net)
    layer = args.layer or net.model.feature_info[-1].module
    tops = top_activations(
        net.model, images, layer, args.channels, k=args.k, normalize=net.normalize, batch_size=args.batch_size
    )
    for top in tops:
        counts = Counter(classes[int(labels[i])] for i in top.indices)
        shown = ", ".join(f"{name} {n}" for name, n in counts.most_common())
        print(
            f"channel {top.channel}: top activation {top.values[0]:.3g}; classes of the top {len(top.indices)}: {shown}"
        )
    path = plot_top_activations(tops, _file(args, net, f"top-{layer}"), title=net.label)
    print(f"receptive field of {layer}: {tops[0].field}; images: {len(images)} of {args.data} ({args.split})")
    print(f"top images: {path}")
    return 0


def _cmd_embed(args: argparse.Namespace) -> int:
    from convzoo.viz._load import read_image
    from convzoo.viz.embed import (
        PROJECTIONS,
        nearest_neighbour_accuracy,
        nearest_neighbours,
        penultimate_features,
        plot_embedding,
        plot_neighbours,
        project,
    )

    query_file = None if args.query is None or args.query.isdigit() else read_image(args.query)
    net = _network(args)
    images, labels, classes = _dataset(args, net)
    features = penultimate_features(net.model, images, normalize=net.normalize, batch_size=args.batch_size)
    accuracy = nearest_neighbour_accuracy(features, labels, metric=args.metric)
    pixels = nearest_neighbour_accuracy(images.flatten(1).float().numpy(), labels, metric=args.metric)
    print(
        f"leave-one-out 1-NN accuracy ({args.metric}) on {len(images)} images of {args.data} ({args.split}): "
        f"features {100 * accuracy:.1f}%, pixels {100 * pixels:.1f}% (chance about {100 / len(classes):.1f}%)"
    )
    about = f"{net.label}, {len(images)} images of {args.data}"
    for method in PROJECTIONS if args.method == "all" else (args.method,):
        points = project(features, method, seed=args.seed)
        title = f"{about}: penultimate features ({features.shape[1]}-D), {'PCA' if method == 'pca' else 't-SNE'}"
        path = plot_embedding(points, labels, classes, _file(args, net, f"embed-{method}"), title=title)
        print(f"{method}: {path}")
    if query_file is not None:
        query, exclude, query_caption = query_file, None, f"query: {Path(args.query).name}"
        query_features = penultimate_features(net.model, query, normalize=net.normalize)[0]
    else:
        exclude = int(args.query or 0)
        if exclude >= len(images):
            raise ValueError(f"--query {exclude}: there are {len(images)} images (0..{len(images) - 1})")
        query, query_features = images[exclude : exclude + 1], features[exclude]
        query_caption = f"query: {classes[int(labels[exclude])]}"
    indices, distances = nearest_neighbours(
        features, query_features, k=args.neighbours, metric=args.metric, exclude=exclude
    )
    shown = net.denormalize(net.normalize(query)).cpu()  # the query as the network saw it: resized, converted
    captions = [classes[int(labels[i])] for i in indices]
    path = plot_neighbours(
        shown,
        images,
        indices,
        distances,
        _file(args, net, "neighbours"),
        captions=captions,
        query_caption=query_caption,
        metric=args.metric,
        title=net.label,
    )
    print(f"nearest neighbours ({', '.join(captions)}): {path}")
    return 0


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", help=_WEIGHTS_HELP)
    p.add_argument("--out", default="viz", help="folder for the PNG files (default: viz)")


def _data_flags(p: argparse.ArgumentParser, limit: int) -> None:
    p.add_argument("--data", required=True, help="data set: a name (digits, shapes, cifar10, ...) or a path")
    p.add_argument("--data-root", help="folder holding the named data set (default: $CONVZOO_DATA)")
    p.add_argument("--split", choices=["test", "train"], default="test", help="(default: test)")
    p.add_argument(
        "--limit", type=positive_int, default=limit, help=f"use a seeded sample of this many images (default: {limit})"
    )
    p.add_argument("--batch-size", type=positive_int, default=128, help="images per forward pass (default: 128)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sample and of t-SNE (default: 0)")
    p.add_argument("--device", default="auto", help="auto (default), cpu or cuda")


def add_actions(actions: argparse._SubParsersAction) -> None:
    """Add this module's actions to the viz subcommand."""
    p = add_command(
        actions,
        "filters",
        "a convolution's kernels as an image grid",
        "The kernels of a convolution, one tile each, each stretched to its own range (as in the AlexNet paper's\n"
        "figure). The first layer's kernels see the RGB image and are drawn in colour; a deeper layer's kernels\n"
        "mix many feature maps and are drawn as their mean over input channels, in grey.",
        """
        convzoo viz filters resnet20
        convzoo viz filters resnet20 --layer layer2.0.conv1
        convzoo viz filters runs/shapes/best.pt --out figures
        """,
    )
    p.add_argument("target", help=_TARGET_HELP)
    p.add_argument("--layer", help="qualified name of a Conv2d (default: the first)")
    _common(p)
    p.set_defaults(func=_cmd_filters)

    p = add_command(
        actions,
        "maps",
        "a layer's feature maps for one image",
        "The activations of a layer for one image, one tile per channel, each stretched to its own range\n"
        "(dark: low, yellow: high). By default one PNG per tap point of the network (its stages).",
        """
        convzoo viz maps resnet20 cat.png
        convzoo viz maps resnet20 cat.png --layer layer1.0.conv1 --layer layer3
        """,
    )
    p.add_argument("target", help=_TARGET_HELP)
    p.add_argument("image", help="image file (resized and converted to the network's input)")
    p.add_argument("--layer", action="append", help="qualified module name; repeatable (default: every tap point)")
    p.add_argument("--max-channels", type=positive_int, default=64, help="show the first this many (default: 64)")
    _common(p)
    p.set_defaults(func=_cmd_maps)

    p = add_command(
        actions,
        "top",
        "the images that excite a layer's channels most, cut to the receptive field",
        "For each channel, the images of a data set on which it responds most (each image once, at the position of\n"
        "its maximum), cut to the theoretical receptive field of that unit, as Zeiler and Fergus (2014) show them:\n"
        "one row per channel, strongest first. Prints the classes of each channel's top images.",
        """
        convzoo viz top resnet20 --data shapes --layer layer2 --channels 0-7
        convzoo viz top runs/cifar/best.pt --data cifar10 --layer layer1.2.conv2 -k 12
        """,
    )
    p.add_argument("target", help=_TARGET_HELP)
    p.add_argument("--layer", help="qualified module name with feature maps (default: the last tap point)")
    p.add_argument("--channels", type=_channel_list, default=list(range(8)), help="indices and ranges (default: 0-7)")
    p.add_argument("-k", type=positive_int, default=9, help="images per channel (default: 9)")
    _data_flags(p, limit=2000)
    _common(p)
    p.set_defaults(func=_cmd_top)

    p = add_command(
        actions,
        "embed",
        "penultimate features in 2-D (PCA, t-SNE) and an image's nearest neighbours",
        "The features a network hands its classifier, for images of a data set: projected to two dimensions by\n"
        "PCA and t-SNE and coloured by class, and the leave-one-out 1-nearest-neighbour accuracy in that space\n"
        "(beside the same for raw pixels). Then the images nearest to a query: an image file, or the index of\n"
        "one of the images used (default: 0).",
        """
        convzoo viz embed resnet20 --data shapes
        convzoo viz embed resnet20 --data cifar10 --method tsne --query dog.png --metric euclidean
        """,
    )
    p.add_argument("target", help=_TARGET_HELP)
    p.add_argument("--method", choices=["pca", "tsne", "all"], default="all", help="projection (default: all)")
    p.add_argument(
        "--metric",
        choices=["cosine", "euclidean"],
        default="cosine",
        help="distance of the accuracy and the neighbours (default: cosine)",
    )
    p.add_argument("--query", help="image file, or index of one of the images used (default: 0)")
    p.add_argument("--neighbours", type=positive_int, default=8, help="how many neighbours to show (default: 8)")
    _data_flags(p, limit=1000)
    _common(p)
    p.set_defaults(func=_cmd_embed)
