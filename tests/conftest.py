"""Shared fixtures: real CIFAR-10 JPEGs from the project's shared data archive; the test tiers.

Tests never download anything; they read a small slice of ../shared/data/cifar10-jpeg.tar.gz.

Two tiers: ``python -m pytest -q`` runs the fast tier (minutes); ``python -m pytest -q --run-slow``
runs everything, including the tests marked ``@pytest.mark.slow`` (kills, DDP, fuzzing, decode-pool
crash isolation, wheel install, multi-epoch training). CI runs the full command.
"""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-slow", action="store_true", default=False,
                     help="also run the tests marked slow (the full suite; what CI runs)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--run-slow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --run-slow (the full suite)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


def _find_archive() -> Path | None:
    env = os.environ.get("METAUG_CIFAR_ARCHIVE")
    candidates = [Path(env)] if env else []
    candidates.append(REPO_ROOT.parent / "shared" / "data" / "cifar10-jpeg.tar.gz")
    for c in candidates:
        if c.is_file():
            return c
    return None


@pytest.fixture(scope="session")
def cifar_archive() -> Path:
    """Path to the shared CIFAR-10 JPEG archive (set METAUG_CIFAR_ARCHIVE to override)."""
    path = _find_archive()
    if path is None:
        pytest.fail("CIFAR-10 archive not found: expected ../shared/data/cifar10-jpeg.tar.gz or $METAUG_CIFAR_ARCHIVE")
    return path


def extract_cifar_slice(archive: Path, dest: Path, per_class: dict[str, int]) -> Path:
    """Extract the first ``per_class[split]`` images of every class of each split into
    ``dest/{split}/<class>/<nnnn>.jpg``; returns ``dest``."""
    wanted = {
        f"cifar10/{split}/{cls}/{i:04d}.jpg"
        for split, n in per_class.items()
        for cls in CLASSES
        for i in range(n)
    }
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar:
            if member.name in wanted and member.isfile():
                target = dest / member.name[len("cifar10/"):]
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(tar.extractfile(member).read())
    missing = [w for w in wanted if not (dest / w[len("cifar10/"):]).is_file()]
    if missing:
        raise RuntimeError(f"{len(missing)} expected files missing from {archive}, e.g. {missing[0]}")
    return dest


@pytest.fixture(scope="session")
def cifar_images(cifar_archive: Path, tmp_path_factory) -> Path:
    """A session-wide folder of real CIFAR-10 JPEGs: 20 train + 20 test images per class,
    laid out as ``<root>/{train,test}/<class>/<nnnn>.jpg``. Treat it as read-only."""
    root = tmp_path_factory.mktemp("cifar_slice")
    return extract_cifar_slice(cifar_archive, root, {"train": 20, "test": 20})


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A small random-init model folder (seeded; see _extract_helpers.SMALL_CONFIG), one per
    test module. Treat it as read-only."""
    from _extract_helpers import make_model_folder

    return make_model_folder(tmp_path_factory.mktemp("model") / "small")


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op torch thread for a module of tiny-tensor tests: on a shared 2-core machine,
    torch's thread pool under contention made them ~100x slower (spin-waiting)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


class HardeningRecord:
    """Counts of what the hardening tests tried (fuzzed inputs, kills, ...), keyed by a short
    description. Written as JSON to ``$METAUG_HARDENING_RECORD`` at the end of the session when
    that is set (``benchmarks/hardening_report.py`` does); otherwise only kept in memory."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def add(self, key: str, n: int = 1) -> None:
        self.counts[key] = self.counts.get(key, 0) + n


@pytest.fixture(scope="session")
def hardening_record():
    record = HardeningRecord()
    yield record
    path = os.environ.get("METAUG_HARDENING_RECORD")
    if path:
        import json

        Path(path).write_text(json.dumps(record.counts, indent=1, sort_keys=True) + "\n")
