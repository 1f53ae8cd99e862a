"""Kill tests: 20 SIGKILLs of the real process at random (seeded) moments, for an extraction
and for a training run. After each kill the same command is started again; every run that
finishes (between kills, and the last one) has the result of an uninterrupted run, bit for bit."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import pytest
from _extract_helpers import cli_cmd, make_model_folder, output_files, run_cli

from metaug_training.checkpoint import load_checkpoint

from _train_helpers import assert_same_state, tiny

# Full tier only (python -m pytest -q --run-slow): 20 SIGKILLs each of a real extraction and a real training run (minutes).
pytestmark = pytest.mark.slow

KILLS = 20


def kill_and_restart(cmd_for, out_base, check_finished, env: dict[str, str], lo: float, hi: float, seed: int) -> dict[str, int]:
    """Start ``cmd_for(out)`` and SIGKILL it after a random delay in [lo, hi] s, then start the
    same command again, until KILLS processes have been killed mid-run.

    A run that finishes before its kill is checked with ``check_finished(out)`` and the next
    start begins a new chain in a new output folder, so exactly KILLS kills land on unfinished
    runs whatever the machine's speed. The last chain is then run to the end and checked too.
    Returns the number of kills and of finished chains.
    """
    rng = random.Random(seed)
    killed = chains = starts = 0
    out = out_base / "chain0"
    while killed < KILLS:
        starts += 1
        assert starts < 10 * KILLS, "runs keep finishing before their kill: make the job longer"
        proc = subprocess.Popen(cmd_for(out), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        time.sleep(rng.uniform(lo, hi))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            killed += 1
        else:
            assert proc.returncode == 0, proc.stderr.read()[-2000:]
            check_finished(out)
            chains += 1
            out = out_base / f"chain{chains}"
        proc.wait(timeout=60)
        proc.stderr.close()
    done = subprocess.run(cmd_for(out), env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    check_finished(out)
    assert_no_process_left(out_base)
    return {"killed": killed, "chains": chains + 1}


def assert_no_process_left(out_base, grace_s: float = 15.0) -> None:
    """No process of the killed runs outlives them (decoding or data-loading workers notice
    that their parent is gone): none whose command line names ``out_base``, within ``grace_s``."""
    needle = os.fsencode(str(out_base))
    deadline = time.monotonic() + grace_s
    while True:
        left = []
        for proc in os.listdir("/proc"):
            try:
                if proc.isdigit() and needle in open(f"/proc/{proc}/cmdline", "rb").read():
                    state = open(f"/proc/{proc}/stat").read().rsplit(")", 1)[1].split()[0]
                    if state not in ("Z", "X"):
                        left.append(int(proc))
            except OSError:
                pass
        if not left:
            return
        assert time.monotonic() < deadline, f"processes {left} of killed runs are still alive"
        time.sleep(0.2)


@pytest.mark.timeout(600)
def test_extraction_survives_20_kills(cifar_images, tmp_path, hardening_record):
    model = make_model_folder(tmp_path / "model")
    images = tmp_path / "images"  # 2,000 real JPEGs (the 200 test images, 10 copies): enough work
    for i in range(10):           # that most random kills land mid-run
        shutil.copytree(cifar_images / "test", images / f"copy{i}")
    # One decoding worker, as by default: a kill also leaves a worker whose parent is gone.
    args = ["--model", model, "--batch-size", "16", "--chunk-size", "64", "--workers", "1", "--device", "cpu", images]
    ref = run_cli(*args, "--output", tmp_path / "ref")
    assert ref.returncode == 0, ref.stderr
    env = dict(os.environ, OMP_NUM_THREADS="1")
    want = output_files(tmp_path / "ref")

    def check(out):
        assert output_files(out) == want
        assert not (out / ".partial").exists()

    # every chain (killed and restarted until it finished) is checked against the reference
    trials = kill_and_restart(lambda out: cli_cmd(*args, "--output", out), tmp_path / "killed", check, env, 0.3, 3.0, seed=0)
    hardening_record.add("kill tests: extraction SIGKILLs, each restarted", trials["killed"])
    hardening_record.add("kill tests: extraction runs finished equal to the uninterrupted one", trials["chains"])


@pytest.mark.timeout(900)
def test_training_survives_20_kills(cifar_images, tmp_path, hardening_record):
    overrides = ["method=cmc", "optim.epochs=200", "run.max_steps=2000", "run.ckpt_every=10", "run.log_every=10"]
    recipe = tmp_path / "recipe.json"
    recipe.write_text(json.dumps({"method": "cmc"}))
    env = dict(os.environ, OMP_NUM_THREADS="1")

    def cmd(out):
        return [sys.executable, "-m", "metaug_cli.train", "--config", str(recipe), "--resume",
                *tiny(cifar_images, out, *overrides)]

    ref = subprocess.run(cmd(tmp_path / "ref"), env=env, capture_output=True, text=True, timeout=300)
    assert ref.returncode == 0, ref.stderr[-2000:]
    a = load_checkpoint(tmp_path / "ref" / "checkpoints" / "last.pt")
    assert a["step"] == 2000

    def check(out):
        b = load_checkpoint(out / "checkpoints" / "last.pt")
        assert b["step"] == 2000
        assert_same_state(a, b)

    trials = kill_and_restart(cmd, tmp_path / "killed", check, env, 1.0, 5.0, seed=1)
    hardening_record.add("kill tests: training SIGKILLs, each restarted", trials["killed"])
    hardening_record.add("kill tests: training runs finished equal to the uninterrupted one", trials["chains"])
