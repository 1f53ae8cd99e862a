"""Two-process CPU DDP (torchrun, gloo): ranks stay in sync and the result equals a single
process that sees the same global batches as two micro-batches (accum_steps = 2)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from metaug_training.checkpoint import load_checkpoint
from metaug_training.config import load_config
from metaug_training.trainer import train

# Full tier only (python -m pytest -q --run-slow): two-process torchrun-style groups on the CPU.
pytestmark = pytest.mark.slow


def tiny(cifar_images, out_dir, *overrides: str) -> list[str]:
    return [f"data.path={cifar_images}", "data.split=train", "data.cache_dir=", "data.num_workers=0",
            "model.width=0.125", "model.views=l,ab", "bank.num_negatives=32", "optim.batch_size=16",
            "optim.epochs=2", f"run.out_dir={out_dir}", "run.num_threads=1", "run.quiet=true",
            "run.export=false", "run.device=cpu", *overrides]


def run_two_ranks(cifar_images, tmp_path, common: list[str]):
    """torchrun with two CPU ranks into ``tmp_path/ddp``: (empty recipe file, checkpoint).
    Checks that the ranks ended in sync (the final record holds both ranks' state digests,
    written by rank 0 only) and that the checkpoint is a two-rank one."""
    recipe = tmp_path / "recipe.json"
    recipe.write_text("{}")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "metaug_cli.train", "--config", str(recipe), *tiny(cifar_images, tmp_path / "ddp", *common)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=500)
    assert done.returncode == 0, done.stderr[-3000:]
    recs = [json.loads(line) for line in (tmp_path / "ddp" / "log.jsonl").read_text().splitlines()]
    digests = [r for r in recs if "rank_state_sha256" in r]
    assert len(digests) == 1 and len(digests[0]["rank_state_sha256"]) == 2
    assert len(set(digests[0]["rank_state_sha256"])) == 1
    ddp = load_checkpoint(tmp_path / "ddp" / "checkpoints" / "last.pt")
    assert ddp["world_size"] == 2
    return recipe, ddp


@pytest.mark.timeout(600)
def test_two_process_ddp_matches_single_process(cifar_images, tmp_path):
    common = ["method=metaug", "metaug.meta_every=2", "metaug.delta=0.1", "run.max_steps=6", "run.log_every=3"]
    recipe, ddp = run_two_ranks(cifar_images, tmp_path, common)
    assert ddp["step"] == 6

    # one process, the same global batches of 16 split into two micro-batches of 8
    single_cfg = load_config(recipe, tiny(cifar_images, tmp_path / "single", *common, "optim.accum_steps=2"))
    train(single_cfg)
    single = load_checkpoint(tmp_path / "single" / "checkpoints" / "last.pt")
    # The memory bank (every row written from gathered features of both ranks) and the
    # parameters match bit for bit: the per-rank forwards are the micro-batch forwards, and
    # averaging two gradients is exact in either order ((a + b) / 2 == a / 2 + b / 2).
    assert torch.equal(ddp["bank"]["bank"], single["bank"]["bank"])
    changed = (single["bank"]["bank"] != load_checkpoint_bank_init(single_cfg)).any(dim=-1)
    assert changed.sum() == 6 * 16 * 2  # 6 steps x 16 samples x 2 views written
    for name, t in single["encoder"].items():
        if "running" in name or "num_batches" in name:
            continue  # BN running stats: DDP keeps rank 0's, accumulation sees both halves
        assert torch.equal(ddp["encoder"][name], t), name
    for name, t in single["mags"].items():
        if "running" in name or "num_batches" in name:
            continue
        assert torch.equal(ddp["mags"][name], t), name


def load_checkpoint_bank_init(cfg) -> torch.Tensor:
    """The bank a run starts from (seeded init), to count the rows training wrote."""
    from metaug_training.memory_bank import MemoryBank

    g = torch.Generator().manual_seed(cfg.run.seed + 1)
    return MemoryBank(cfg.model.views, 200, cfg.model.embedding_dim, cfg.bank.num_negatives, generator=g).bank


@pytest.mark.timeout(600)
def test_two_process_ddp_with_view_generators_matches_single_process(cifar_images, tmp_path):
    """IDAA (with its separate BN, trained outside the DDP module) and A2 (noise drawn for the
    global batch) under two ranks give the single process's parameters, bit for bit."""
    from metaug_training.vae import IDAAVAE, VAEConfig, save_vae

    torch.manual_seed(0)
    vae = save_vae(IDAAVAE(VAEConfig(channels=16, latent_dim=32)), tmp_path / "vae")
    common = ["method=oucl", "run.max_steps=4", "run.log_every=2", "idaa.enabled=true", f"idaa.vae={vae}",
              "idaa.separate_bn=true", "a2.enabled=true", f"a2.vae={vae}", "a2.sigma=0.5"]
    recipe, ddp = run_two_ranks(cifar_images, tmp_path, common)

    train(load_config(recipe, tiny(cifar_images, tmp_path / "single", *common, "optim.accum_steps=2")))
    single = load_checkpoint(tmp_path / "single" / "checkpoints" / "last.pt")
    assert torch.equal(ddp["bank"]["bank"], single["bank"]["bank"])
    for name, t in single["encoder"].items():
        if "running" in name or "num_batches" in name:
            continue
        assert torch.equal(ddp["encoder"][name], t), name
    idaa_single, idaa_ddp = single["generators"][0], ddp["generators"][0]
    for name, t in idaa_single.items():
        if name.startswith("bn_params."):
            assert torch.equal(idaa_ddp[name], t), name
