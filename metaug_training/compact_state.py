"""A compact, committable resume state for runs that outlive a machine (the training campaign).

A full checkpoint (``checkpoints/last.pt``) resumes bit-exactly but is large: for the flagship
CIFAR-10 run it is ~157 MB, mostly the memory bank ``[V, N, d]`` (77 MB) and two optimisers'
momentum buffers. A run split into one-session legs on fresh machines needs something small
enough to commit to git. This module writes and reads that form:

    <state_dir>/state.json            format, step, epoch, config, dataset record, provenance,
                                      the sha256 of every weight file it reads, what was left out
    <state_dir>/weights.safetensors   encoder + MAG tensors in float16 (integers exact) that no
                                      referenced release folder already holds

Tensors that a release folder (``--reuse hub/cifar10-fc``) already holds at least as precisely
are not stored twice: ``state.json`` names the file (relative to the state folder) and its
sha256, and loading refuses a file that has changed since.

What a warm restart from this form rebuilds (``Trainer.warm_start``), so it is *not* a
bit-exact resume:
- the memory bank: re-embedded from the restored weights by one forward pass over the batches
  of the last epoch (``metaug_training.resume.rebuild_bank``), instead of the momentum-averaged features;
- the SGD momentum buffers of both optimisers: start from zero (one warm-up of ~1/(1-0.9) = 10
  steps);
- the weights: float16-rounded where they come from float16 storage (relative error <= 2^-11);
- the global RNG streams: reseeded from (run.seed, step). The data order, the augmentations and
  the negatives are pure functions of (run.seed, step) and continue unchanged.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save as safetensors_save

from metaug_features.atomic import atomic_write_bytes, atomic_write_text
from metaug_features.feature_files import sha256_file

from .checkpoint import CheckpointError

FORMAT = "metaug-compact-state"
VERSION = 1
STATE_NAME = "state.json"
WEIGHTS_NAME = "weights.safetensors"
#: Module prefixes of the tensors kept (checkpoint key -> prefix in the flat tensor map).
MODULES = ("encoder", "mags")
LEFT_OUT = (
    "memory bank (rebuilt from the weights by one pass over the last epoch's batches)",
    "optimiser momentum buffers (restart from zero)",
    "global RNG states (reseeded from run.seed and the step)",
)
_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


@dataclass(frozen=True)
class CompactStateSummary:
    """What :func:`save_compact_state` wrote: ``stored_bytes`` new bytes in ``weights``,
    ``reused`` tensor names read from release folders, ``stored`` tensor names in ``weights``."""

    state_dir: Path
    step: int
    epoch: float
    stored: tuple[str, ...]
    reused: tuple[str, ...]
    stored_bytes: int


def flat_tensors(ckpt: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """``{"encoder.<key>" | "mags.<key>": tensor}`` of a full checkpoint (MAGs when present)."""
    out: dict[str, torch.Tensor] = {}
    for module in MODULES:
        sd = ckpt.get(module)
        if sd is None:
            continue
        for k, v in sd.items():
            out[f"{module}.{k}"] = v
    return out


def _storage(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """How ``t`` is stored: floats in ``dtype``, integers (BN ``num_batches_tracked``) exact."""
    t = t.detach().cpu().contiguous()
    return t.to(dtype) if t.is_floating_point() else t.clone()


def _release_tensors(folder: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    path = folder / "model.safetensors"
    if not path.is_file():
        raise CheckpointError(f"--reuse {folder}: no model.safetensors there")
    with safe_open(str(path), framework="pt") as f:
        return path, {k: f.get_tensor(k) for k in f.keys()}


def _as_good(candidate: torch.Tensor, exact: torch.Tensor, stored: torch.Tensor) -> bool:
    """True when ``candidate`` (from a release file) restores ``exact`` at least as precisely
    as our own storage ``stored`` would: bit-equal to the exact tensor or to the stored one."""
    if candidate.shape != exact.shape or candidate.is_floating_point() != exact.is_floating_point():
        return False
    if not exact.is_floating_point():
        return torch.equal(candidate, exact.cpu())
    c = candidate.float()
    return torch.equal(c, exact.detach().cpu().float()) or torch.equal(c, stored.float())


def save_compact_state(ckpt: Mapping[str, Any], state_dir: str | os.PathLike,
                       reuse: Sequence[str | os.PathLike] = (), dtype: str = "float16") -> CompactStateSummary:
    """Write the compact form of the full checkpoint ``ckpt`` into ``state_dir``.

    Args:
        ckpt: a dict from :func:`training.checkpoint.load_checkpoint`.
        state_dir: created if needed; its two files are replaced atomically, the weights first
            and ``state.json`` (which holds the weights' sha256) last, so a torn write is
            detected on load.
        reuse: model folders (e.g. the release's ``hub/cifar10-fc``) whose ``model.safetensors``
            may supply encoder tensors instead of a second copy (keys match ``encoder.<key>``).
        dtype: storage dtype of floating tensors ("float16" default, "bfloat16", "float32").
    """
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
    state_dir = Path(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    tensors = flat_tensors(ckpt)
    stored = {k: _storage(v, _DTYPES[dtype]) for k, v in tensors.items()}
    refs: dict[str, dict[str, str]] = {}
    files: dict[str, str] = {}
    for folder in map(Path, reuse):
        path, release = _release_tensors(folder)
        rel = os.path.relpath(path.resolve(), state_dir.resolve())
        for key, cand in release.items():
            name = f"encoder.{key}"
            if name in stored and name not in refs and _as_good(cand, tensors[name], stored[name]):
                refs[name] = {"file": rel, "key": key}
                files[rel] = sha256_file(path)
    own = {k: v for k, v in stored.items() if k not in refs}
    blob = safetensors_save(own, metadata={"format": "pt"})
    atomic_write_bytes(state_dir / WEIGHTS_NAME, blob)
    files[WEIGHTS_NAME] = sha256_file(state_dir / WEIGHTS_NAME)
    record = {
        "format": FORMAT,
        "version": VERSION,
        "step": int(ckpt["step"]),
        "epoch": float(ckpt["epoch"]),
        "steps_per_epoch": int(ckpt["steps_per_epoch"]),
        "world_size": int(ckpt.get("world_size", 1)),
        "git_commit": str(ckpt.get("git_commit", "unknown")),
        "config": ckpt["config"],
        "dataset": ckpt.get("dataset", {}),
        "metrics": ckpt.get("metrics", {}),
        "weights_dtype": dtype,
        "modules": [m for m in MODULES if ckpt.get(m) is not None],
        "tensors": sorted(tensors),
        "references": refs,
        "files": files,
        "left_out": list(LEFT_OUT),
    }
    atomic_write_text(state_dir / STATE_NAME, json.dumps(record, indent=1) + "\n")
    return CompactStateSummary(state_dir, record["step"], record["epoch"], tuple(sorted(own)), tuple(sorted(refs)),
                               len(blob))


def has_compact_state(state_dir: str | os.PathLike) -> bool:
    return (Path(state_dir) / STATE_NAME).is_file()


def load_compact_state(state_dir: str | os.PathLike) -> dict[str, Any]:
    """Read a compact state: the ``state.json`` record plus ``"encoder"`` and ``"mags"`` state
    dicts in float32 (None for a method without MAGs). Raises CheckpointError when a file is
    missing, changed since it was written (sha256), or a tensor is missing."""
    state_dir = Path(state_dir)
    path = state_dir / STATE_NAME
    if not path.is_file():
        raise CheckpointError(f"no compact state at {state_dir} ({STATE_NAME} missing)")
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise CheckpointError(f"cannot read {path}: {e}") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a metaug compact state")
    if record.get("version") != VERSION:
        raise CheckpointError(f"{path} has compact-state version {record.get('version')}; this trainer reads {VERSION}")
    for rel, digest in record["files"].items():
        f = (state_dir / rel)
        if not f.is_file():
            raise CheckpointError(f"compact state {state_dir}: {rel} is missing")
        if sha256_file(f) != digest:
            raise CheckpointError(f"compact state {state_dir}: {rel} has changed since the state was written "
                                  f"(sha256 differs); restore that file from the same commit as {STATE_NAME}")
    with safe_open(str(state_dir / WEIGHTS_NAME), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    by_file: dict[str, list[tuple[str, str]]] = {}
    for name, ref in record["references"].items():
        by_file.setdefault(ref["file"], []).append((name, ref["key"]))
    for rel, pairs in by_file.items():
        with safe_open(str(state_dir / rel), framework="pt") as f:
            for name, key in pairs:
                tensors[name] = f.get_tensor(key)
    missing = sorted(set(record["tensors"]) - set(tensors))
    if missing:
        raise CheckpointError(f"compact state {state_dir}: tensors missing: {', '.join(missing[:5])}")
    out: dict[str, Any] = dict(record)
    for module in MODULES:
        prefix = module + "."
        sd = {k[len(prefix):]: (v.float() if v.is_floating_point() else v)
              for k, v in tensors.items() if k.startswith(prefix)}
        out[module] = sd if module in record["modules"] else None
    return out
