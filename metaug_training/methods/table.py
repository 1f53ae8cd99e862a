"""The training methods by name: one row per method module (docs/EXTENDING.md, "Add a training
method"). A visible dict literal, never filled at import time (docs/DESIGN.md)."""

from __future__ import annotations

from metaug_features.errors import ConfigError

from .cmc import CMC
from .interface import Method
from .metaug import METAUG
from .oucl import OUCL

METHODS: dict[str, Method] = {
    "cmc": CMC,        # memory-bank CMC, InfoNCE or NCE (docs/METHODS.md section 3)
    "oucl": OUCL,      # MetAug's OUCL loss, no generators (section 4)
    "metaug": METAUG,  # OUCL + MAGs + the meta step (section 6)
}


def method_for(name: str) -> Method:
    """The method called ``name`` (``TrainConfig.method``); a ConfigError listing the known ones
    otherwise."""
    try:
        return METHODS[name]
    except KeyError:
        raise ConfigError(f"config key 'method': unknown method {name!r}; known methods: "
                          f"{', '.join(METHODS)} (a new one is a module plus a row in "
                          "metaug_training/methods/table.py)") from None
