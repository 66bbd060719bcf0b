"""The probe subcommand: linear probes on every stage of a frozen network, trained against a random one."""

from __future__ import annotations

import argparse

from convzoo.cli._args import add_command, positive_int


def _layers(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"expected comma-separated layer names, e.g. conv1,conv5; got {text!r}")
    return names


def _cmd_list_layers(args: argparse.Namespace) -> int:
    import convzoo
    from convzoo.transfer import Probes, load_source

    if args.source in convzoo.list_models() and args.weights is None:
        # The layers are the architecture's: no weights need loading (or downloading) to list them.
        name, model = args.source, convzoo.create_model(args.source, num_classes=0)
        size = args.image_size or convzoo.get_model_card(name).input_size[-1]
    else:
        loaded = load_source(args.source, weights=args.weights)
        name, model, size = loaded.arch, loaded.model, args.image_size or loaded.image_size
    probes = Probes(model, 1, (model.in_chans, size, size), target_features=args.features)
    print(f"layers of {name} to probe at {size}x{size} (pooled to about {args.features:,} values each):")
    width = max(len(name) for name in probes.layer_names)
    for name in probes.layer_names:
        features, shape, grid = probes.pooling(name)
        pooled, shape = f"{grid}x{grid}", "x".join(map(str, shape))
        print(f"  {name:<{width}}  map {shape:<12} pooled {pooled:<7} {features:>6,} features")
    return 0


def _cmd_probe(args: argparse.Namespace) -> int:
    from convzoo.transfer.probe import run_probe

    if args.list_layers:
        return _cmd_list_layers(args)
    if args.data is None:
        raise ValueError("--data is required: the data set the probes train and are tested on (e.g. --data digits)")
    overrides = {k: v for k, v in (("lr", args.lr), ("batch_size", args.batch_size)) if v is not None}
    result = run_probe(
        args.source,
        args.data,
        args.layers,
        weights=args.weights,
        out=args.out,
        data_root=args.data_root,
        image_size=args.image_size,
        epochs=args.epochs,
        recipe_overrides=overrides,
        target_features=args.features,
        seed=args.seed,
        device=args.device,
        amp=args.amp,
        deterministic=args.deterministic,
        progress=False if args.no_progress else None,
    )
    width = max(len(row.layer) for row in result.layers)
    print(f"{'layer':<{width}}  {'features':>8}  {'trained':>8}  {'random':>8}")
    for row in result.layers:
        print(f"{row.layer:<{width}}  {row.features:>8,}  {row.trained:>7.2f}%  {row.random:>7.2f}%")
    print(f"report: {result.report}")
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub,
        "probe",
        "linear probes on each layer of a frozen network, trained and random",
        "Linear probing as Zhang et al. (2017) measure what each layer knows: the network is frozen, each stage's\n"
        "output (conv1..conv5 for AlexNet, the feature_info tap points of other networks) is average-pooled to a\n"
        "square grid of about 9,000 values, normalised by a batch norm without affine parameters and read by one\n"
        "linear classifier. All probes train together on one pass of the trunk per batch. The same is done for the\n"
        "network randomly initialised. The report folder holds report.md (evidence, table, findings), results.csv,\n"
        "chart.png (accuracy against depth) and one engine run folder per network.\n"
        "\n"
        "The source is a training checkpoint, which must have been trained on the classes of --data, or a model\n"
        "name with its registered weights (or --weights). Running the command again with the same --out resumes\n"
        "an interrupted experiment.",
        """
        convzoo probe resnet20 --data digits --image-size 8 --epochs 3        # fast: embedded data
        convzoo probe resnet20 --data ../shared/data/cifar10 --epochs 10      # the shipped CIFAR-10 weights
        convzoo probe runs/alexnet-cifar/best.pt --data cifar10 --layers conv1,conv3,conv5
        convzoo probe alexnet_2012 --list-layers                              # Zhang et al.'s sizes
        """,
    )
    p.add_argument("source", help="training checkpoint (best.pt, last.pt) or registered model name")
    p.add_argument("--weights", help="for a model name: registered weights name or file (default: its registered ones)")
    p.add_argument(
        "--data",
        help="data set the probes train and test on: digits, shapes, cifar10, ... or a path (.npz file or image "
        "folder); a checkpoint's own classes are required",
    )
    p.add_argument(
        "--data-root", help="folder holding the named data set (default: $CONVZOO_DATA, else $CONVZOO_HOME/data)"
    )
    p.add_argument(
        "--layers",
        type=_layers,
        help="comma-separated layers to probe (default: all; --list-layers shows them)",
    )
    p.add_argument("--list-layers", action="store_true", help="list the layers, their maps and pooled sizes; exit")
    p.add_argument("--image-size", type=positive_int, help="image side (default: the side the network was trained on)")
    p.add_argument("--epochs", type=positive_int, default=10, help="epochs of probe training (default: 10)")
    p.add_argument(
        "--lr",
        type=float,
        help="learning rate of the probes (default: 0.01 for batch 128, SGD; scaled with --batch-size)",
    )
    p.add_argument("--batch-size", type=positive_int, help="batch size (default: 128)")
    p.add_argument(
        "--features", type=positive_int, default=9000, help="values each layer is pooled to, about (default: 9000)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the random network, the probes and the data order")
    p.add_argument("--out", help="experiment folder (default: runs/probe-TIME)")
    p.add_argument("--device", default="auto", help="auto (default), cpu or cuda")
    p.add_argument(
        "--amp",
        choices=["auto", "off", "bf16", "fp16"],
        default="auto",
        help="mixed precision (default auto: the fastest the device runs natively)",
    )
    p.add_argument("--deterministic", action="store_true", help="deterministic kernels only")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_probe)
