"""Where the release records live in a source checkout (the tooling writes into the checkout
it is imported from: ``metaug_training/`` sits at the repository root)."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BENCHMARKS = REPO / "benchmarks"
README = REPO / "README.md"
RESULTS = BENCHMARKS / "RESULTS.md"
HUB = REPO / "hub"
RECIPES = REPO / "metaug_training" / "recipes"
#: The first release (v0.1.0): its evaluations (metaug, cmc, floor), run logs and card files.
FIRST_RELEASE = BENCHMARKS / "release"


def repo_relative(path: Path) -> str:
    """``path`` relative to the repository (POSIX), or absolute when it lies outside."""
    path = Path(path).resolve()
    return path.relative_to(REPO).as_posix() if path.is_relative_to(REPO) else str(path)
