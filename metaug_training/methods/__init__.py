"""Training methods (docs/METHODS.md sections 3-6): one module each (``cmc``, ``oucl``,
``metaug``), the table that names them (``table.METHODS``), the contract they fill
(``interface.Method``), the state a step mutates (``state``) and the step they share (``step``).

The names below are the package's public face (the trainer, the tests and the benchmarks import
them from here); a new method adds a module and a row in ``table.py``, nothing here.
"""

from .interface import META_PREFIX, Method, StepInputs
from .metaug import meta_inner_lr
from .state import Embedder, TrainState, make_optimizer
from .step import (
    contrastive_loss,
    encoder_loss,
    objective_config,
    to_network_input,
    train_step,
)
from .table import METHODS, method_for

__all__ = ["META_PREFIX", "METHODS", "Embedder", "Method", "StepInputs", "TrainState", "contrastive_loss",
           "encoder_loss", "make_optimizer", "meta_inner_lr", "method_for", "objective_config",
           "to_network_input", "train_step"]
