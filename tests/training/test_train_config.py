"""Training config: the defaults of docs/METHODS.md, recipe files, dotted overrides, strict validation, schedule."""

from __future__ import annotations

import json
import math

import pytest

from metaug_features.errors import ConfigError
from metaug_training.config import (
    RECIPES_DIR,
    TrainConfig,
    diff_keys,
    expand_aug_terms,
    load_config,
    parse_override,
)
from metaug_training.methods import objective_config
from metaug_training.schedule import lr_factor


def test_defaults_are_the_spec_values():
    c = TrainConfig()
    assert c.method == "metaug"
    assert c.data.crop_scale == (0.2, 1.0) and c.data.flip is True
    assert c.model.views == ("l", "ab", "ori") and c.model.ori_space == "lab" and c.model.embedding_dim == 128
    assert (c.bank.num_negatives, c.bank.momentum) == (4096, 0.5)
    assert (c.loss.temperature, c.loss.beta, c.loss.margin, c.loss.weighting) == (0.07, 16.0, None, "none")
    assert (c.loss.gamma, c.loss.phi_dec) == (0.4, 6.0)
    mg = c.metaug
    assert (mg.delta, mg.alpha, mg.aug_terms, mg.reg_mode, mg.reg_c, mg.reg_where) == (1e-5, 1e-11, "code", "large", 1e-4, "mag")
    assert (mg.inner_lr, mg.meta_every, mg.lr, mg.momentum, mg.weight_decay) == (1e-3, 1, 0.03, 0.9, 1e-4)
    o = c.optim
    assert (o.optimizer, o.batch_size, o.epochs, o.lr, o.momentum, o.weight_decay) == ("sgd", 64, 300, 0.03, 0.9, 1e-4)
    assert (o.schedule, o.milestones, o.lr_decay) == ("step", (120, 160, 200), 0.1)


def test_recipe_file_and_overrides(tmp_path):
    recipe = tmp_path / "r.json"
    recipe.write_text(json.dumps({"_comment": "notes are ignored", "method": "cmc", "optim": {"lr": 0.05, "epochs": 3},
                                  "model": {"views": ["l", "ab"], "width": 1}}))
    c = load_config(recipe, ["optim.lr=0.1", "optim.batch_size=32", "data.flip=false", "loss.margin=0.3",
                             "optim.milestones=[2, 3]", "model.width=0.25", "metaug.aug_terms=[\"l\", \"ab+l\"]"])
    assert c.method == "cmc" and c.optim.epochs == 3
    assert c.optim.lr == 0.1 and isinstance(c.optim.batch_size, int) and c.optim.batch_size == 32
    assert c.data.flip is False and c.loss.margin == 0.3 and c.optim.milestones == (2, 3)
    assert c.model.width == 0.25 and isinstance(c.model.width, float) and c.model.views == ("l", "ab")
    assert expand_aug_terms(c.metaug.aug_terms, c.model.views) == (("l",), ("l", "ab"))
    # comma lists and null
    c2 = load_config(recipe, ["model.views=l,ab,ori", "loss.margin=null"])
    assert c2.model.views == ("l", "ab", "ori") and c2.loss.margin is None


def test_round_trip_through_dict_and_json():
    c = load_config(None, ["method=oucl", "loss.margin=0.2", "optim.schedule=cosine", "metaug.aug_terms=[\"l+ab\"]"])
    d = json.loads(json.dumps(c.to_dict()))
    assert TrainConfig.from_dict(d) == c


@pytest.mark.parametrize("name", ["cifar10-cmc", "cifar10-oucl", "cifar10-metaug"])
def test_shipped_recipes_load(name):
    c = load_config(name)
    assert c.method == name.split("-")[1]
    assert load_config(RECIPES_DIR / f"{name}.json") == c


@pytest.mark.parametrize("overrides, key", [
    (["optim.lrr=0.1"], "optim.lrr"),
    (["nosuch=1"], "nosuch"),
    (["bank.scoring.x=1"], "bank.scoring"),
    (["optim.lr=fast"], "optim.lr"),
    (["optim.batch_size=3.5"], "optim.batch_size"),
    (["data.flip=maybe"], "data.flip"),
    (["bank.scoring=exact"], "bank.scoring"),
    (["model.views=l,rgb"], "model.views"),
    (["model.views=l"], "model.views"),
    (["model.architecture=vgg"], "model.architecture"),
    (["metaug.meta_every=0"], "metaug.meta_every"),
    (["metaug.reg_where=everywhere"], "metaug.reg_where"),
    (["metaug.aug_terms=[\"l+xyz\"]"], "metaug.aug_terms[0]"),
    (["optim.accum_steps=3"], "optim.accum_steps"),
    (["data.crop_scale=0.5,0.2"], "data.crop_scale"),
    (["data.crop_scale=0.2"], "data.crop_scale"),
    (["loss.margin=2"], "loss.margin"),
])
def test_bad_override_names_the_key(overrides, key):
    with pytest.raises(ConfigError) as e:
        load_config(None, overrides)
    assert repr(key) in str(e.value) or f"'{key}" in str(e.value), str(e.value)


@pytest.mark.parametrize("content, key", [
    ({"optim": {"lr": "0.1"}}, "optim.lr"),
    ({"optim": {"epochs": True}}, "optim.epochs"),
    ({"optim": {"epochs": 2.0}}, "optim.epochs"),
    ({"optim": {"milestones": 120}}, "optim.milestones"),
    ({"optim": {"momentun": 0.9}}, "optim.momentun"),
    ({"optim": 0.1}, "optim"),
    ({"run": {"quiet": "yes"}}, "run.quiet"),
    ({"model": {"views": "l"}}, "model.views"),
])
def test_bad_file_value_names_the_key(tmp_path, content, key):
    p = tmp_path / "bad.json"
    p.write_text(json.dumps(content))
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert f"'{key}'" in str(e.value), str(e.value)


def test_unreadable_or_missing_config(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.json")
    p = tmp_path / "broken.json"
    p.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_config(p)
    with pytest.raises(ConfigError, match="key=value"):
        parse_override("optim.lr")


def test_every_spec_option_is_reachable():
    """Each option of docs/METHODS.md sections 1-6 set away from its default through an override."""
    overrides = {
        "data.crop_scale": "0.3,0.9", "model.views": "l,ab", "model.ori_space": "rgb", "model.architecture": "alexnet224",
        "bank.num_negatives": "1024", "bank.momentum": "0.7", "bank.scoring": "shared",
        "loss.cmc": "nce", "loss.temperature": "0.1", "loss.beta": "8", "loss.margin": "0.25",
        "loss.weighting": "adaptive", "loss.gamma": "0.3", "loss.phi_dec": "5",
        "metaug.delta": "0.01", "metaug.alpha": "0.001", "metaug.aug_terms": "paper", "metaug.reg_mode": "small",
        "metaug.reg_c": "0.5", "metaug.reg_where": "both", "metaug.inner_lr": "0.03", "metaug.meta_every": "4",
        "optim.schedule": "cosine", "optim.lr": "0.05", "run.precision": "bf16", "optim.optimizer": "adam",
        "metaug.reg_detach_thresholds": "true",
    }
    c = load_config(None, [f"{k}={v}" for k, v in overrides.items()])
    default = TrainConfig()
    assert sorted(diff_keys(default, c)) == sorted(overrides)
    obj = objective_config(c)
    mg = obj.metaug
    assert (mg.delta, mg.alpha, mg.reg_mode, mg.reg_c, mg.reg_where) == (0.01, 0.001, "small", 0.5, "both")
    assert mg.reg_detach_thresholds is True
    assert expand_aug_terms(mg.aug_terms, c.model.views) == (("l", "ab"),)
    lo = obj.loss.options
    assert (lo.beta, lo.margin, lo.weighting, lo.gamma, lo.phi_dec) == (8.0, 0.25, "adaptive", 0.3, 5.0)


def test_aug_terms_expansion():
    assert expand_aug_terms("code", ("l", "ab", "ori")) == (("l",), ("ab",), ("ori",), ("l", "ab", "ori"))
    assert expand_aug_terms("paper", ("l", "ab")) == (("l", "ab"),)
    assert expand_aug_terms("none", ("l", "ab")) == ()
    assert expand_aug_terms(("ori+l",), ("l", "ab", "ori")) == (("l", "ori"),)


def test_step_schedule_and_cosine():
    c = load_config(None, ["optim.epochs=300"])
    spe = 10
    # x0.1 at epochs 120, 160, 200 (docs/METHODS.md section 6)
    for epoch, want in [(0, 1.0), (119, 1.0), (120, 0.1), (159, 0.1), (160, 0.01), (200, 0.001), (299, 0.001)]:
        assert lr_factor(c, epoch * spe, spe) == pytest.approx(want)
        assert lr_factor(c, epoch * spe + spe - 1, spe) == pytest.approx(want)
    cos = load_config(None, ["optim.schedule=cosine", "optim.epochs=4"])
    total = 40
    for t in (0, 7, 20, 33, 39):
        assert lr_factor(cos, t, spe) == pytest.approx(0.5 * (1 + math.cos(math.pi * t / total)))
    warm = load_config(None, ["optim.warmup_epochs=1", "optim.epochs=4", "optim.milestones=3"])
    assert [round(lr_factor(warm, t, spe), 6) for t in (0, 4, 9, 10, 29, 30)] == [0.1, 0.5, 1.0, 1.0, 1.0, 0.1]
