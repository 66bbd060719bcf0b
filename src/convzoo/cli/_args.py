"""What the subcommands share: help layout, argument types, and reading typed values from the command line."""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import re
import textwrap
import types
import typing
from typing import Any

_NONE = ("none", "null")
_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")


def add_command(
    sub: argparse._SubParsersAction, name: str, summary: str, description: str, examples: str
) -> argparse.ArgumentParser:
    """A subcommand whose ``--help`` shows a description and examples, laid out as written."""
    return sub.add_parser(
        name,
        help=summary,
        description=description,
        epilog="examples:\n" + textwrap.indent(inspect.cleandoc(examples), "  ").replace("%", "%%"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def parse_input(text: str) -> str:
    """An input size as text: CxHxW, NxCxHxW (the batch is dropped), HxW or one side, checked here.

    The text itself is passed on, so that the forms without channels take the model's own (one for LeNet-5).
    """
    from convzoo.analysis import parse_input_size

    try:
        parse_input_size(text)
    except (TypeError, ValueError) as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer; got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer; got {text!r}")
    return value


def probability(text: str) -> float:
    """A number in [0, 1] (a score threshold, an opacity)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number in [0, 1]; got {text!r}") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be a number in [0, 1]; got {text!r}")
    return value


def describe_type(annotation: Any) -> str:
    """How a value of this type is written on the command line, e.g. ``comma-separated integers``."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        options = [describe_type(a) for a in args if a is not type(None)]
        return " or ".join(options + (["none"] if type(None) in args else []))
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"comma-separated {_plural(args[0])}"
        return f"{len(args)} comma-separated {_plural(args[0])}" if len(set(args)) == 1 else f"a tuple {annotation}"
    return {bool: "true or false", int: "an integer", float: "a number", str: "text"}.get(annotation, str(annotation))


def metavar(annotation: Any) -> str:
    """A short placeholder for a value of this type in usage lines, e.g. ``INT|none`` or ``FLOAT,...``."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return "|".join([metavar(a) for a in args if a is not type(None)] + (["none"] if type(None) in args else []))
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"{metavar(args[0])},..."
        return ",".join(metavar(a) for a in args)
    return {bool: "BOOL", int: "INT", float: "FLOAT", str: "TEXT"}.get(annotation, "VALUE")


def _plural(annotation: Any) -> str:
    return {int: "integers", float: "numbers", str: "words", bool: "true/false values"}.get(annotation, "values")


def convert(text: str, annotation: Any) -> Any:
    """``text`` read as a value of the type ``annotation`` (int, float, bool, str, optional, tuple).

    Raises:
        ValueError: The text is not such a value (the message says what was expected).
    """
    value = text.strip()
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if type(None) in args and value.lower() in _NONE:
            return None
        for option in (a for a in args if a is not type(None)):
            try:
                return convert(text, option)
            except ValueError:
                continue
        raise ValueError(f"expected {describe_type(annotation)}")
    if origin is tuple:
        parts = [p for p in value.strip("()[]").split(",") if p.strip()]
        if len(args) == 2 and args[1] is Ellipsis:
            kinds = [args[0]] * len(parts)
        elif len(parts) == len(args):
            kinds = list(args)
        else:
            raise ValueError(f"expected {describe_type(annotation)}")
        try:
            return tuple(convert(p, kind) for p, kind in zip(parts, kinds))
        except ValueError:
            raise ValueError(f"expected {describe_type(annotation)}") from None
    if annotation is bool:
        if value.lower() in _TRUE + _FALSE:
            return value.lower() in _TRUE
        raise ValueError(f"expected {describe_type(bool)}")
    if annotation in (int, float):
        try:
            return annotation(value)
        except ValueError:
            raise ValueError(f"expected {describe_type(annotation)}") from None
    if annotation is str:
        return value
    return parse_literal(value)


def parse_literal(text: str) -> Any:
    """An untyped value: none, true/false, an integer, a number, comma-separated values (a tuple), else the text."""
    value = text.strip()
    if value.lower() in _NONE:
        return None
    if value.lower() in ("true", "false"):
        return value.lower() == "true"
    if "," in value:
        return tuple(parse_literal(p) for p in value.strip("()[]").split(",") if p.strip())
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


class TypedValue:
    """An argparse ``type`` that reads a value of a type annotation, with a message naming what was expected."""

    def __init__(self, annotation: Any) -> None:
        self.annotation = annotation
        self.__name__ = describe_type(annotation)

    def __call__(self, text: str) -> Any:
        try:
            return convert(text, self.annotation)
        except ValueError as e:
            raise argparse.ArgumentTypeError(f"{e}; got {text!r}") from None


def field_docs(cls: type) -> dict[str, str]:
    """The one-line descriptions of a dataclass's fields, from the ``Attributes:`` section of its docstring."""
    docs: dict[str, str] = {}
    current = None
    section = False
    for line in (inspect.getdoc(cls) or "").splitlines():
        if line.strip() == "Attributes:":
            section = True
        elif section and (match := re.match(r"^    (\w+): (.*)", line)):
            current = match[1]
            docs[current] = match[2]
        elif section and current and line.startswith("        "):
            docs[current] += " " + line.strip()
        elif section and line.strip():
            break
    return {k: v.replace("``", "").replace("`", "") for k, v in docs.items()}


def field_types(cls: type) -> dict[str, Any]:
    """The resolved type annotation of each field of a dataclass (empty when they cannot be resolved)."""
    try:
        return typing.get_type_hints(cls)
    except (NameError, TypeError):
        return {}


# Recipe settings whose flags say more than the docstring of `Recipe`.
_RECIPE_HELP = {
    "optimizer": "optimiser",
    "schedule": "learning-rate schedule, after the warm-up",
    "epochs": "training length in epochs",
    "iterations": "training length in optimiser steps (replaces --epochs; none: use epochs)",
    "lr": "peak learning rate (default: the recipe's, scaled linearly with --batch-size)",
    "batch_size": "global batch size (split across processes in distributed runs)",
}


def add_recipe_flags(group: argparse._ArgumentGroup) -> None:
    """One flag per `Recipe` setting, typed from its annotation and described by its docstring."""
    from convzoo.train.recipes import OPTIMIZERS, SCHEDULES, Recipe

    docs, types = field_docs(Recipe), field_types(Recipe)
    choices = {"optimizer": OPTIMIZERS, "schedule": SCHEDULES}
    for field in dataclasses.fields(Recipe):
        if field.name in ("name", "source"):
            continue
        flag = "--" + field.name.replace("_", "-")
        text = _RECIPE_HELP.get(field.name) or docs.get(field.name, field.name.replace("_", " "))
        text = (text[:1].lower() + text[1:]).removesuffix(".").replace("%", "%%")
        annotation = types.get(field.name, str)
        if annotation is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=text)
        elif field.name in choices:
            group.add_argument(flag, choices=choices[field.name], default=argparse.SUPPRESS, help=text)
        else:
            group.add_argument(
                flag, type=TypedValue(annotation), default=argparse.SUPPRESS, metavar=metavar(annotation), help=text
            )


def given_recipe_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The recipe settings among the parsed flags of `add_recipe_flags` (those given; lists as YAML holds them)."""
    from convzoo.train.recipes import Recipe

    names = {f.name for f in dataclasses.fields(Recipe)} - {"name", "source"}
    return {k: list(v) if isinstance(v, tuple) else v for k, v in vars(args).items() if k in names}
