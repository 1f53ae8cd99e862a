"""The two decisions a re-release makes, as code the shell scripts call
(``python -m metaug_release release beats`` / ``release record``):

- :func:`beats_current`: does a new evaluation beat the one the shipped default folders come
  from? Both weighted k-NN k=200 and the fast linear probe on ``conv`` must be strictly higher
  than those of the evaluation ``benchmarks/current_release.json`` names (a tie keeps the
  release: re-shipping costs repository size and gains nothing).
- :func:`write_current_release`: point ``benchmarks/current_release.json`` at the records a new
  release comes from (record folder, evaluation report, recipe, the folder that was evaluated),
  atomically, keeping its ``_comment`` and any other key.

``benchmarks/campaign_leg.sh`` (step 4) and ``benchmarks/release.sh`` (step 4) run these;
``tests/release/test_release_decisions.py`` checks them."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from metaug_features.atomic import atomic_write_text
from metaug_features.errors import MetAugError

from .paths import CURRENT_RELEASE, REPO, repo_relative
from .records import EncoderEvaluation, load_evaluation

#: What "beats" compares, each on the ``conv`` layer: (name, how to read it from an evaluation).
BEAT_METRICS = {
    "weighted k-NN k=200 (conv)": lambda e: e["conv"].knn[200],
    "fast linear probe (conv)": lambda e: e["conv"].probe,
}


@dataclass(frozen=True)
class Comparison:
    """A new evaluation against the current release's, metric by metric (accuracy in %).

    rows: [(metric name, new value, current value)]; beats: every new value strictly higher."""

    rows: list[tuple[str, float, float]]
    current: str

    @property
    def beats(self) -> bool:
        return all(new > cur for _, new, cur in self.rows)

    def lines(self) -> list[str]:
        """One human-readable line per metric (the scripts print them on stderr)."""
        return [f"{name}: {new:.2f} against the current release's {cur:.2f} ({self.current})"
                for name, new, cur in self.rows]


def read_current_release(path: Path = CURRENT_RELEASE) -> dict[str, Any]:
    """``benchmarks/current_release.json`` as a dict (an error naming the file when it is unreadable)."""
    try:
        record = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise MetAugError(f"cannot read the current-release record {path}: {e}") from None
    if not isinstance(record, dict) or "evaluation" not in record:
        raise MetAugError(f"{path} must be a JSON object with an 'evaluation' key (the released weights' report)")
    return record


def _value(name: str, ev: EncoderEvaluation) -> float:
    try:
        value = BEAT_METRICS[name](ev)
    except KeyError as e:
        raise MetAugError(f"{ev.source}: no {e} result; a release comparison needs {name}") from None
    if value is None:
        raise MetAugError(f"{ev.source}: {name} was not measured (run the evaluation without --no-probe)")
    return float(value)


def compare(new: EncoderEvaluation, current: EncoderEvaluation) -> Comparison:
    """Every :data:`BEAT_METRICS` of ``new`` against ``current``."""
    return Comparison([(name, _value(name, new), _value(name, current)) for name in BEAT_METRICS], current.source)


def beats_current(evaluation: Path, current_release: Path = CURRENT_RELEASE) -> Comparison:
    """The new ``evaluation`` report against the one ``current_release`` names (a path relative
    to the repository, as the record stores it)."""
    record = read_current_release(current_release)
    return compare(load_evaluation(evaluation), load_evaluation(REPO / record["evaluation"]))


def write_current_release(record: Path, evaluation: Path, recipe: Path, evaluated_folder: Path,
                          path: Path = CURRENT_RELEASE) -> Path:
    """Point ``path`` at a new release's records (each stored relative to the repository);
    keys the file already holds (``_comment``) stay. Every named file must exist."""
    for what, p in (("record folder", record), ("evaluation", evaluation), ("recipe", recipe),
                    ("evaluated folder", evaluated_folder)):
        if not Path(p).exists():
            raise MetAugError(f"the {what} {p} does not exist; run the release steps before recording it")
    doc = read_current_release(path) if Path(path).is_file() else {}
    doc.update(record=repo_relative(record), evaluation=repo_relative(evaluation),
               evaluated_folder=repo_relative(evaluated_folder), recipe=repo_relative(recipe))
    atomic_write_text(path, json.dumps(doc, indent=2) + "\n")
    return Path(path)
