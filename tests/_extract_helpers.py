"""Helpers shared by the tests/test_extract_*.py files (not a test module)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import torch

from metaug_features import EncoderConfig, build_encoder, save_pretrained
from metaug_features.feature_formats import (
    MANIFEST,
    METADATA,
    SKIPPED,
    features_file_names,
)

#: A small but real encoder: the CIFAR AlexNet at a quarter width, two views (l, ab).
SMALL_CONFIG = dict(architecture="alexnet32", width=0.25, views=("l", "ab"))


def make_model_folder(folder: Path, seed: int = 0, **overrides) -> Path:
    """Random-init encoder saved with save_pretrained (seeded, so two calls give one model)."""
    torch.manual_seed(seed)
    enc = build_encoder(EncoderConfig(**{**SMALL_CONFIG, **overrides}))
    save_pretrained(enc, folder)
    return folder


def copy_images(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest)
    return dest


def cli_cmd(*args: str | os.PathLike | int) -> list[str]:
    """The metaug-extract command line, run with this interpreter."""
    return [sys.executable, "-m", "metaug_cli.extract", *(a if isinstance(a, str) else os.fspath(a) if isinstance(a, os.PathLike) else str(a) for a in args)]


def run_cli(*args: str | os.PathLike | int, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(cli_cmd(*args), capture_output=True, text=True, timeout=timeout,
                          errors="surrogateescape")


def output_files(folder: Path) -> dict[str, bytes]:
    """The bytes of every file of a finished feature folder (for bit-exact comparisons)."""
    names = [n for n in (*features_file_names(), MANIFEST, SKIPPED, METADATA) if (folder / n).is_file()]
    return {n: (folder / n).read_bytes() for n in names}


def interrupt_after_one_chunk(monkeypatch, model_dir: Path, images: list[Path], out: Path, **kwargs) -> None:
    """Run ``extract_features(model_dir, images, out, **kwargs)`` and stop it (KeyboardInterrupt)
    right after its first chunk is stored in ``out/.partial``: an unfinished extraction."""
    import pytest

    from metaug_features.extract import extract_features
    from metaug_features.extract_state import PartialStore

    original = PartialStore.write_chunk

    def stop(self, result, key_hash):
        original(self, result, key_hash)
        raise KeyboardInterrupt

    monkeypatch.setattr(PartialStore, "write_chunk", stop)
    with pytest.raises(KeyboardInterrupt):
        extract_features(model_dir, images, out, **kwargs)
    monkeypatch.setattr(PartialStore, "write_chunk", original)
