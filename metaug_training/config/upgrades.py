"""Reading configs that earlier versions saved: one-way upgrades of values whose meaning moved.

A run saves its config (``TrainConfig.to_dict``) into ``checkpoints/last.pt``, its compact state
(``state/state.json``) and ``config.json``; committed states under ``runs/`` must keep loading
and resuming. When a value's spelling changes, the old spelling is listed here with what it
means now, and :meth:`TrainConfig.from_dict <metaug_training.config.TrainConfig.from_dict>`
applies the table before it builds the config. A recipe or an override never goes through it:
there the old spelling is an error that says what to write instead.

An upgrade must be unambiguous: the old value is one that the current version refuses, so a
config saved by the current version is never changed by it. (A spelling that stays valid, such
as ``a2.calibration_model="hub/cifar10-conv"``, is mapped by its section instead, for recipes
and saved configs alike: ``generator_sections._A2_MODEL_SPELLINGS``.)
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

#: Dotted key -> (the value earlier versions saved, what it means now, why it changed).
SAVED_VALUE_UPGRADES: dict[str, tuple[Any, Any, str]] = {
    "run.max_steps": (0, None, ("0 meant 'no limit' until issue #55, where it became an error (a user "
                                "wanting a dry run trained for 24 minutes); null is 'no limit' now")),
}


def upgrade_saved(d: Mapping[str, Any]) -> Any:
    """A copy of the saved config ``d`` (nested plain dict) with every value listed in
    ``SAVED_VALUE_UPGRADES`` replaced by what it means now; ``d`` is left unchanged. Anything
    but a mapping is returned as it is, for the config builder to refuse with its message."""
    if not isinstance(d, Mapping):
        return d
    out: dict[str, Any] = copy.deepcopy(dict(d))
    for key, (old, new, _why) in SAVED_VALUE_UPGRADES.items():
        *sections, name = key.split(".")
        node: Any = out
        for section in sections:
            node = node.get(section) if isinstance(node, dict) else None
        # Exact type as well as value: False == 0 in Python, and a bool is never a step count.
        if isinstance(node, dict) and name in node and type(node[name]) is type(old) and node[name] == old:
            node[name] = new
    return out
