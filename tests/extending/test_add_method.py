"""docs/EXTENDING.md, "Add a training method": the recipe's block, run as written and added as a
row of ``METHODS``, trains (CMC's first-step loss, averaged over the view pairs), logs its term,
resumes exactly and records its provenance; an unknown method names the known ones."""

from __future__ import annotations

import json

import pytest
from _doc_blocks import add_recipe_rows
from _train_helpers import assert_same_state, tiny

from metaug_features.errors import ConfigError
from metaug_training.checkpoint import load_checkpoint
from metaug_training.config import load_config
from metaug_training.methods import METHODS, method_for
from metaug_training.trainer import train

HEADING = "Add a training method"


@pytest.fixture
def bank_infonce(monkeypatch):
    """The block's row added to the table for this test only; returns the method."""
    return add_recipe_rows(HEADING, METHODS, monkeypatch, ["bank_infonce"])["NEW_ROWS"]["bank_infonce"]


def _records(out_dir) -> list[dict]:
    recs = [json.loads(line) for line in (out_dir / "log.jsonl").read_text().splitlines()]
    return [r for r in recs if "event" not in r]


def _run(cifar_images, out_dir, method: str, *overrides: str, resume: bool = False):
    cfg = load_config(None, tiny(cifar_images, out_dir, f"method={method}", "loss.cmc=infonce",
                                 "run.log_every=1", *overrides))
    return train(cfg, resume=resume)


def test_first_step_is_cmc_infonce_averaged_over_pairs(bank_infonce, cifar_images, tmp_path):
    """Same seed, same batch, same bank: the toy's first loss is CMC's InfoNCE / 2 (two ordered
    pairs of the views l, ab), and its logged term ``loss_sum`` is CMC's loss itself."""
    _run(cifar_images, tmp_path / "cmc", "cmc", "run.max_steps=1")
    _run(cifar_images, tmp_path / "toy", "bank_infonce", "run.max_steps=1")
    (cmc,), (toy,) = _records(tmp_path / "cmc"), _records(tmp_path / "toy")
    assert toy["loss"] == pytest.approx(cmc["loss"] / 2, rel=1e-6)
    assert toy["loss_sum"] == pytest.approx(cmc["loss"], rel=1e-6)
    assert "loss_sum" not in cmc


def test_trains_resumes_exactly_and_exports_its_provenance(bank_infonce, cifar_images, tmp_path):
    full = _run(cifar_images, tmp_path / "full", "bank_infonce", "run.max_steps=6")
    _run(cifar_images, tmp_path / "part", "bank_infonce", "run.max_steps=3")
    resumed = _run(cifar_images, tmp_path / "part", "bank_infonce", "run.max_steps=6", "run.export=true",
                   resume=True)
    assert full.step == resumed.step == 6
    a, b = load_checkpoint(full.checkpoint), load_checkpoint(resumed.checkpoint)
    assert_same_state(a, b)
    # no extra state: the shipped methods' checkpoint keys are there, empty
    assert a["mags"] is None and a["nce"] is None and a["mag_optimizer"] is None
    assert [r["step"] for r in _records(tmp_path / "full")] == [1, 2, 3, 4, 5, 6]
    prov = json.loads((resumed.export_dir / "config.json").read_text())["provenance"]
    assert prov["method"] == "bank_infonce" and prov["loss"] == "bank_infonce (T=0.07)"


def test_unknown_method_lists_the_known_ones(bank_infonce):
    with pytest.raises(ConfigError, match=r"unknown method 'bank_infonse'.*cmc, oucl, metaug, bank_infonce"):
        method_for("bank_infonse")
    assert method_for("bank_infonce") is bank_infonce
