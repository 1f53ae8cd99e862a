"""``TrainConfig``: a whole training run as one frozen dataclass of sections.

The sections (``data``, ``model``, ``bank``, ``loss``, ``metaug``, ``idaa``, ``a2``, ``optim``,
``run``) read like docs/METHODS.md and each validates itself on construction; this class adds
the top-level ``method`` and the checks that span sections. The config is saved into every
checkpoint (``to_dict``) and rebuilt from it (``from_dict``; a key the saved config lacks takes
its default, and a value an earlier version saved is upgraded, :mod:`.upgrades`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from metaug_features.config import EncoderConfig
from metaug_features.errors import ConfigError

from .coerce import build_dataclass, to_plain
from .generator_sections import A2Config, IDAAConfig
from .loss_sections import LossConfig, MetaugConfig, expand_aug_terms
from .sections import BankConfig, DataConfig, ModelConfig, OptimConfig, RunConfig
from .upgrades import upgrade_saved


@dataclass(frozen=True)
class TrainConfig:
    """A whole training run. ``method`` picks the step (cmc | oucl | metaug); ``idaa`` and
    ``a2`` add generated views to any of them."""

    method: str = "metaug"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    bank: BankConfig = field(default_factory=BankConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    metaug: MetaugConfig = field(default_factory=MetaugConfig)
    idaa: IDAAConfig = field(default_factory=IDAAConfig)
    a2: A2Config = field(default_factory=A2Config)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def __post_init__(self) -> None:
        # Every section has validated itself; what is left spans sections. ``method`` is checked
        # for its type only: the methods table (metaug_training/methods/table.py) imports this
        # config, so the config cannot import the table without an import circle. Every user of
        # a config (training, export, compact-state, the train CLI) looks the name up with
        # ``method_for``, whose error lists the known methods.
        if not isinstance(self.method, str) or not self.method:
            raise ConfigError(f"config key 'method' must be a method name, got {self.method!r}")
        expand_aug_terms(self.metaug.aug_terms, self.model.views)

    def to_dict(self) -> dict[str, Any]:
        """Nested plain dict (tuples as lists), JSON-ready and loadable by torch weights_only."""
        return to_plain(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrainConfig:
        """Strictly rebuild a saved config (a checkpoint's, a compact state's, ``config.json``)
        from a (possibly partial) nested dict; values saved by earlier versions are upgraded first
        (``upgrades.SAVED_VALUE_UPGRADES``). A recipe is read by :meth:`from_recipe` instead."""
        return build_dataclass(cls, upgrade_saved(d), prefix="")

    @classmethod
    def from_recipe(cls, d: Mapping[str, Any]) -> TrainConfig:
        """Strictly build a config from what a user wrote (a recipe plus overrides, nested). The
        saved-value upgrades do not apply: a recipe's ``run.max_steps=0`` is an error that says
        what to write instead."""
        return build_dataclass(cls, d, prefix="")

    def encoder_config(self, provenance: Mapping[str, Any] | None = None) -> EncoderConfig:
        """The library's ``EncoderConfig`` of this run's encoder."""
        return self.model.encoder_config(provenance)
