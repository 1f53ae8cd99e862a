"""Reading a run's config: a JSON recipe plus ``key=value`` overrides, and comparing two configs.

A recipe file holds any subset of the keys, and may start with a one-line ``"_summary"`` that
``metaug-train --help`` shows (:func:`shipped_recipes`); the command line overrides single keys
with dotted names::

    metaug-train --config metaug_training/recipes/cifar10-metaug.json optim.lr=0.05 model.views=l,ab

What a resume may change (``RESUMABLE_SECTIONS``, ``RESUMABLE_KEYS``) is defined here with
:func:`diff_keys`, which the resume check uses.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from metaug_features.errors import ConfigError

from .overrides import apply_overrides
from .schema import TrainConfig

#: Folder of the shipped recipes; ``--config cifar10-metaug`` is looked up here.
RECIPES_DIR = Path(__file__).resolve().parent.parent / "recipes"

#: Keys a resume may change: they affect how the run executes, never the numbers it computes.
RESUMABLE_SECTIONS = ("run",)
RESUMABLE_KEYS = ("data.path", "data.cache_dir", "data.num_workers", "optim.epochs", "optim.accum_steps")


def load_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> TrainConfig:
    """Read a JSON recipe (a file, or the name of a shipped recipe) and apply ``key=value``
    overrides with dotted keys. Keys the recipe leaves out take their defaults. Raises
    ConfigError naming the offending key."""
    d: dict[str, Any] = read_recipe(path) if path is not None else {}
    apply_overrides(d, tuple(overrides))
    return TrainConfig.from_recipe(d)


def read_recipe(path: str | Path) -> dict[str, Any]:
    """JSON object of a recipe file; ``name`` without a folder also finds ``recipes/name.json``.
    Keys starting with "_" are notes (``_summary``, ``_comment``, ``_plan``) and are dropped."""
    p = Path(path)
    if not p.is_file():
        shipped = RECIPES_DIR / (p.name if p.suffix == ".json" else p.name + ".json")
        if p.parent == Path(".") and shipped.is_file():
            p = shipped
        else:
            names = ", ".join(shipped_recipes())
            raise ConfigError(f"config file not found: {path} (shipped recipes: {names})")
    try:
        d = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ConfigError(f"config file {p} is not valid JSON: {e}") from None
    if not isinstance(d, dict):
        raise ConfigError(f"config file {p} must hold a JSON object, got {type(d).__name__}")
    return _strip_comments(d)


def shipped_recipes(folder: Path = RECIPES_DIR) -> dict[str, str]:
    """Every recipe in ``folder`` (the shipped ones by default), sorted by name: name (what
    ``--config`` takes) -> its one-line ``"_summary"`` ("" when it has none). ``metaug-train
    --help`` lists them, so a recipe added to the folder is listed with no other change."""
    out: dict[str, str] = {}
    for p in sorted(folder.glob("*.json")):
        try:
            summary = json.loads(p.read_text(encoding="utf-8")).get("_summary", "")
        except (json.JSONDecodeError, AttributeError):
            summary = ""  # --help still names it; loading it says what is wrong
        out[p.stem] = " ".join(str(summary).split())
    return out


def _strip_comments(d: dict[str, Any]) -> dict[str, Any]:
    """Keys starting with "_" (e.g. "_comment") are notes for readers, not settings."""
    return {k: (_strip_comments(v) if isinstance(v, dict) else v) for k, v in d.items() if not k.startswith("_")}


def diff_keys(a: TrainConfig, b: TrainConfig) -> list[str]:
    """Dotted keys whose values differ between two configs (in field order)."""
    out: list[str] = []

    def walk(x: Any, y: Any, prefix: str) -> None:
        for f in dataclasses.fields(x):
            vx, vy = getattr(x, f.name), getattr(y, f.name)
            if dataclasses.is_dataclass(vx):
                walk(vx, vy, prefix + f.name + ".")
            elif vx != vy:
                out.append(prefix + f.name)

    walk(a, b, "")
    return out


def resume_changes(saved: TrainConfig, current: TrainConfig) -> list[str]:
    """Dotted keys that differ between a saved run's config and this one's and that a resume
    may not change (everything but ``RESUMABLE_SECTIONS`` and ``RESUMABLE_KEYS``)."""
    return [k for k in diff_keys(saved, current)
            if k.split(".")[0] not in RESUMABLE_SECTIONS and k not in RESUMABLE_KEYS]
