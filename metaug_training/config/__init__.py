"""The training configuration: one frozen dataclass, read from a JSON recipe plus overrides.

``TrainConfig`` is the single source of truth for a run. It is grouped into small sections
(``data``, ``model``, ``bank``, ``loss``, ``metaug``, ``idaa``, ``a2``, ``optim``, ``run``) so
that a recipe reads like docs/METHODS.md; every section is itself a frozen dataclass that
validates itself. Defaults are the ones docs/METHODS.md names (the official code's where it
picks the code's reading), defined once, in the sections. A recipe file holds any subset of the
keys; the command line overrides single keys with dotted names::

    metaug-train --config metaug_training/recipes/cifar10-metaug.json optim.lr=0.05 model.views=l,ab

Every value is checked against the field's type (an int is accepted where a float belongs, a
bool never is) and range; an unknown key or a bad value is a
:class:`~metaug_features.errors.ConfigError` that names the dotted key.

Modules, one job each:

- ``sections``: data, model, bank, optim and run sections;
- ``loss_sections``: loss and metaug sections (the OUCL / MetAug defaults), ``expand_aug_terms``;
- ``generator_sections``: idaa and a2 sections;
- ``schema``: ``TrainConfig`` (the sections together, cross-section checks, to/from dict);
- ``checks``: the range and choice checks the sections use;
- ``overrides``: the generic ``key=value`` override parser;
- ``coerce``: typed building of dataclasses from nested dicts;
- ``loading``: recipes + overrides -> ``TrainConfig``; the shipped recipes' list; ``diff_keys`` and
  what a resume may change;
- ``upgrades``: values that configs saved by earlier versions hold, read as what they mean now.
"""

from __future__ import annotations

from .generator_sections import (
    A2_FEATURE_MODEL,
    A2_LOSSES,
    A2_MODES,
    A2Config,
    IDAAConfig,
)
from .loading import (
    RECIPES_DIR,
    RESUMABLE_KEYS,
    RESUMABLE_SECTIONS,
    diff_keys,
    load_config,
    read_recipe,
    resume_changes,
    shipped_recipes,
)
from .loss_sections import (
    AUG_TERM_KEYWORDS,
    BANK_WRITES,
    CMC_LOSSES,
    NEGATIVE_DRAWS,
    REG_BLOCKS,
    REG_MODES,
    REG_SCORES,
    REG_WHERE,
    WEIGHTINGS,
    LossConfig,
    MetaugConfig,
    expand_aug_terms,
)
from .overrides import OverrideValue, parse_override
from .schema import TrainConfig
from .sections import (
    DATASET_CACHE_DIR,
    META_GRAD_MODES,
    BankConfig,
    DataConfig,
    ModelConfig,
    OptimConfig,
    RunConfig,
)

__all__ = [
    "A2_FEATURE_MODEL",
    "A2_LOSSES",
    "A2_MODES",
    "AUG_TERM_KEYWORDS",
    "BANK_WRITES",
    "CMC_LOSSES",
    "DATASET_CACHE_DIR",
    "META_GRAD_MODES",
    "NEGATIVE_DRAWS",
    "RECIPES_DIR",
    "REG_BLOCKS",
    "REG_MODES",
    "REG_SCORES",
    "REG_WHERE",
    "RESUMABLE_KEYS",
    "RESUMABLE_SECTIONS",
    "WEIGHTINGS",
    "A2Config",
    "BankConfig",
    "DataConfig",
    "IDAAConfig",
    "LossConfig",
    "MetaugConfig",
    "ModelConfig",
    "OptimConfig",
    "OverrideValue",
    "RunConfig",
    "TrainConfig",
    "diff_keys",
    "expand_aug_terms",
    "load_config",
    "parse_override",
    "read_recipe",
    "resume_changes",
    "shipped_recipes",
]
