"""View generators: IDAA and A2 as extra views that plug into any method (docs/METHODS.md
sections 8-9). ``contract`` is the interface every generator fills, ``idaa`` and ``a2`` are one
generator each, ``table.VIEW_GENERATORS`` names them in the order a step applies them.

The names below are the package's public face; a new generator adds a module and a row in
``table.py``, nothing here.
"""

from .a2 import A2Views, build_a2, read_latent_cache
from .a2_calibration import calibrate_from_model, calibrate_sigma
from .contract import (
           ContrastiveFn,
           Features,
           GeneratorBatch,
           GeneratorBuilder,
           ViewGenerator,
)
from .idaa import IDAAViews, build_idaa
from .table import VIEW_GENERATORS, build_view_generators

__all__ = ["VIEW_GENERATORS", "A2Views", "ContrastiveFn", "Features", "GeneratorBatch", "GeneratorBuilder",
           "IDAAViews", "ViewGenerator", "build_a2", "build_idaa", "build_view_generators", "calibrate_from_model",
           "calibrate_sigma", "read_latent_cache"]
