"""Typed building of the frozen config dataclasses from nested dicts, and back.

A value from a JSON file must have the field's exact type (an int is accepted where a float
belongs, a bool never stands for a number); a command-line value (:class:`OverrideValue`) is
text and is parsed with the field's type first. Lists become tuples, so configs stay frozen and
comparable. Unknown keys and wrong types are ConfigErrors naming the dotted key.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from collections.abc import Mapping
from typing import Any

from metaug_features.errors import ConfigError

from .overrides import OverrideValue

#: Texts an override may use for null in an optional field (``loss.margin=null``).
_NULL_TEXTS = ("none", "null", "")


def build_dataclass(cls: type, d: Mapping[str, Any], prefix: str = "") -> Any:
    """Strictly build dataclass ``cls`` from the (possibly partial) nested dict ``d``.

    Missing keys take the dataclass default (so a config saved before a key existed loads with
    that key's default); nested dataclass fields are built recursively. ``prefix`` is the dotted
    path of ``d`` ("" at the top level, "optim." for a section), used in error messages.
    """
    if not isinstance(d, Mapping):
        raise ConfigError(f"config key {prefix.rstrip('.') or '<root>'!r} must be a JSON object, got {type(d).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in d:
        if key not in names:
            where = f"section {prefix.rstrip('.')!r}" if prefix else "the top level"
            raise ConfigError(f"unknown config key {prefix + key!r}; known keys in {where}: {', '.join(names)}")
    kwargs = {}
    for name in names:
        if name not in d:
            continue
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            kwargs[name] = build_dataclass(tp, d[name], prefix + name + ".")
        else:
            kwargs[name] = coerce_value(prefix + name, d[name], tp)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except TypeError as e:  # pragma: no cover - defensive, fields are checked above
        raise ConfigError(str(e)) from None


def to_plain(obj: Any) -> Any:
    """Nested plain dicts and lists of a dataclass (tuples as lists): JSON-ready."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (tuple, list)):
        return [to_plain(v) for v in obj]
    return obj


def type_name(tp: Any) -> str:
    """How an error message names type ``tp`` ("float or null", "list of 2 float", ...)."""
    origin = typing.get_origin(tp)
    if origin is typing.Union or type(tp).__name__ == "UnionType":
        return " or ".join(type_name(a) for a in typing.get_args(tp))
    if origin is tuple:
        args = typing.get_args(tp)
        inner = type_name(args[0])
        return f"list of {inner}" if (len(args) == 2 and args[1] is Ellipsis) else f"list of {len(args)} {inner}"
    if tp is type(None):
        return "null"
    if tp is Any:
        return "any"
    return getattr(tp, "__name__", str(tp))


def coerce_value(key: str, value: Any, tp: Any) -> Any:
    """Check ``value`` against type ``tp``; a command-line string (OverrideValue) is parsed first."""
    if tp is Any:
        if isinstance(value, OverrideValue):
            value = _parse_json_or_text(str(value))
        # Lists become tuples: the config is frozen and hashable.
        return tuple(value) if isinstance(value, list) else value
    origin = typing.get_origin(tp)
    if origin is typing.Union or type(tp).__name__ == "UnionType":
        return _coerce_union(key, value, tp)
    if origin is tuple:
        return _coerce_tuple(key, value, tp)
    if isinstance(value, OverrideValue):
        return _parse_scalar(key, str(value), tp)
    # Values from a JSON file: exact types; an int is fine where a float belongs, a bool never
    # stands for a number.
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is str and isinstance(value, str):
        return value
    raise ConfigError(f"config key {key!r} must be {type_name(tp)}, got {type(value).__name__} {value!r}")


def _coerce_union(key: str, value: Any, tp: Any) -> Any:
    args = typing.get_args(tp)
    if type(None) in args and (value is None or (isinstance(value, OverrideValue) and value.lower() in _NULL_TEXTS)):
        return None
    for a in args:
        if a is type(None):
            continue
        try:
            return coerce_value(key, value, a)
        except ConfigError:
            continue
    raise ConfigError(f"config key {key!r} must be {type_name(tp)}, got {value!r}")


def _coerce_tuple(key: str, value: Any, tp: Any) -> tuple[Any, ...]:
    args = typing.get_args(tp)
    if isinstance(value, OverrideValue):
        # "[2, 3]" (JSON) or "l,ab" (comma list); elements are parsed with their own type.
        text = str(value)
        if text.startswith("["):
            try:
                items = json.loads(text)
            except json.JSONDecodeError:
                raise ConfigError(f"config key {key!r} must be {type_name(tp)}, got {text!r}") from None
            value = [OverrideValue(v if isinstance(v, str) else str(v)) for v in items]
        else:
            value = [OverrideValue(v.strip()) for v in text.split(",") if v.strip()]
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"config key {key!r} must be {type_name(tp)}, got {type(value).__name__} {value!r}")
    if len(args) == 2 and args[1] is Ellipsis:
        elem_types = [args[0]] * len(value)
    else:
        if len(value) != len(args):
            raise ConfigError(f"config key {key!r} must be {type_name(tp)}, got {len(value)} values {list(value)!r}")
        elem_types = list(args)
    return tuple(coerce_value(f"{key}[{i}]", v, t) for i, (v, t) in enumerate(zip(value, elem_types)))


def _parse_scalar(key: str, text: str, tp: Any) -> Any:
    try:
        if tp is bool:
            low = text.lower()
            if low in ("true", "1", "yes", "on"):
                return True
            if low in ("false", "0", "no", "off"):
                return False
            raise ValueError
        if tp is int:
            return int(text)
        if tp is float:
            return float(text)
        if tp is str:
            return text
    except ValueError:
        pass
    raise ConfigError(f"config key {key!r} must be {type_name(tp)}, got {text!r}")


def _parse_json_or_text(text: str) -> Any:
    """An untyped (``Any``) field's override: JSON when it parses (a list), else the text."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text
