"""Kill tests: 20 SIGKILLs of the real process at random (seeded) moments, for an extraction
and for a training run. After each kill the same command is started again; when it is finally
left to finish, its result equals an uninterrupted run's bit for bit."""

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

from test_train_resume import assert_same_state, tiny

KILLS = 20


def _kill_at_random_moments(cmd: list[str], env: dict[str, str], lo: float, hi: float, seed: int) -> dict[str, int]:
    """Start ``cmd`` and SIGKILL it after a random delay in [lo, hi] s, KILLS times (a run that
    finishes before its kill just counts as finished). Returns how many were really killed."""
    rng = random.Random(seed)
    killed = finished = 0
    for _ in range(KILLS):
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        time.sleep(rng.uniform(lo, hi))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            killed += 1
        else:
            assert proc.returncode == 0, proc.stderr.read()[-2000:]
            finished += 1
        proc.wait(timeout=60)
        proc.stderr.close()
    return {"killed": killed, "finished": finished}


@pytest.mark.timeout(600)
def test_extraction_survives_20_kills(cifar_images, tmp_path):
    model = make_model_folder(tmp_path / "model")
    images = tmp_path / "images"  # 2,000 real JPEGs (the 200 test images, 10 copies): enough work
    for i in range(10):           # that 20 random kills cannot let it finish early
        shutil.copytree(cifar_images / "test", images / f"copy{i}")
    args = ["--model", model, "--batch-size", "16", "--chunk-size", "64", "--workers", "0", "--device", "cpu", images]
    ref = run_cli(*args, "--output", tmp_path / "ref")
    assert ref.returncode == 0, ref.stderr
    env = dict(os.environ, OMP_NUM_THREADS="1")
    counts = _kill_at_random_moments(cli_cmd(*args, "--output", tmp_path / "killed"), env, 0.3, 3.0, seed=0)
    assert counts["killed"] >= 15, counts  # most kills land while it runs
    done = run_cli(*args, "--output", tmp_path / "killed")
    assert done.returncode == 0, done.stderr
    assert output_files(tmp_path / "killed") == output_files(tmp_path / "ref")
    assert not (tmp_path / "killed" / ".partial").exists()


@pytest.mark.timeout(900)
def test_training_survives_20_kills(cifar_images, tmp_path):
    overrides = ["method=cmc", "optim.epochs=200", "run.max_steps=2000", "run.ckpt_every=10", "run.log_every=10"]
    recipe = tmp_path / "recipe.json"
    recipe.write_text(json.dumps({"method": "cmc"}))
    env = dict(os.environ, OMP_NUM_THREADS="1")

    def cmd(out):
        return [sys.executable, "-m", "metaug_cli.train", "--config", str(recipe), "--resume",
                *tiny(cifar_images, out, *overrides)]

    ref = subprocess.run(cmd(tmp_path / "ref"), env=env, capture_output=True, text=True, timeout=300)
    assert ref.returncode == 0, ref.stderr[-2000:]
    counts = _kill_at_random_moments(cmd(tmp_path / "killed"), env, 1.0, 5.0, seed=1)
    assert counts["killed"] >= 15, counts
    done = subprocess.run(cmd(tmp_path / "killed"), env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    a = load_checkpoint(tmp_path / "ref" / "checkpoints" / "last.pt")
    b = load_checkpoint(tmp_path / "killed" / "checkpoints" / "last.pt")
    assert a["step"] == b["step"] == 2000
    assert_same_state(a, b)
