"""Subcommands that train: train and recipes.

Every flag of ``convzoo train`` is left out of the parsed arguments unless it is given (``argparse.SUPPRESS``), so the
settings a run gets are the ones the user stated: on top of the library's defaults for a new run, on top of the
checkpoint's for ``--resume``.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

from convzoo.cli._args import (
    add_command,
    add_recipe_flags,
    convert,
    describe_type,
    field_types,
    parse_literal,
)

_NOT_FLAGS = ("name", "source")
# Settings of the parsed arguments that are not run settings.
_COMMAND_KEYS = ("command", "func", "config", "arch", "no_progress", "remeasure_format")


def _read_yaml(path: str) -> dict[str, Any]:
    import yaml

    try:
        loaded = yaml.safe_load(Path(path).read_text()) or {}
    except FileNotFoundError:
        raise FileNotFoundError(f"config file {path} does not exist") from None
    except yaml.YAMLError as e:
        raise ValueError(f"config file {path} is not valid YAML: {e}") from None
    if not isinstance(loaded, dict):
        raise ValueError(f"config file {path} must hold a mapping of settings")
    return loaded


def _arch_types(model: str) -> dict[str, Any]:
    """The type of each architecture setting of ``model``'s family, from its configuration dataclass."""
    import torch

    import convzoo

    with torch.device("meta"):
        network = convzoo.create_model(model)
    cfg = getattr(network, "cfg", None)
    return field_types(type(cfg)) if dataclasses.is_dataclass(cfg) else {}


def _arch_settings(items: list[str], model: str) -> dict[str, Any]:
    """``--arch KEY=VALUE`` items as typed values, checked against the model family's configuration."""
    pairs = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--arch expects KEY=VALUE, e.g. --arch zero_init_residual=True; got {item!r}")
        pairs.append((key.strip(), value))
    types = _arch_types(model)
    settings = {}
    for key, value in pairs:
        if key not in types:  # not a configuration field (e.g. ResNet's depth=): create_model checks the name
            settings[key] = parse_literal(value)
            continue
        try:
            settings[key] = convert(value, types[key])
        except ValueError:
            raise ValueError(
                f"--arch {key}={value}: {model}'s {key} must be {describe_type(types[key])}; got {value!r}"
            ) from None
    return settings


def _classes(text: str) -> list[int | str]:
    from convzoo.data.arrays import parse_classes

    try:
        return parse_classes(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _train_config(args: argparse.Namespace):
    """The run's settings: the YAML file's, then the flags given; resuming, the checkpoint's, checked against these."""
    from convzoo.train import TrainConfig
    from convzoo.train.checkpoint import resume_config
    from convzoo.train.recipes import Recipe

    given = vars(args)
    config_fields = {f.name for f in dataclasses.fields(TrainConfig)}
    recipe_fields = {f.name for f in dataclasses.fields(Recipe)} - set(_NOT_FLAGS)
    settings = _read_yaml(given["config"]) if given.get("config") else {}
    recipe = dict(settings.pop("recipe_overrides", {}) or {})
    arch = dict(settings.pop("model_args", {}) or {})
    for key in list(settings):
        if key in recipe_fields and key not in config_fields:
            recipe[key] = settings.pop(key)
    unknown = set(settings) - config_fields
    if unknown:
        raise ValueError(
            f"unknown setting(s) {sorted(unknown)} in {given['config']}; accepted: training settings "
            f"{sorted(config_fields)} and recipe settings {sorted(recipe_fields)}"
        )
    for key, value in given.items():
        if key in _COMMAND_KEYS:
            continue
        if key in recipe_fields:
            recipe[key] = list(value) if isinstance(value, tuple) else value  # as checkpoints and YAML hold them
        else:
            settings[key] = value
    if given.get("no_progress"):
        settings["progress"] = False
    resuming = bool(settings.get("resume"))
    if resuming and not settings.get("out"):
        raise ValueError("--resume needs the run folder: convzoo train --out runs/NAME --resume")
    if given.get("arch"):
        model = settings.get("model")
        if model is None:
            model = resume_config(settings["out"], settings).model if resuming else TrainConfig.model
        arch.update(_arch_settings(given["arch"], model))
    if recipe:
        settings["recipe_overrides"] = recipe
    if arch:
        settings["model_args"] = arch
    # Resuming, a setting not given is the run's own, and one given must keep its value.
    return resume_config(settings["out"], settings) if resuming else TrainConfig(**settings)


def _cmd_train(args: argparse.Namespace) -> int:
    from convzoo.train import Trainer

    config = _train_config(args)
    if getattr(args, "remeasure_format", False):
        from convzoo.train.tuning import clear_step_format_cache

        forgotten = clear_step_format_cache(model=config.model)
        print(f"forgot {len(forgotten)} remembered step format(s) of {config.model}; this run measures again")
    trainer = Trainer(config)
    result = trainer.run()
    if not result.is_main:
        return 0  # in a distributed run the first process speaks for all, with metrics reduced over them
    if result.stopped_early:
        print(f"resume with: convzoo train --out {result.out} --resume")
        return 130
    if result.test_top1 is None:  # another task: its own best metric
        metric = trainer.task.best_metric
        last = result.history[-1].get(f"test_{metric}") if result.history else None
        final = f"test {metric} {last:.4g}, " if last is not None else ""
        print(f"done in {result.seconds:.1f} s: {final}best {metric} {result.best:.4g}; run folder {result.out}")
        return 0
    top5 = f" (top-5 {result.test_top5:.2f}%)" if result.test_top5 is not None and trainer.data.num_classes > 5 else ""
    print(
        f"done in {result.seconds:.1f} s: test accuracy {result.test_top1:.2f}%{top5}, "
        f"best {result.best_top1:.2f}%; run folder {result.out}"
    )
    return 0


def _cmd_recipes(args: argparse.Namespace) -> int:
    from convzoo.train import RECIPES

    for recipe in RECIPES.values():
        print(f"{recipe.name}: {recipe.source}")
        if args.verbose:
            for key, value in recipe.as_dict().items():
                if key not in _NOT_FLAGS:
                    print(f"    {key}: {value}")
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub,
        "train",
        "train a model (default: ResNet-20 on the embedded digits)",
        "Train a registered network with a named recipe. Settings come from the recipe, then the YAML file of\n"
        "--config, then the flags given; every recipe setting has a flag. The run folder holds the checkpoints\n"
        "(last.pt, best.pt), the final weights, the metrics, the curves and a report.\n"
        "\n"
        "--resume continues the run in --out from its last.pt with the settings it was started with; a setting\n"
        "given again must have the same value.",
        """
        convzoo train                                     # ResNet-20 on the digits, recipe quick
        convzoo train resnet56 --data cifar10 --data-root ~/data/cifar10 --recipe resnet-cifar
        convzoo train wrn16_8 --data cifar10 --recipe wrn-cifar --arch block_drop_rate=0.3
        convzoo train resnet20 --data shapes --epochs 5 --optimizer adamw --lr 0.002 --schedule cosine
        convzoo train resnet20 --data shapes --label-smoothing 0.1 --milestones 0.5,0.75 --out runs/shapes
        convzoo train resnet20 --data cifar10 --classes 0-4     # one half of CIFAR-10
        convzoo train --out runs/shapes --resume          # continue an interrupted run
        convzoo train --config run.yaml --seed 1
        """,
    )
    s = argparse.SUPPRESS
    p.add_argument("model", nargs="?", default=s, help="registered model name (default: resnet20)")
    run = p.add_argument_group("run")
    run.add_argument(
        "--data",
        default=s,
        help="digits (default), shapes, scenes (masks and boxes, for segmentation and detection), cifar10, "
        "cifar100, mnist, fashion-mnist, svhn, stl10, or a path (.npz file, image folder; for segmentation and "
        "detection networks a Pascal VOC, COCO or image/mask folder)",
    )
    run.add_argument(
        "--data-root",
        default=s,
        help="folder holding the named data set (default: $CONVZOO_DATA, else $CONVZOO_HOME/data)",
    )
    run.add_argument(
        "--classes",
        type=_classes,
        default=s,
        metavar="CLASSES",
        help="train and test on these classes alone, relabelled 0.. in the order given: indices, ranges or "
        "names (0-4, 0,2,5-7, cat,dog)",
    )
    run.add_argument("--recipe", default=s, help="named recipe (see `convzoo recipes`; default: quick)")
    run.add_argument("--config", help="YAML file of settings (training and recipe settings); flags override it")
    run.add_argument(
        "--arch",
        action="append",
        metavar="KEY=VALUE",
        help="architecture setting of the model's family, repeatable; values are typed (0.3, true, none, 3,4,6,3) "
        "and checked against the family's settings",
    )
    run.add_argument("--weights", default=s, help="initial weights: file, URL or registered name (fine-tuning)")
    run.add_argument("--image-size", type=int, default=s, help="image side (default: the model's input size)")
    run.add_argument("--out", default=s, help="run folder (default: runs/MODEL-DATA-TIME)")
    run.add_argument(
        "--resume", action="store_true", default=s, help="continue the run in --out from its last checkpoint"
    )
    run.add_argument("--seed", type=int, default=s, help="seed of weights, data order and augmentation (default: 0)")
    run.add_argument("--device", default=s, help="auto (default), cpu or cuda")
    run.add_argument(
        "--amp",
        choices=["auto", "off", "bf16", "fp16"],
        default=s,
        help="mixed precision (default auto: the fastest the device runs natively, measured once and remembered)",
    )
    run.add_argument(
        "--channels-last",
        action=argparse.BooleanOptionalAction,
        default=s,
        help="channels-last memory format (default: whichever is measured faster)",
    )
    run.add_argument(
        "--remeasure-format",
        action="store_true",
        default=s,
        help="forget the step format remembered for this model (see --amp) and measure it again",
    )
    run.add_argument("--compile", action="store_true", default=s, help="torch.compile the model")
    run.add_argument("--clip-grad", type=float, default=s, help="clip the gradient norm to this value")
    run.add_argument(
        "--ema", type=float, default=s, help="keep an exponential moving average of weights with this decay"
    )
    run.add_argument("--deterministic", action="store_true", default=s, help="deterministic kernels only")
    run.add_argument(
        "--sync-bn", action="store_true", default=s, help="synchronised batch norm in distributed runs (CUDA only)"
    )
    run.add_argument(
        "--skip-corrupt", action="store_true", default=s, help="skip unreadable images (counted) instead of failing"
    )
    run.add_argument("--eval-batch-size", type=int, default=s, help="batch size for evaluation (default: 256)")
    run.add_argument("--tensorboard", action="store_true", default=s, help="also write TensorBoard logs")
    run.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_recipe_flags(p.add_argument_group("recipe settings (default: the recipe's; see `convzoo recipes -v`)"))
    p.set_defaults(func=_cmd_train)

    p = add_command(
        sub,
        "recipes",
        "list the named training recipes and their sources",
        "List the named recipes and where their numbers come from; -v adds every setting.",
        """
        convzoo recipes
        convzoo recipes -v
        """,
    )
    p.add_argument("-v", "--verbose", action="store_true", help="print every setting")
    p.set_defaults(func=_cmd_recipes)
