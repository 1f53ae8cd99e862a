"""Where the release records live. ``metaug_release/`` is a package of the source checkout, never
installed by the wheel: it writes into the checkout it is imported from, whose root is this
package's parent folder (stated here once; every other module takes its paths from here)."""

from __future__ import annotations

from pathlib import Path

#: The repository root: the folder that holds ``metaug_release/``, ``benchmarks/`` and ``hub/``.
REPO = Path(__file__).resolve().parent.parent
BENCHMARKS = REPO / "benchmarks"
README = REPO / "README.md"
RESULTS = BENCHMARKS / "RESULTS.md"
HUB = REPO / "hub"
RECIPES = REPO / "metaug_training" / "recipes"
#: The first release (v0.1.0): its evaluations (metaug, cmc, floor), run logs and card files.
FIRST_RELEASE = BENCHMARKS / "release"
#: The record the shipped default folders come from (campaign_leg.sh rewrites it on a re-release).
CURRENT_RELEASE = BENCHMARKS / "current_release.json"


def repo_relative(path: Path) -> str:
    """``path`` relative to the repository (POSIX), or absolute when it lies outside."""
    path = Path(path).resolve()
    return path.relative_to(REPO).as_posix() if path.is_relative_to(REPO) else str(path)
