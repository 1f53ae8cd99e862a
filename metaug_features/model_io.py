"""The model folder format (one folder = one Hub repo) and its strict loader.

A folder holds ``config.json`` (:class:`EncoderConfig`), ``model.safetensors`` (weights only;
or shards listed in ``model.safetensors.index.json``, the Hugging Face convention) and
``README.md`` (the model card). Weights are only ever read from safetensors: pickle files
(``.bin``, ``.pt``, ``.pth``, ``.ckpt``, ``.pkl``) can execute code when loaded and are refused.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save as safetensors_save

from .atomic import atomic_write_bytes, atomic_write_text
from .card import minimal_card
from .config import EncoderConfig
from .device import resolve_device
from .errors import ConfigError, WeightsError
from .hub import resolve_model_dir
from .model import MetAugEncoder

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
WEIGHTS_INDEX_NAME = "model.safetensors.index.json"
CARD_NAME = "README.md"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
_DTYPES = {"float32": torch.float32, "float16": torch.float16}
#: A config.json larger than this is not a config (refused before parsing).
_MAX_CONFIG_BYTES = 1 << 20


def save_pretrained(
    encoder: MetAugEncoder,
    folder: str | os.PathLike,
    card: str | None = None,
    weights_dtype: str | None = None,
) -> Path:
    """Write ``encoder`` as a model folder: config.json + model.safetensors + README.md.

    Args:
        encoder: the encoder; its config (including ``truncate_after``) decides what is stored.
        folder: created if needed; existing files of the same names are replaced atomically.
        card: model-card text; a minimal card is generated when None.
        weights_dtype: "float32" or "float16" to override the config's storage dtype
            (float16 halves the folder; weights are used in float32 after loading).
    Returns:
        The folder path.
    """
    import dataclasses

    config = encoder.config
    if weights_dtype is not None:
        config = dataclasses.replace(config, weights_dtype=weights_dtype)
    dtype = _DTYPES[config.weights_dtype]
    tensors = {
        name: (t.detach().to("cpu", dtype=dtype) if t.is_floating_point() else t.detach().cpu()).contiguous().clone()
        for name, t in encoder.state_dict().items()
    }
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    # Weights first, config second: a folder whose config.json exists is loadable.
    atomic_write_bytes(folder / WEIGHTS_NAME, safetensors_save(tensors, metadata={"format": "pt"}))
    stale_index = folder / WEIGHTS_INDEX_NAME
    if stale_index.exists():
        stale_index.unlink()
    atomic_write_text(folder / CONFIG_NAME, config.to_json())
    atomic_write_text(folder / CARD_NAME, card if card is not None else minimal_card(config))
    return folder


def outside_folder(folder: Path, path: Path) -> Path | None:
    """Where ``path`` really points when that is outside ``folder`` (a symbolic link out of
    the model folder), else None.

    A downloaded folder must not make the loader read files elsewhere on the machine. The one
    layout allowed to link out is the Hugging Face cache's: ``<repo>/snapshots/<rev>/<file>``
    is a link to ``<repo>/blobs/<sha>``.
    """
    real = path.resolve()
    if real.is_relative_to(folder.resolve()):
        return None
    snapshots = folder.resolve().parent
    if snapshots.name == "snapshots" and real.parent == (snapshots.parent / "blobs").resolve():
        return None
    return real


def _refuse_outside(folder: Path, path: Path, error: type[Exception]) -> None:
    real = outside_folder(folder, path)
    if real is not None:
        raise error(f"{path} links to {real}, outside the model folder; a model folder's files must lie inside it")


def read_config(folder: str | os.PathLike) -> EncoderConfig:
    """Parse and validate ``folder/config.json`` strictly."""
    path = Path(folder) / CONFIG_NAME
    if not path.is_file():
        raise ConfigError(f"{folder}: no {CONFIG_NAME}; a model folder holds config.json, model.safetensors and README.md")
    _refuse_outside(Path(folder), path, ConfigError)
    if path.stat().st_size > _MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: {path.stat().st_size} bytes is too large for a model config")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not UTF-8 text") from None
    try:
        return EncoderConfig.from_json(text, strict=True)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    except TypeError as e:  # a value the dataclass cannot even hold
        raise ConfigError(f"{path}: {e}") from None


def _weight_files(folder: Path) -> list[Path]:
    """The safetensors files of a folder (one file, or the shards of an index)."""
    index = folder / WEIGHTS_INDEX_NAME
    single = folder / WEIGHTS_NAME
    if index.is_file():
        _refuse_outside(folder, index, WeightsError)
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            names = sorted(set(weight_map.values()))
        except (ValueError, KeyError, TypeError, AttributeError):
            raise WeightsError(f"{index}: malformed index (expected a JSON object with a 'weight_map')") from None
        files = []
        for name in names:
            if not isinstance(name, str) or Path(name).name != name or not name.endswith(".safetensors"):
                raise WeightsError(f"{index}: shard name {name!r} must be a .safetensors file inside the folder")
            if not (folder / name).is_file():
                raise WeightsError(f"{index}: shard {name!r} is missing")
            _refuse_outside(folder, folder / name, WeightsError)
            files.append(folder / name)
        return files
    if single.is_file():
        _refuse_outside(folder, single, WeightsError)
        return [single]
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES)
    if pickles:
        raise WeightsError(
            f"{folder}: found only pickle weights ({', '.join(pickles)}); metaug-features never loads pickles because "
            "they can run code. Convert them to model.safetensors on a machine you trust "
            "(safetensors.torch.save_file(torch.load(f, weights_only=True), 'model.safetensors'))."
        )
    raise WeightsError(f"{folder}: no {WEIGHTS_NAME} (or {WEIGHTS_INDEX_NAME})")


#: safetensors header dtype names -> torch dtypes (for messages; unknown names are kept as text).
_HEADER_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
                  "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
                  "BOOL": torch.bool}
#: A tensor's (shape, dtype), as a header declares it or as a config implies it.
TensorSpec = tuple[tuple[int, ...], "torch.dtype | str"]


def expected_specs(config: EncoderConfig) -> dict[str, TensorSpec]:
    """Name -> (shape, stored dtype) of every tensor a folder with ``config`` must hold.

    The encoder is built on the meta device, so this allocates no memory whatever the config
    says: a hostile config that implies gigabytes is refused before they are allocated."""
    with torch.device("meta"):
        reference = MetAugEncoder(config)
    return _stored_specs(reference.state_dict(), config.weights_dtype)


def _stored_specs(state: dict[str, torch.Tensor], weights_dtype: str) -> dict[str, TensorSpec]:
    """(shape, dtype) each tensor of ``state`` has in model.safetensors: floating tensors are
    stored in ``weights_dtype``, the others (BN step counters) as they are."""
    declared = _DTYPES[weights_dtype]
    return {k: (tuple(v.shape), declared if v.is_floating_point() else v.dtype) for k, v in state.items()}


def _header_specs(files: list[Path]) -> dict[str, TensorSpec]:
    """Name -> (shape, dtype) of the tensors in the safetensors headers; reads no tensor data."""
    specs: dict[str, TensorSpec] = {}
    for path in files:
        try:
            with safe_open(str(path), framework="pt") as f:
                for key in f.keys():  # noqa: SIM118 - a safe_open handle is not iterable
                    if key in specs:
                        raise WeightsError(f"{path}: tensor {key!r} appears in more than one shard")
                    sl = f.get_slice(key)
                    specs[key] = (tuple(sl.get_shape()), _HEADER_DTYPES.get(sl.get_dtype(), sl.get_dtype()))
        except WeightsError:
            raise
        except Exception as e:  # noqa: BLE001 - header garbage, truncation, wrong format
            raise WeightsError(f"{path}: not a valid safetensors file ({e})") from None
    return specs


def _check_specs(found: dict[str, TensorSpec], expected: dict[str, TensorSpec], source: str, weights_dtype: str) -> None:
    """Every expected tensor is found with its shape and dtype, and nothing else is."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    if missing:
        raise WeightsError(f"{source}: {len(missing)} tensors missing for this config, e.g. {missing[:3]}; the weights do not match config.json")
    if unexpected:
        raise WeightsError(f"{source}: {len(unexpected)} unexpected tensors, e.g. {unexpected[:3]}; the weights do not match config.json")
    for name, (shape, dtype) in expected.items():
        got_shape, got_dtype = found[name]
        if got_shape != shape:
            raise WeightsError(f"{source}: tensor {name!r} has shape {got_shape}, config.json implies {shape}")
        if got_dtype != dtype:
            raise WeightsError(f"{source}: tensor {name!r} is {got_dtype}, expected {dtype} (config weights_dtype={weights_dtype!r})")


def _read_tensors(files: list[Path]) -> dict[str, torch.Tensor]:
    tensors: dict[str, torch.Tensor] = {}
    for path in files:
        try:
            with safe_open(str(path), framework="pt") as f:
                for key in f.keys():  # noqa: SIM118 - a safe_open handle is not iterable
                    tensors[key] = f.get_tensor(key)
        except Exception as e:  # noqa: BLE001 - data cut short after a valid header
            raise WeightsError(f"{path}: not a valid safetensors file ({e})") from None
    return tensors


def load_state_into(encoder: MetAugEncoder, tensors: dict[str, torch.Tensor], source: str) -> None:
    """Check ``tensors`` against the encoder's own state dict (names, shapes, dtypes, finite
    values) and load them, casting stored float16 to the encoder's float32."""
    expected = encoder.state_dict()
    _check_specs({k: (tuple(t.shape), t.dtype) for k, t in tensors.items()},
                 _stored_specs(expected, encoder.config.weights_dtype), source, encoder.config.weights_dtype)
    for name, t in tensors.items():
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise WeightsError(f"{source}: tensor {name!r} holds NaN or inf")
    encoder.load_state_dict({k: v.to(expected[k].dtype) for k, v in tensors.items()}, strict=True)


def load_model_dir(folder: str | os.PathLike) -> MetAugEncoder:
    """Build the encoder of a local model folder (train mode, CPU).

    Order matters for hostile folders: the config is validated, then the weight headers are
    checked against the tensors the config implies (computed on the meta device), and only
    then is the encoder allocated and are the tensors read."""
    folder = Path(folder)
    config = read_config(folder)
    files = _weight_files(folder)
    _check_specs(_header_specs(files), expected_specs(config), str(folder), config.weights_dtype)
    encoder = MetAugEncoder(config)
    load_state_into(encoder, _read_tensors(files), str(folder))
    return encoder


#: What ``load_encoder(dtype=)`` accepts as a string, as torch spells the dtypes.
COMPUTE_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float64": torch.float64,
}


def parse_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """``"float16"``, ``"torch.float16"`` or ``torch.float16`` -> ``torch.float16``.

    Raises:
        ValueError: not a floating dtype of :data:`COMPUTE_DTYPES`; the message lists them.
    """
    if isinstance(dtype, torch.dtype) and dtype in COMPUTE_DTYPES.values():
        return dtype
    name = dtype.removeprefix("torch.") if isinstance(dtype, str) else None
    if name not in COMPUTE_DTYPES:
        raise ValueError(f"dtype must be one of {list(COMPUTE_DTYPES)} (or the torch dtype), got {dtype!r}")
    return COMPUTE_DTYPES[name]


def load_encoder(
    ref: str | os.PathLike,
    device: str | torch.device = "cpu",
    cache_dir: str | os.PathLike | None = None,
    dtype: str | torch.dtype = "float32",
) -> MetAugEncoder:
    """Load a pretrained encoder, ready for feature extraction (eval mode, no grad needed).

    Args:
        ref: a local model folder, a built-in alias (see ``metaug_features.hub.MODEL_ALIASES``),
            or a Hub repo id ``org/name`` with an optional ``@revision`` (an id and revision
            that name a shipped model load its installed copy, offline: ``metaug_features.hub``).
        device: where to put the weights: ``auto`` (CUDA if available) | ``cpu`` | ``cuda`` | ``cuda:N``
            or a ``torch.device`` (:func:`metaug_features.device.resolve_device`).
        cache_dir: Hugging Face cache to use for Hub models (default: the usual HF cache).
        dtype: the weights' dtype for computing, ``"float32"`` (default), ``"float16"``,
            ``"bfloat16"`` or ``"float64"``, or the torch dtype. The stored weights are read
            and checked first, then cast (float16 halves memory; on a CPU, bfloat16 is the
            faster half type). BN step counters stay int64.
    Returns:
        A :class:`MetAugEncoder` in eval mode whose ``transform`` turns one image into its input;
        ``encoder.extract(paths)`` gives features of the config's default layer, as float32
        [N, D] on the CPU whatever ``dtype`` and ``device`` (the forward runs in ``dtype``,
        so half-precision features differ from float32 ones by its rounding).
    """
    compute_dtype = parse_dtype(dtype)  # before any download: a typo fails at once
    device = resolve_device(device)
    folder = resolve_model_dir(ref, cache_dir=cache_dir)
    encoder = load_model_dir(folder)
    return encoder.to(device=device, dtype=compute_dtype).eval()
