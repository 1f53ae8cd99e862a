"""Training time and budget of a run, from its ``log.jsonl`` and ``config.json``.

Training minutes are the sum of every logged interval's steps / rate (images/s), so gaps
between sessions, data loading after a restart and evaluation do not count."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from metaug_features.errors import MetAugError


def _read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise MetAugError(f"cannot read {path}: {e}") from None


def log_records(run_dir: Path) -> list[dict[str, Any]]:
    """The records of ``run_dir/log.jsonl``, in order."""
    path = Path(run_dir) / "log.jsonl"
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise MetAugError(f"cannot read the run's log {path}: {e}") from None
    return [json.loads(line) for line in lines if line.strip()]


def run_config(run_dir: Path) -> dict[str, Any]:
    """The resolved config of a run (``run_dir/config.json``)."""
    return _read_json(Path(run_dir) / "config.json")


def interval_steps(step: int, prev_step: int | None, ckpt_every: int) -> int:
    """Steps a logged interval covers. After a restart the first record's step does not exceed
    the last one written before (a kill lost the steps after the last checkpoint), and the
    process resumed from the checkpoint below it: a multiple of ``ckpt_every``."""
    if prev_step is not None and step > prev_step:
        return step - prev_step
    return step - ckpt_every * ((step - 1) // ckpt_every) if prev_step is not None else step


def training_time(records: list[dict[str, Any]], batch_size: int, ckpt_every: int,
                  after_step: int = 0) -> tuple[float, int]:
    """(seconds, steps) of training in the logged intervals (each: steps * batch / images/s),
    counting only records past ``after_step`` (0 = the whole run)."""
    seconds, steps, prev = 0.0, 0, None
    for r in records:
        if "img_per_s" not in r:
            continue
        n = interval_steps(r["step"], prev, ckpt_every)
        prev = r["step"]
        if r["step"] > after_step:
            seconds += n * batch_size / r["img_per_s"]
            steps += n
    return seconds, steps


def minutes_up_to(run_dir: Path, step: int) -> float:
    """Training minutes of the run up to (and including) ``step``, rounded to 0.1."""
    cfg = run_config(run_dir)
    upto = [r for r in log_records(run_dir) if r.get("step", 0) <= step]
    seconds, _ = training_time(upto, cfg["optim"]["batch_size"], cfg["run"]["ckpt_every"])
    return round(seconds / 60, 1)


def run_budget(run_dir: Path) -> dict[str, Any]:
    """Epochs, steps, images/s and wall-clock minutes of a finished training run, from its log."""
    cfg = run_config(run_dir)
    recs = log_records(run_dir)
    steps = [r for r in recs if "step" in r and "img_per_s" in r]
    if len(steps) < 2:
        raise MetAugError(f"{run_dir}/log.jsonl has too few step records")
    first, last = steps[0], steps[-1]
    batch = cfg["optim"]["batch_size"]
    img_per_s = (last["step"] - first["step"]) * batch / (last["time"] - first["time"])
    return {
        "method": cfg["method"],
        "epochs": round(last["epoch"], 2),
        "steps": last["step"],
        "batch_size": batch,
        "schedule": f"{cfg['optim']['schedule']} over {cfg['optim']['epochs']} epochs, lr {cfg['optim']['lr']}",
        "wall_clock_minutes": cfg["run"]["stop_after_minutes"] or None,
        "images_per_second": round(img_per_s, 1),
        "torch_threads": cfg["run"]["num_threads"],
        "meta_every": cfg.get("metaug", {}).get("meta_every") if cfg["method"] == "metaug" else None,
    }
