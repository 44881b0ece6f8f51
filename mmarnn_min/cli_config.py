"""Command-line flags from a config dataclass, and configs to and from JSON (used by
``python -m mmarnn_min.train`` and ``python -m mmarnn_min.ablate``).

Every leaf field of the dataclass, nested dataclasses included, becomes one flag with the
field's type, default and trailing source comment as its help. A top-level field ``hume``
gives ``--hume``; a field of a nested section gives ``--<section>-<field>`` (``mma.model.width``
-> ``--mma-width``, ``data.seed`` -> ``--data-seed``), so every flag says which part of the
pipeline it sets.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import math
import re
import typing
from typing import Any

from mmarnn_min.checks import ConfigError


def leaf_fields(cls: type, prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], dataclasses.Field, Any]]:
    """(path, field, type) of every non-dataclass field of ``cls``, nested ones flattened."""
    hints = typing.get_type_hints(cls)
    leaves = []
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            leaves += leaf_fields(hints[f.name], prefix + (f.name,))
        else:
            leaves.append((prefix + (f.name,), f, hints[f.name]))
    return leaves


def field_comments(cls: type) -> dict[str, str]:
    """field name -> the comment that ends its line in the class source."""
    pattern = re.compile(r"^\s+(\w+)\s*:[^#]*#\s*(.+)$")
    return {m.group(1): m.group(2).strip() for m in map(pattern.match, inspect.getsource(cls).splitlines()) if m}


def get_path(config: Any, path: tuple[str, ...]) -> Any:
    for name in path:
        config = getattr(config, name)
    return config


def set_path(data: dict, path: tuple[str, ...], value: Any) -> None:
    for name in path[:-1]:
        data = data.setdefault(name, {})
    data[path[-1]] = value


def flag_name(path: tuple[str, ...]) -> str:
    """``--hume`` for a top-level field, ``--<section>-<field>`` for a nested one."""
    name = path[-1] if len(path) == 1 else f"{path[0]}_{path[-1]}"
    return "--" + name.replace("_", "-")


def add_config_flags(parser: argparse.ArgumentParser, cls: type) -> None:
    """One flag per leaf field of ``cls``; a flag not given leaves no attribute (dest: the
    field's dotted path)."""
    defaults, seen = cls(), {}
    for path, f, kind in leaf_fields(cls):
        name = flag_name(path)
        if name in seen:
            raise ValueError(f"config fields {seen[name]} and {'.'.join(path)} give the same flag {name}")
        seen[name] = ".".join(path)
        owner = get_path(defaults, path[:-1])
        comment = field_comments(type(owner)).get(f.name, "")
        options: dict[str, Any] = dict(dest=".".join(path), default=argparse.SUPPRESS,
                                       help=f"{comment} (default: {getattr(owner, f.name)!r})".replace("%", "%%"))
        if kind is bool:
            options["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(kind) is typing.Literal:
            choices = typing.get_args(kind)
            options.update(choices=choices, type=type(choices[0]))
        else:
            options.update(type=kind, metavar=kind.__name__.upper())
        parser.add_argument(name, **options)


def checked_value(value: Any, kind: Any, where: str) -> Any:
    """``value`` if it has the field's type ``kind`` exactly (JSON gives no second chance: the
    string "false" is not a bool, 3.0 is not an int, a bool is not a number, and a float must be
    finite), else a ConfigError naming ``where``."""
    if typing.get_origin(kind) is typing.Literal:
        choices = typing.get_args(kind)
        if value not in choices or type(value) is not type(choices[0]):
            raise ConfigError(where, f"must be one of {', '.join(map(str, choices))}, got {value!r}")
        return value
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(where, f"must be a finite number, got {value!r}")
        return float(value)
    if kind in (bool, int, str) and (type(value) is not kind):
        raise ConfigError(where, f"must be {_ARTICLE[kind]}, got {value!r}")
    return value


_ARTICLE = {bool: "true or false", int: "an integer", str: "a string"}


def describe_field(path: tuple[str, ...]) -> str:
    """``mrnn.batch_size (--mrnn-batch-size)``: a field as a config file and as a flag name it."""
    return f"{'.'.join(path)} ({flag_name(path)})"


def config_from_dict(cls: type, data: dict, path: tuple[str, ...] = ()) -> Any:
    """Build the dataclass ``cls`` from nested dicts (missing keys keep their defaults), with
    every value checked against its field's type and the dataclass's own checks; a ConfigError
    names the field by its place in the whole config and by its flag."""
    where = ".".join(path) or cls.__name__
    if not isinstance(data, dict):
        raise ConfigError(where, f"must be a mapping of fields, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(where, f"has no field(s) {', '.join(unknown)} (it has {', '.join(sorted(names))})")
    values = {}
    for name, value in data.items():
        if dataclasses.is_dataclass(hints[name]):
            values[name] = config_from_dict(hints[name], value, path + (name,))
        else:
            values[name] = checked_value(value, hints[name], describe_field(path + (name,)))
    try:
        return cls(**values)
    except ConfigError as error:
        if error.field is None:
            raise
        raise ConfigError(describe_field(path + (error.field,)), error.message) from None
    except ValueError as error:  # a dataclass's own check that names no single field
        raise ConfigError(where, str(error)) from None


def apply_flags(config: Any, args: dict) -> Any:
    """``config`` with the fields whose flags were given (``args``: parsed flags by dotted path)
    replaced."""
    data = dataclasses.asdict(config)
    for path, _, _ in leaf_fields(type(config)):
        if ".".join(path) in args:
            set_path(data, path, args[".".join(path)])
    return config_from_dict(type(config), data)
