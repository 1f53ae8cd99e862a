"""Defaults written once: ``run.max_steps`` (null = no limit, 0 refused, the old 0 of saved
configs read as null, committed states included), ModelConfig's encoder defaults read from the
library's EncoderConfig, one dataset cache folder and one spelling of A2's feature model."""

from __future__ import annotations

import dataclasses
import inspect
import json
from pathlib import Path

import pytest
from _train_helpers import tiny

from metaug_cli.a2_search import main as a2_search_main
from metaug_features.config import EncoderConfig
from metaug_features.errors import ConfigError
from metaug_training.checkpoint import checkpoint_path, load_checkpoint, save_checkpoint
from metaug_training.config import (
    A2_FEATURE_MODEL,
    DATASET_CACHE_DIR,
    A2Config,
    DataConfig,
    ModelConfig,
    TrainConfig,
    load_config,
    resume_changes,
)
from metaug_training.config.upgrades import SAVED_VALUE_UPGRADES, upgrade_saved
from metaug_training.trainer import train
from metaug_training.vae_train import train_vae

REPO = Path(__file__).resolve().parents[2]
#: Committed resume states (compact state folder) -> the recipe each was trained with.
COMMITTED_STATES = {
    "runs/cifar10-alexnet32-metaug/state": "cifar10-alexnet32-metaug",
    "runs/study/oucl-shared/state": "study-oucl-shared",
    "runs/study/metaug-shared/state": "study-metaug-shared",
    "runs/study/metaug-weighted/state": "study-metaug-weighted",
}


# --------------------------------------------------------------------------- run.max_steps
def test_max_steps_defaults_to_no_limit():
    run = load_config(None).run
    assert run.max_steps is None and run.end_step(5850) == 5850
    assert load_config(None, ["run.max_steps=7"]).run.end_step(5850) == 7
    assert load_config(None, ["run.max_steps=9000"]).run.end_step(5850) == 5850  # never past the schedule
    assert load_config(None, ["run.max_steps=7", "run.max_steps=null"]).run.max_steps is None


@pytest.mark.parametrize("value", ["0", "-3"])
def test_max_steps_zero_or_negative_is_refused_with_the_fix(tmp_path, value):
    """0 once meant "no limit"; now a recipe or an override that says 0 is an error naming null."""
    with pytest.raises(ConfigError) as e:
        load_config(None, [f"run.max_steps={value}"])
    msg = str(e.value)
    assert "'run.max_steps'" in msg and "null" in msg and "run.max_steps=1" in msg, msg
    recipe = tmp_path / "r.json"
    recipe.write_text(json.dumps({"run": {"max_steps": int(value)}}))
    with pytest.raises(ConfigError, match="run.max_steps"):
        load_config(recipe)


def test_saved_zero_reads_as_no_limit_and_new_saves_round_trip():
    old = TrainConfig().to_dict()
    old["run"]["max_steps"] = 0  # what a config saved before issue #55 holds
    assert TrainConfig.from_dict(old).run.max_steps is None
    assert old["run"]["max_steps"] == 0  # the caller's dict is left alone
    for steps in (None, 1, 40):
        cfg = load_config(None, [f"run.max_steps={'null' if steps is None else steps}"])
        assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_every_upgrade_maps_a_value_the_current_version_refuses():
    """An upgrade must never touch a config saved by this version: its old value is one that a
    recipe may not hold."""
    for key, (old, new, why) in SAVED_VALUE_UPGRADES.items():
        with pytest.raises(ConfigError, match=key):
            load_config(None, [f"{key}={json.dumps(old)}"])
        section, name = key.split(".")
        assert upgrade_saved({section: {name: old}}) == {section: {name: new}} and why


@pytest.mark.parametrize("state_dir", sorted(COMMITTED_STATES))
def test_committed_states_still_resume_without_a_limit(state_dir):
    """Every committed state holds the old "max_steps": 0; read back it means all epochs, and its
    recipe (which sets no max_steps) may resume it."""
    state = json.loads((REPO / state_dir / "state.json").read_text())
    assert state["config"]["run"]["max_steps"] == 0
    saved = TrainConfig.from_dict(state["config"])
    total = saved.optim.epochs * int(state["steps_per_epoch"])
    assert saved.run.max_steps is None and saved.run.end_step(total) == total >= int(state["step"])
    current = load_config(COMMITTED_STATES[state_dir])
    assert resume_changes(saved, current) == [] and current.run.end_step(total) == total


def test_committed_run_configs_load():
    for path in sorted(REPO.glob("runs/**/config.json")):
        raw = json.loads(path.read_text())
        cfg = TrainConfig.from_dict(raw)
        assert raw["run"]["max_steps"] == 0 and cfg.run.max_steps is None, path


def test_resuming_an_old_checkpoint_trains_all_epochs(cifar_images, tmp_path):
    """A checkpoint written before the change (config "max_steps": 0) continues to the end of
    the schedule, not to step 0 or 3."""
    args = tiny(cifar_images, tmp_path, "method=cmc", "optim.epochs=1", "optim.milestones=1")
    first = train(load_config(None, args + ["run.max_steps=3"]))
    assert (first.status, first.step) == ("max_steps", 3)
    path = checkpoint_path(tmp_path)
    ckpt = load_checkpoint(path)
    ckpt["config"]["run"]["max_steps"] = 0
    save_checkpoint(path, {k: v for k, v in ckpt.items() if k not in ("format", "version")})
    resumed = train(load_config(None, args), resume=True)
    assert resumed.status == "finished" and resumed.step == 12  # 200 images / 16 = 12 steps


# --------------------------------------------------------------------------- one source each
def test_model_section_defaults_are_the_libraries():
    lib = {f.name: f.default for f in dataclasses.fields(EncoderConfig)}
    ours = {f.name: f.default for f in dataclasses.fields(ModelConfig)}
    assert set(ours) <= set(lib), "every model.* key is an EncoderConfig field"
    assert ours == {name: lib[name] for name in ours}
    built = TrainConfig().encoder_config()
    assert dataclasses.replace(built, provenance={}) == EncoderConfig()


def test_one_dataset_cache_folder():
    assert DataConfig().cache_dir == DATASET_CACHE_DIR
    assert inspect.signature(train_vae).parameters["cache_dir"].default == DATASET_CACHE_DIR
    spelled = [p for p in [*REPO.glob("metaug_training/**/*.py"), *REPO.glob("metaug_cli/*.py")]
               if DATASET_CACHE_DIR in p.read_text(encoding="utf-8")]
    assert spelled == [REPO / "metaug_training" / "config" / "sections.py"]


def test_one_spelling_of_the_a2_feature_model():
    assert A2Config().calibration_model == A2_FEATURE_MODEL
    model = next(p for p in a2_search_main.params if p.name == "model")
    assert model.default == A2_FEATURE_MODEL
    # The old default spelling names the same shipped folder: configs saved with it still
    # compare equal to ones that use the alias (what a resume checks).
    old = A2Config(calibration_model="hub/cifar10-conv")
    assert old == A2Config() and A2Config(calibration_model="./hub/cifar10-conv").calibration_model == "./hub/cifar10-conv"
    assert load_config("cifar10-oucl-a2-perturb").a2.calibration_model == A2_FEATURE_MODEL

