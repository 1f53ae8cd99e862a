"""Training checkpoints: one plain dict, written atomically, read with ``weights_only=True``.

A checkpoint holds everything a run needs to continue bit-exactly (on CPU with the same thread
count) or on another machine: the config (as a dict), the git commit, the global step and
epoch, the encoder, MAG and NCE states, both optimisers, the memory bank, the RNG states and
the dataset fingerprint (so a resume refuses a different sample order). Only tensors, numbers,
strings, lists, tuples and dicts are stored, so ``torch.load(..., weights_only=True)`` reads it
without unpickling code.

Layout of a run folder (``run.out_dir``)::

    checkpoints/last.pt   the latest good checkpoint (replaced atomically)
    log.jsonl             one JSON record per logged step
    config.json           the resolved config of the run
    export/               the inference model folder written when the run stops
"""

from __future__ import annotations

import random
import subprocess
from pathlib import Path
from typing import Any

import torch

from metaug_features.atomic import atomic_write
from metaug_features.errors import MetAugError

FORMAT = "metaug-train-checkpoint"
VERSION = 1
LAST = "last.pt"


class CheckpointError(MetAugError):
    """A checkpoint is missing, unreadable, or not from this trainer / this run."""


def checkpoint_path(out_dir: str | Path) -> Path:
    return Path(out_dir) / "checkpoints" / LAST


def git_commit() -> str:
    """HEAD of the repository this package lives in, ``+dirty`` when the tree has changes;
    "unknown" outside a git checkout."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def rng_state() -> dict[str, Any]:
    """Global RNG states (the trainer draws from explicit per-step generators, but anything
    else that touches the global RNGs resumes from the same point)."""
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(_tuplify(state["python"]))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def _tuplify(x: Any) -> Any:
    return tuple(_tuplify(v) for v in x) if isinstance(x, (list, tuple)) else x


def save_checkpoint(path: str | Path, ckpt: dict[str, Any]) -> Path:
    """Write ``ckpt`` to ``path`` atomically (temp file + fsync + rename): a reader or a
    restarted job sees the previous checkpoint or the complete new one, never a torn file."""
    ckpt = {"format": FORMAT, "version": VERSION, **ckpt}
    with atomic_write(path, "wb") as f:
        torch.save(ckpt, f)
    return Path(path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (tensors on the CPU)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torn, foreign or pickled-code files all land here
        raise CheckpointError(f"cannot read checkpoint {path}: {e}") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a metaug training checkpoint")
    if ckpt.get("version") != VERSION:
        raise CheckpointError(f"{path} has checkpoint version {ckpt.get('version')}; this trainer reads {VERSION}")
    return ckpt
