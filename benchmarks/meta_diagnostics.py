"""Measure the meta diagnostics of a committed MetAug state (docs/METHODS.md section 6, "Meta
diagnostics"; section 11 quotes the results).

From the compact state of a run (encoder + MAG weights), rebuild the memory bank as a warm
restart does, then train ``--steps`` more iterations of the run's own recipe with a meta step at
every iteration (``metaug.meta_every=1``) and any ``key=value`` overrides (the switches of
docs/METHODS.md, e.g. ``metaug.inner_lr_follows_encoder=true``). The diagnostics are the means
over those meta steps. It also measures, on the first batch and from the state's weights, how
far one MetAug encoder step is from the OUCL step (SGD from zero momentum, the run's lr and
weight decay): ``||step_metaug - step_oucl|| / ||step_oucl||``.

    python benchmarks/meta_diagnostics.py runs/cifar10-alexnet32-metaug --steps 12 \
        --json benchmarks/meta_diagnostics/campaign1-final.json

Writes the JSON record (summary, verdict, command, machine) and the run's log beside it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import shlex
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from metaug_features.atomic import atomic_write_text  # noqa: E402
from metaug_training.compact_state import load_compact_state  # noqa: E402
from metaug_training.config import TrainConfig  # noqa: E402
from metaug_training.config.overrides import apply_overrides  # noqa: E402
from metaug_training.distributed import DistContext  # noqa: E402
from metaug_training.meta_diagnostics_report import read_meta_events, summarise, verdict  # noqa: E402
from metaug_training.methods import encoder_loss, objective_config  # noqa: E402
from metaug_training.objective import metaug_objective  # noqa: E402
from metaug_training.resume import rebuild_bank  # noqa: E402
from metaug_training.trainer import Trainer, load_data  # noqa: E402


def _config(run_dir: Path, out_dir: Path, steps: int, overrides: list[str]) -> tuple[TrainConfig, dict]:
    compact = load_compact_state(run_dir / "state")
    d = json.loads(json.dumps(compact["config"]))
    start = int(compact["step"])
    spe = int(compact["steps_per_epoch"])
    # Past the end of the schedule the cosine lr is 0: stretch the schedule by the few epochs
    # measured, so the encoder and MAGs keep (almost) their final learning rate.
    epochs = max(d["optim"]["epochs"], -(-(start + steps) // spe) + 1)
    apply_overrides(d, (f"optim.epochs={epochs}", f"run.max_steps={start + steps}", "metaug.meta_every=1",
                        f"run.out_dir={out_dir}", "run.quiet=true", "run.export=false", "run.log_every=1000000",
                        "run.ckpt_every=1000000", "run.stop_after_minutes=0", "run.warm_start=",
                        f"data.path={REPO / '../shared/data/cifar10-jpeg.tar.gz'}", *overrides))
    return TrainConfig.from_dict(d), compact


def encoder_step_change(trainer: Trainer, step: int) -> float:
    """``||step_metaug - step_oucl|| / ||step_oucl||`` for one SGD step from zero momentum on
    the batch of ``step``: the encoder gradient of L_tot against that of L(z) alone, plus the same
    weight decay."""
    cfg, state = trainer.cfg, trainer.state
    x, idx, sample_idx = trainer.batch(step)
    params = [p for p in state.encoder.parameters() if p.requires_grad]
    objective = objective_config(cfg)
    steps = []
    for with_mags in (True, False):
        z = state.model(x)
        if with_mags:
            loss, _ = encoder_loss(cfg, state, z, sample_idx, objective)
        else:  # L(z) alone: the OUCL loss of the same scores
            loss, _ = metaug_objective(z, None, state.bank, sample_idx, objective)
        grads = torch.autograd.grad(loss, params)
        wd = cfg.optim.weight_decay
        steps.append(torch.cat([(g + wd * p.detach()).reshape(-1) for g, p in zip(grads, params)]))
    return float((steps[0] - steps[1]).norm() / steps[1].norm())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", type=Path, help="a committed run folder with state/ (compact state)")
    ap.add_argument("--steps", type=int, default=12, help="iterations to train, each with a meta step")
    ap.add_argument("--json", type=Path, required=True, help="where to write the record")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("overrides", nargs="*", help="key=value overrides (the switches)")
    args = ap.parse_intermixed_args()
    torch.set_num_threads(args.threads)
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        out_dir = Path(tmp) / "run"
        cfg, compact = _config(args.run_dir, out_dir, args.steps, args.overrides)
        trainer = Trainer(cfg, load_data(cfg, DistContext()), DistContext())
        state = trainer.state
        state.encoder.load_state_dict(compact["encoder"])
        state.mags.load_state_dict(compact["mags"])
        start = int(compact["step"])
        trainer.start_step = start
        rebuild_bank(trainer, start)
        change = encoder_step_change(trainer, start)
        trainer.run()
        log = out_dir / "log.jsonl"
        events = read_meta_events(log)
        args.json.parent.mkdir(parents=True, exist_ok=True)
        (args.json.with_suffix(".log.jsonl")).write_text(log.read_text())
    summary = summarise(events, last=len(events))
    means = summary["means"]
    weights = args.run_dir / "state" / "weights.safetensors"
    release = args.run_dir / "state" / "release-fc.safetensors"
    record = {
        "command": "python benchmarks/meta_diagnostics.py " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        "date_utc": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
        "state": str(args.run_dir / "state"),
        "state_step": start,
        "state_epoch": compact["epoch"],
        "state_weights_sha256": hashlib.sha256(weights.read_bytes()).hexdigest(),
        # The released fc folder of these weights (model.safetensors), where the state keeps it.
        "weights_sha256": (hashlib.sha256(release.read_bytes()).hexdigest() if release.is_file() else None),
        "meta_steps": len(events),
        "inner_lr": means.get("inner_lr"),
        "delta": cfg.metaug.delta,
        "alpha": cfg.metaug.alpha,
        "reg_c": cfg.metaug.reg_c,
        "overrides": args.overrides,
        "second_order_share": means.get("second_order_share"),
        "cos_z_mag": {v: means.get(f"cos_z_mag/{v}") for v in cfg.model.views},
        "pos_orig": means.get("pos_orig"),
        "pos_aug": means.get("pos_aug"),
        "loss_orig": means.get("loss_orig"),
        "loss_aug_mean": means.get("loss_aug_mean"),
        "aug_orig_loss_ratio": means.get("aug_orig_loss_ratio"),
        "reg": means.get("reg"),
        "encoder_step_relative_change": change,
        "verdict": verdict(summary),
        "minutes": round((time.monotonic() - t0) / 60, 1),
    }
    atomic_write_text(args.json, json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
