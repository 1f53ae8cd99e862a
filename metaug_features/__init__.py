"""metaug-features: frozen image features from MetAug encoders.

>>> from metaug_features import load_encoder
>>> encoder = load_encoder("hub/cifar10-conv")            # a folder, an alias or a Hub id
>>> features = encoder.extract(["cat.jpg", "dog.png"])    # float32 [2, D]
"""

from .config import EncoderConfig
from .errors import (
    ConfigError,
    EvaluationInputError,
    FeatureFileError,
    ImageDecodeError,
    MetAugError,
    ModelNotFoundError,
    WeightsError,
)
from .hub import MODEL_ALIASES
from .model import MetAugEncoder, build_encoder
from .model_io import load_encoder, load_model_dir, save_pretrained

__version__ = "0.2.0"

__all__ = [
    "MODEL_ALIASES",
    "ConfigError",
    "EncoderConfig",
    "EvaluationInputError",
    "FeatureFileError",
    "ImageDecodeError",
    "MetAugEncoder",
    "MetAugError",
    "ModelNotFoundError",
    "WeightsError",
    "build_encoder",
    "load_encoder",
    "load_model_dir",
    "save_pretrained",
]
