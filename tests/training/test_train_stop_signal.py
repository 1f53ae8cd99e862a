"""SIGTERM / SIGINT stop a real metaug-train process cleanly: it finishes the current step,
writes the checkpoint of that step and the export, and exits 130 (interrupted, with the --resume
hint); the run then resumes exactly
(tests/training/test_train_resume.py covers resuming from a checkpoint)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from metaug_training.checkpoint import load_checkpoint

from _train_helpers import tiny


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_saves_and_exports(cifar_images, tmp_path, signum):
    out = tmp_path / "run"
    args = tiny(cifar_images, out, "method=cmc", "run.log_every=1", "run.ckpt_every=1000", "run.export=true",
                "optim.epochs=50")
    recipe = tmp_path / "recipe.json"
    recipe.write_text(json.dumps({"method": "cmc"}))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "metaug_cli.train", "--config", str(recipe), *args],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = out / "log.jsonl"
    deadline = time.monotonic() + 240
    try:
        while not (log.exists() and log.read_text().count("\n") >= 2):
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline, "the run logged nothing"
            time.sleep(0.05)
        proc.send_signal(signum)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr
    assert "run the same command with --resume" in stderr
    ckpt = load_checkpoint(out / "checkpoints" / "last.pt")
    steps = [json.loads(line)["step"] for line in log.read_text().splitlines()]
    assert 2 <= ckpt["step"] < 50 * 12 and ckpt["step"] == steps[-1]
    stop = json.loads(log.read_text().splitlines()[-1])
    assert stop["event"] == "stop" and stop["status"] == "signal"
    assert f"signal: step {ckpt['step']}" in stdout and (out / "export" / "model.safetensors").is_file()
