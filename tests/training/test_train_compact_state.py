"""The committed resume state of a long run (metaug_training/compact_state.py) on a tiny stand-in run:
its round trip, the reuse of a release folder, the warm restart (weights, step, rebuilt bank,
training continues) and that a full checkpoint, when present, still resumes exactly."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from metaug_cli.compact_state import main as compact_cli
from metaug_features.errors import ConfigError
from metaug_training.checkpoint import CheckpointError, load_checkpoint
from metaug_training.compact_state import flat_tensors, load_compact_state, save_compact_state
from metaug_training.config import load_config
from metaug_training.export import export_checkpoint
from metaug_training.trainer import Trainer, load_data, train
from metaug_training.distributed import DistContext

from _train_helpers import assert_same_state, tiny

COMMON = ("method=metaug", "metaug.meta_every=2", "model.views=l,ab,ori")


@pytest.fixture(scope="module")
def stand_in(cifar_images, tmp_path_factory):
    """A tiny MetAug run stopped at step 8 (epoch 0.67 of 12-step epochs) with its checkpoint."""
    root = tmp_path_factory.mktemp("stand_in")
    args = tiny(cifar_images, root / "full", *COMMON)
    train(load_config(None, args + ["run.max_steps=8"]))
    return args, root / "full" / "checkpoints" / "last.pt"


def test_round_trip_float32_is_exact_and_float16_is_rounded(stand_in, tmp_path):
    _, ckpt_path = stand_in
    ckpt = load_checkpoint(ckpt_path)
    exact = flat_tensors(ckpt)
    save_compact_state(ckpt, tmp_path / "fp32", dtype="float32")
    save_compact_state(ckpt, tmp_path / "fp16")
    for sub, cast in (("fp32", lambda t: t), ("fp16", lambda t: t.half().float())):
        state = load_compact_state(tmp_path / sub)
        assert state["step"] == 8 and state["steps_per_epoch"] == 12
        assert state["config"] == ckpt["config"] and state["dataset"] == ckpt["dataset"]
        for module in ("encoder", "mags"):
            assert state[module].keys() == ckpt[module].keys()
            for k, v in ckpt[module].items():
                want = cast(v) if v.is_floating_point() else v
                assert torch.equal(state[module][k], want), (sub, module, k)
    assert len(exact) == len(ckpt["encoder"]) + len(ckpt["mags"])


def test_release_folder_is_reused_not_copied_and_checked(stand_in, tmp_path):
    """Encoder tensors a release folder holds (here float16, truncated after fc) are referenced
    by sha256, the state stores only the rest; a changed release file is refused on load."""
    _, ckpt_path = stand_in
    ckpt = load_checkpoint(ckpt_path)
    release = export_checkpoint(ckpt_path, tmp_path / "release", truncate_after="fc", weights_dtype="float16")
    own = save_compact_state(ckpt, tmp_path / "alone")
    shared = save_compact_state(ckpt, tmp_path / "state", reuse=[release])
    assert shared.reused and all(k.startswith("encoder.") and ".head" not in k for k in shared.reused)
    assert not any(k.startswith("encoder.halves.") and ".fc6." in k for k in shared.stored)
    assert shared.stored_bytes < own.stored_bytes
    a, b = load_compact_state(tmp_path / "alone"), load_compact_state(tmp_path / "state")
    for module in ("encoder", "mags"):
        for k in a[module]:
            assert torch.equal(a[module][k], b[module][k]), k
    record = json.loads((tmp_path / "state" / "state.json").read_text())
    assert record["references"] and "../release/model.safetensors" in record["files"]
    weights = release / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(CheckpointError, match="has changed"):
        load_compact_state(tmp_path / "state")


def test_warm_start_restores_weights_and_rebuilds_the_bank(stand_in, cifar_images, tmp_path):
    """After a warm start the encoder holds the saved weights (BN statistics untouched by the
    rebuild pass), the step is restored, and every bank slot holds the normalised train-mode
    embedding of one of the last epoch's batches: the last batch's slots equal a recomputation."""
    args, ckpt_path = stand_in
    ckpt = load_checkpoint(ckpt_path)
    save_compact_state(ckpt, tmp_path / "state", dtype="float32")
    cfg = load_config(None, tiny(cifar_images, tmp_path / "warm", *COMMON))
    trainer = Trainer(cfg, load_data(cfg, DistContext(device=torch.device("cpu"))))
    init_bank = trainer.state.bank.bank.clone()
    trainer.warm_start(load_compact_state(tmp_path / "state"))
    assert trainer.start_step == 8
    for k, v in trainer.state.encoder.state_dict().items():
        assert torch.equal(v, ckpt["encoder"][k]), k
    bank = trainer.state.bank.bank
    assert torch.allclose(bank.norm(dim=-1), torch.ones(bank.shape[:2]), atol=1e-5)
    assert not (bank == init_bank).all(-1).any(), "a slot kept its random initial value"
    x, idx, _ = trainer.batch(7)  # the last batch before the restart step is written last
    trainer.state.model.train()
    with torch.no_grad():
        z = trainer.state.model(x)
    for i, v in enumerate(trainer.state.bank.views):
        torch.testing.assert_close(bank[i][idx], F.normalize(z[v], dim=1), rtol=0, atol=1e-6)


def test_warm_restart_continues_training_from_the_committed_form(stand_in, cifar_images, tmp_path):
    """metaug-train --resume on an empty run folder with run.warm_start continues at step 8
    (not 0) to the end step, with finite losses."""
    _, ckpt_path = stand_in
    save_compact_state(load_checkpoint(ckpt_path), tmp_path / "state")
    args = tiny(cifar_images, tmp_path / "warm", *COMMON, f"run.warm_start={tmp_path / 'state'}", "run.log_every=1")
    result = train(load_config(None, args + ["run.max_steps=14"]), resume=True)
    assert result.status == "max_steps" and result.step == 14
    rows = [json.loads(line) for line in (tmp_path / "warm" / "log.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in rows if "loss" in r]
    assert steps == list(range(9, 15))
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in rows if "loss" in r)
    stop = [r for r in rows if r.get("event") == "stop"]
    assert stop and stop[-1]["start_step"] == 8 and stop[-1]["step"] == 14


def test_full_checkpoint_wins_over_the_compact_state_and_resumes_exactly(stand_in, cifar_images, tmp_path):
    """With both on the machine, --resume takes the full checkpoint: the result equals an
    uninterrupted run bit for bit."""
    args, ckpt_path = stand_in
    save_compact_state(load_checkpoint(ckpt_path), tmp_path / "state")
    train(load_config(None, tiny(cifar_images, tmp_path / "straight", *COMMON, "run.max_steps=12")))
    part = tiny(cifar_images, tmp_path / "part", *COMMON, f"run.warm_start={tmp_path / 'state'}")
    train(load_config(None, part + ["run.max_steps=5"]))
    train(load_config(None, part + ["run.max_steps=12"]), resume=True)
    assert_same_state(load_checkpoint(tmp_path / "straight" / "checkpoints" / "last.pt"),
                      load_checkpoint(tmp_path / "part" / "checkpoints" / "last.pt"))


def test_warm_start_refuses_another_run(stand_in, cifar_images, tmp_path):
    _, ckpt_path = stand_in
    save_compact_state(load_checkpoint(ckpt_path), tmp_path / "state")
    other = tiny(cifar_images, tmp_path / "other", *COMMON, "model.width=0.25", f"run.warm_start={tmp_path / 'state'}")
    with pytest.raises(ConfigError, match="model.width"):
        train(load_config(None, other + ["run.max_steps=10"]), resume=True)
    (tmp_path / "state" / "weights.safetensors").write_bytes(b"garbage")
    same = tiny(cifar_images, tmp_path / "same", *COMMON, f"run.warm_start={tmp_path / 'state'}")
    with pytest.raises(CheckpointError, match="weights.safetensors has changed"):
        train(load_config(None, same + ["run.max_steps=10"]), resume=True)


def test_cli_writes_a_loadable_state(stand_in, tmp_path):
    _, ckpt_path = stand_in
    res = CliRunner().invoke(compact_cli, [str(ckpt_path), "-o", str(tmp_path / "state")])
    assert res.exit_code == 0, res.output
    assert "compact state of step 8" in res.output
    assert load_compact_state(tmp_path / "state")["step"] == 8
    res = CliRunner().invoke(compact_cli, [str(tmp_path / "nope.pt"), "-o", str(tmp_path / "s2")])
    assert res.exit_code != 0 and "no checkpoint" in res.output
