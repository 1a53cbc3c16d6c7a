"""Typed configs: dataclasses with paper defaults, presets, `--set field=value` overrides.

An unknown field, from the command line, a preset or a config file, is an error naming the valid
ones: a typo must never fall back silently to a default.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import numbers
import typing
from typing import Any


class ConfigError(ValueError):
    pass


def field_names(config_cls) -> list[str]:
    return [f.name for f in dataclasses.fields(config_cls)]


def unknown_field_error(name: str, valid: list[str], where: str) -> ConfigError:
    close = difflib.get_close_matches(name, valid, n=3) if isinstance(name, str) else []  # YAML may give 1: 2
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    return ConfigError(f"unknown config field {name!r} in {where}.{hint} Valid fields: {', '.join(sorted(valid))}")


def _shown(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _coerce(value: Any, annotation: Any, name: str) -> Any:
    """Converts a string from the command line (or a YAML scalar) to the field's type."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Union or (origin is not None and type(None) in args):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], name)
    if origin in (tuple, list):
        item_type = args[0] if args else str
        items = _items(value, name)
        if items == [""]:  # "hidden_dims=": an empty list
            items = []
        if any(isinstance(v, str) and not v.strip() for v in items):
            raise ConfigError(f"field {name!r} has an empty item in {_shown(value)}")
        converted = [_coerce(v, item_type, name) for v in items]
        return tuple(converted) if origin is tuple else converted
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if str(value).lower() in ("1", "true", "yes", "on"):
            return True
        if str(value).lower() in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"field {name!r} expects a boolean, got {_shown(value)}")
    if annotation is int:
        return _whole_number(value, name)
    if annotation in (float, str):
        try:
            converted = annotation(value)
        except (TypeError, ValueError):
            raise ConfigError(f"field {name!r} expects {annotation.__name__}, got {_shown(value)}") from None
        if annotation is float and (math.isnan(converted) or (math.isinf(converted) and not _may_be_infinite(name))):
            raise ConfigError(f"field {name!r} must be a finite number, got {_shown(value)}")
        return converted
    return value


def _may_be_infinite(name: str) -> bool:
    """Clipping thresholds: inf is the natural way to turn them off (max_grad_norm=inf)."""
    return "clip" in name or name.endswith("_norm")


def _items(value: Any, name: str) -> list:
    """The items of a list field: "256,256" from --set, a YAML list, or one YAML scalar (as a
    single "256" from --set is a one-item list)."""
    if isinstance(value, str):
        return value.split(",")
    if isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(value, (int, float)):
        return [value]
    raise ConfigError(f"field {name!r} expects a list (e.g. 256,256), got {value!r}")


def _whole_number(value: Any, name: str) -> int:
    """An int from an int, a string or a float that is a finite whole number ("1e5" is 100000);
    anything else ("1e-3", 2.5, "1e999") is an error rather than truncated."""
    number = value
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            try:
                number = float(value)
            except ValueError:
                number = None
    if isinstance(number, numbers.Integral) and not isinstance(number, bool):
        return int(number)
    if isinstance(number, float) and math.isfinite(number) and number.is_integer():
        return int(number)
    raise ConfigError(f"field {name!r} expects a whole number (int), got {_shown(value)}")


def replace(config, overrides: dict[str, Any], where: str):
    """A copy of `config` with `overrides` applied, values coerced to the fields' types."""
    hints = typing.get_type_hints(type(config))
    valid = field_names(type(config))
    changes = {}
    for name, value in overrides.items():
        if name not in valid:
            raise unknown_field_error(name, valid, where)
        try:
            changes[name] = _coerce(value, hints[name], name)
        except ConfigError as error:
            raise ConfigError(f"{where}: {error}") from None
    return dataclasses.replace(config, **changes)


def from_dict(config_cls, values: dict[str, Any], where: str):
    return replace(config_cls(), values, where)


def parse_assignments(assignments: list[str]) -> dict[str, str]:
    """`["lr=1e-3", "hidden_dims=256,256"]` -> {"lr": "1e-3", "hidden_dims": "256,256"}."""
    parsed = {}
    for item in assignments:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ConfigError(f"--set expects field=value, got {item!r}")
        parsed[name.strip()] = value.strip()
    return parsed


def to_dict(config) -> dict[str, Any]:
    out = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        out[f.name] = list(value) if isinstance(value, tuple) else value
    return out
