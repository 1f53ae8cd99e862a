"""The command line's ``key=value`` overrides with dotted keys (``optim.lr=0.05``).

Generic: nothing here knows the schema. A value stays text (:class:`OverrideValue`) until the
config is built, where it is parsed with the type of the field it lands in
(:mod:`metaug_training.config.coerce`), so "3" is an int for an int field, "l,ab" a tuple for a
tuple field and "null" None for an optional one.
"""

from __future__ import annotations

from typing import Any

from metaug_features.errors import ConfigError


class OverrideValue(str):
    """A command-line value: text to be parsed with the target field's type."""


def parse_override(item: str) -> tuple[str, OverrideValue]:
    """``"optim.lr=0.05"`` -> ``("optim.lr", OverrideValue("0.05"))``.

    Only the first "=" splits, so a value may hold "=" itself; key and value are stripped.
    """
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like key=value (e.g. optim.lr=0.05)")
    key, value = item.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override {item!r} has an empty key")
    return key, OverrideValue(value.strip())


def set_dotted(d: dict[str, Any], key: str, value: Any) -> None:
    """``d["a"]["b"]["c"] = value`` for ``key = "a.b.c"``, creating missing sections; a
    non-section on the way (``bank.scoring.x`` where ``bank.scoring`` is a value) is a ConfigError."""
    parts = key.split(".")
    cur = d
    for i, part in enumerate(parts[:-1]):
        nxt = cur.setdefault(part, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"config key {'.'.join(parts[: i + 1])!r} is not a section; cannot set {key!r}")
        cur = nxt
    cur[parts[-1]] = value


def apply_overrides(d: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Set every ``key=value`` of ``overrides`` into the nested dict ``d`` (in place; returned)."""
    for item in overrides:
        key, value = parse_override(item)
        set_dotted(d, key, value)
    return d
