"""The epoch budget of a view-generator comparison run (``benchmarks/view_generators_train.sh``
step 2; ``python -m metaug_release view-generators-budget``).

Every row (base OUCL, + IDAA, + A2, ...) trains the same number of epochs inside one wall-clock
limit, side by side. A short probe run of every row measures its speed; the budget is what the
slowest row can finish in the time left, less :data:`OVERHEAD_S` for start-up, export and
packing, clamped to [1, :data:`MAX_EPOCHS`]."""

from __future__ import annotations

import json
from pathlib import Path

from metaug_features.errors import MetAugError

#: Seconds kept back from the limit for the rows' start-up, their export and the packing of results.
OVERHEAD_S = 75.0
#: The most epochs a comparison trains (the comparison is a small-budget one; docs/METHODS.md 8-9).
MAX_EPOCHS = 30
#: The CIFAR-10 train split, the images an epoch covers when the run has no data.limit.
CIFAR10_TRAIN_IMAGES = 50_000


def probe_rate(log: Path) -> float:
    """Images per second of a probe row: the last logged ``img_per_s`` of its ``log.jsonl`` (the
    steady part, after the first logging intervals' warm-up)."""
    if not log.is_file():
        raise MetAugError(f"no probe log {log}: did the probe row run?")
    rates = [json.loads(line)["img_per_s"] for line in log.read_text(encoding="utf-8").splitlines()
             if '"img_per_s"' in line]
    if not rates:
        raise MetAugError(f"{log} logs no img_per_s; give the probe more steps than run.log_every")
    return float(rates[-1])


def epoch_budget(rates: dict[str, float], limit_s: float, spent_s: float, images: int = 0) -> int:
    """Epochs every row can train in ``limit_s - spent_s - OVERHEAD_S`` seconds at the slowest of
    ``rates`` (row -> images/s), for ``images`` per epoch (0: the whole CIFAR-10 train split)."""
    if not rates:
        raise MetAugError("no probe rates: name at least one row")
    images = images or CIFAR10_TRAIN_IMAGES
    available = limit_s - spent_s - OVERHEAD_S
    return max(1, min(int(available * min(rates.values()) / images), MAX_EPOCHS))


def budget_from_probe(probe_dir: Path, rows: list[str], limit_s: float, spent_s: float,
                      images: int = 0) -> tuple[int, dict[str, float]]:
    """:func:`epoch_budget` from the probe rows' logs (``probe_dir/<row>/log.jsonl``); also the rates."""
    rates = {row: probe_rate(Path(probe_dir) / row / "log.jsonl") for row in rows}
    return epoch_budget(rates, limit_s, spent_s, images), rates
