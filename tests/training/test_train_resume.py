"""Kill at a checkpoint, resume, and end bit-identical to an uninterrupted run (CPU, fixed seeds)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from metaug_features.errors import ConfigError
from metaug_training.checkpoint import CheckpointError, load_checkpoint
from metaug_training.config import load_config
from metaug_training.trainer import train

from _train_helpers import assert_same_state, tiny

@pytest.mark.parametrize("method, extra", [
    ("metaug", ("metaug.meta_every=2",)),
    ("cmc", ("loss.cmc=nce", "model.views=l,ab,ori")),
])
def test_stop_and_resume_equals_uninterrupted(cifar_images, tmp_path, method, extra):
    """Stop after 7 steps (mid-epoch, between two meta steps), resume for the rest, across an
    lr milestone (epoch 1 = step 12): same final states as one run of 20 steps."""
    full = load_config(None, tiny(cifar_images, tmp_path / "full", f"method={method}", "run.max_steps=20", *extra))
    train(full)
    part = tiny(cifar_images, tmp_path / "part", f"method={method}", *extra)
    first = train(load_config(None, part + ["run.max_steps=7"]))
    assert first.status == "max_steps" and first.step == 7
    resumed = train(load_config(None, part + ["run.max_steps=20"]), resume=True)
    assert resumed.step == 20
    assert_same_state(load_checkpoint(tmp_path / "full" / "checkpoints" / "last.pt"),
                      load_checkpoint(tmp_path / "part" / "checkpoints" / "last.pt"))


def test_sigkill_at_a_checkpoint_then_resume(cifar_images, tmp_path):
    """A real kill: metaug-train in a subprocess is SIGKILLed as soon as a checkpoint exists;
    the resumed run ends with the parameters of an uninterrupted run."""
    common = ["method=metaug", "metaug.meta_every=3", "run.ckpt_every=3", "run.log_every=3", "run.max_steps=18"]
    recipe = tmp_path / "recipe.json"
    recipe.write_text(json.dumps({"method": "metaug"}))
    killed_dir = tmp_path / "killed"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "metaug_cli.train", "--config", str(recipe),
                             *tiny(cifar_images, killed_dir, *common)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ckpt = killed_dir / "checkpoints" / "last.pt"
    deadline = time.monotonic() + 240
    try:
        while not ckpt.exists():
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
        proc.stderr.close()
    at_kill = load_checkpoint(ckpt)["step"]
    assert at_kill % 3 == 0 and 3 <= at_kill < 18
    cfg = load_config(recipe, tiny(cifar_images, killed_dir, *common))
    assert train(cfg, resume=True).step == 18
    train(load_config(recipe, tiny(cifar_images, tmp_path / "clean", *common)))
    assert_same_state(load_checkpoint(tmp_path / "clean" / "checkpoints" / "last.pt"), load_checkpoint(ckpt))


def test_resume_refuses_a_different_run(cifar_images, tmp_path):
    base = tiny(cifar_images, tmp_path, "method=cmc", "run.max_steps=2")
    train(load_config(None, base))
    with pytest.raises(ConfigError, match="'optim.lr'"):
        train(load_config(None, base + ["optim.lr=0.1", "run.max_steps=4"]), resume=True)
    # run.* keys may change (here: more steps, another log interval)
    assert train(load_config(None, base + ["run.max_steps=4", "run.log_every=1"]), resume=True).step == 4
    other = tmp_path / "other"
    (other / "cat").mkdir(parents=True)
    for p in sorted((cifar_images / "train" / "cat").iterdir())[:16]:
        (other / "cat" / p.name).write_bytes(p.read_bytes())
    with pytest.raises(CheckpointError, match="dataset differs"):
        train(load_config(None, base + [f"data.path={other}", "run.max_steps=6"]), resume=True)
    (tmp_path / "checkpoints" / "last.pt").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        train(load_config(None, base + ["run.max_steps=6"]), resume=True)
