"""The parts of the training config package, each on its own: the generic ``key=value`` override
parser, typed building from nested dicts, the sections' own validation, what a resume may change.
(tests/training/test_train_config.py tests the whole: recipes, defaults, overrides end to end.)"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import torch

from metaug_features.errors import ConfigError
from metaug_training.config import (
    A2Config,
    BankConfig,
    DataConfig,
    IDAAConfig,
    LossConfig,
    MetaugConfig,
    ModelConfig,
    OptimConfig,
    OverrideValue,
    RunConfig,
    TrainConfig,
    load_config,
    parse_override,
    resume_changes,
)
from metaug_training.config.coerce import build_dataclass, coerce_value, to_plain
from metaug_training.config.overrides import apply_overrides, set_dotted
from metaug_training.distributed import DistContext, check_ranks_in_sync, tensors_digest
from metaug_training.methods import method_for


# --------------------------------------------------------------------------- overrides
def test_parse_override_splits_at_the_first_equals_and_keeps_text():
    key, value = parse_override(" optim.lr = 0.05 ")
    assert (key, value) == ("optim.lr", "0.05") and isinstance(value, OverrideValue)
    assert parse_override("run.out_dir=a=b") == ("run.out_dir", "a=b")
    assert parse_override("loss.margin=") == ("loss.margin", "")


@pytest.mark.parametrize("item, match", [("optim.lr", "key=value"), ("=3", "empty key"), (" =3", "empty key")])
def test_parse_override_refuses_malformed_items(item, match):
    with pytest.raises(ConfigError, match=match):
        parse_override(item)


def test_set_dotted_creates_sections_and_refuses_to_descend_into_a_value():
    d: dict[str, Any] = {"optim": {"lr": 0.1}}
    set_dotted(d, "optim.epochs", 3)
    set_dotted(d, "run.seed", 7)
    set_dotted(d, "method", "cmc")
    assert d == {"optim": {"lr": 0.1, "epochs": 3}, "run": {"seed": 7}, "method": "cmc"}
    with pytest.raises(ConfigError, match="'optim.lr' is not a section"):
        set_dotted(d, "optim.lr.x", 1)


def test_apply_overrides_later_items_win():
    d = apply_overrides({}, ["optim.lr=0.1", "optim.lr=0.2", "model.views=l,ab"])
    assert d == {"optim": {"lr": "0.2"}, "model": {"views": "l,ab"}}


# --------------------------------------------------------------------------- typed building
@pytest.mark.parametrize("text, tp, want", [
    ("3", int, 3), ("0.5", float, 0.5), ("2", float, 2.0), ("on", bool, True), ("No", bool, False),
    ("abc", str, "abc"), ("l, ab", tuple[str, ...], ("l", "ab")), ("[2, 3]", tuple[int, ...], (2, 3)),
    ("0.1,0.9", tuple[float, float], (0.1, 0.9)), ("null", float | None, None), ("0.3", float | None, 0.3),
    ('["l", "ab+ori"]', Any, ("l", "ab+ori")), ("paper", Any, "paper"),
])
def test_override_text_is_parsed_with_the_field_type(text, tp, want):
    got = coerce_value("k", OverrideValue(text), tp)
    assert got == want and type(got) is type(want)


@pytest.mark.parametrize("value, tp", [
    (True, int), (True, float), (2.0, int), ("0.1", float), (1, bool), (1, str), ([1, 2, 3], tuple[int, int]),
    (0.5, tuple[float, ...]),
])
def test_json_values_need_the_exact_type(value, tp):
    with pytest.raises(ConfigError, match="'sec.key'"):
        coerce_value("sec.key", value, tp)


def test_json_int_is_accepted_for_a_float_and_lists_become_tuples():
    assert coerce_value("k", 2, float) == 2.0 and isinstance(coerce_value("k", 2, float), float)
    assert coerce_value("k", [1, 2], tuple[int, ...]) == (1, 2)
    assert coerce_value("k", ["l", "ab"], Any) == ("l", "ab")


def test_build_dataclass_is_strict_and_fills_defaults():
    built = build_dataclass(OptimConfig, {"lr": 1, "milestones": [5, 9]}, prefix="optim.")
    assert built == dataclasses.replace(OptimConfig(), lr=1.0, milestones=(5, 9))
    with pytest.raises(ConfigError, match="unknown config key 'optim.lrr'"):
        build_dataclass(OptimConfig, {"lrr": 0.1}, prefix="optim.")
    with pytest.raises(ConfigError, match="'optim' must be a JSON object"):
        build_dataclass(OptimConfig, 0.1, prefix="optim.")
    assert to_plain(built)["milestones"] == [5, 9]


# --------------------------------------------------------------------------- sections validate themselves
@pytest.mark.parametrize("section, changes, key", [
    (DataConfig, {"path": ""}, "data.path"),
    (DataConfig, {"limit": -1}, "data.limit"),
    (DataConfig, {"crop_scale": (0.5, 0.2)}, "data.crop_scale"),
    (DataConfig, {"crop_ratio": (2.0, 1.0)}, "data.crop_ratio"),
    (ModelConfig, {"views": ("l",)}, "model.views"),
    (ModelConfig, {"architecture": "vgg"}, "model.architecture"),
    (BankConfig, {"num_negatives": 0}, "bank.num_negatives"),
    (BankConfig, {"momentum": 1.0}, "bank.momentum"),
    (BankConfig, {"scoring": "exact"}, "bank.scoring"),
    (LossConfig, {"cmc": "triplet"}, "loss.cmc"),
    (LossConfig, {"temperature": 0.0}, "loss.temperature"),
    (LossConfig, {"beta": float("inf")}, "loss.beta"),
    (LossConfig, {"margin": 1.5}, "loss.margin"),
    (LossConfig, {"weighting": "circle"}, "loss.weighting"),
    (LossConfig, {"phi_dec": 0.0}, "loss.phi_dec"),
    (MetaugConfig, {"delta": -1.0}, "metaug.delta"),
    (MetaugConfig, {"aug_terms": "all"}, "metaug.aug_terms"),
    (MetaugConfig, {"aug_terms": ()}, "metaug.aug_terms"),
    (MetaugConfig, {"reg_mode": "huge"}, "metaug.reg_mode"),
    (MetaugConfig, {"reg_where": "everywhere"}, "metaug.reg_where"),
    (MetaugConfig, {"reg_scores": "halved"}, "metaug.reg_scores"),
    (MetaugConfig, {"meta_every": 0}, "metaug.meta_every"),
    (IDAAConfig, {"enabled": True}, "idaa.vae"),
    (IDAAConfig, {"steps": 0}, "idaa.steps"),
    (A2Config, {"mode": "sample"}, "a2.mode"),
    (A2Config, {"enabled": True, "vae": "v", "mode": "search"}, "a2.cache"),
    (A2Config, {"target_cosine": 1.0}, "a2.target_cosine"),
    (A2Config, {"tau": 0.0}, "a2.tau"),
    (OptimConfig, {"optimizer": "lamb"}, "optim.optimizer"),
    (OptimConfig, {"batch_size": 1}, "optim.batch_size"),
    (OptimConfig, {"milestones": (5, 3)}, "optim.milestones"),
    (OptimConfig, {"accum_steps": 3}, "optim.accum_steps"),
    (OptimConfig, {"batch_size": 4, "accum_steps": 4}, "optim.accum_steps"),
    (RunConfig, {"out_dir": ""}, "run.out_dir"),
    (RunConfig, {"device": "tpu"}, "run.device"),
    (RunConfig, {"precision": "fp16"}, "run.precision"),
    (RunConfig, {"meta_grad": "hessian"}, "run.meta_grad"),
    (RunConfig, {"log_every": 0}, "run.log_every"),
    (RunConfig, {"stop_after_minutes": -1.0}, "run.stop_after_minutes"),
])
def test_each_section_refuses_a_bad_value_naming_the_key(section, changes, key):
    section()  # the defaults are valid
    with pytest.raises(ConfigError) as e:
        section(**changes)
    assert f"'{key}" in str(e.value), str(e.value)


def test_cross_section_checks_are_made_by_train_config():
    # aug_terms must name the model's views: only the whole config knows both sections
    ok = MetaugConfig(aug_terms=("l+ori",))
    assert TrainConfig(metaug=ok).metaug is ok
    with pytest.raises(ConfigError, match="'metaug.aug_terms\\[0\\]'"):
        TrainConfig(model=ModelConfig(views=("l", "ab")), metaug=ok)
    with pytest.raises(ConfigError, match="'method'"):
        TrainConfig(method="")
    # the name itself is checked against the methods table by every user of the config
    with pytest.raises(ConfigError, match="unknown method 'simclr'; known methods: cmc, oucl, metaug"):
        method_for(TrainConfig(method="simclr").method)


# --------------------------------------------------------------------------- resume
def test_resume_changes_allow_run_and_resumable_keys_only():
    base = load_config(None, ["optim.epochs=5"])
    same_maths = load_config(None, ["optim.epochs=9", "run.seed=3", "data.num_workers=0", "optim.accum_steps=2",
                                    "data.path=elsewhere.tar.gz"])
    assert resume_changes(base, same_maths) == []
    other = load_config(None, ["optim.epochs=5", "optim.lr=0.1", "loss.beta=8"])
    assert resume_changes(base, other) == ["loss.beta", "optim.lr"]


# --------------------------------------------------------------------------- DDP digest
def test_state_digest_is_the_bytes_in_order():
    a, b = torch.arange(4, dtype=torch.float32), torch.ones(2, 3)
    assert tensors_digest([a, b]) == tensors_digest([a.clone(), b.clone()])
    assert tensors_digest([a, b]) != tensors_digest([b, a])
    assert tensors_digest([b.t()]) == tensors_digest([b.t().contiguous()])  # layout does not matter
    # one process: no collective, its own digest
    assert check_ranks_in_sync([a, b], DistContext()) == [tensors_digest([a, b])]
