"""``metaug-train``'s command line: ``--help`` lists every shipped recipe with its summary, and
the options that stand for a config key take their defaults from the config dataclasses (left
out, the recipe's value stands; given, they override it)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

import metaug_training.trainer
from metaug_cli.train import CONFIG_OPTIONS, main
from metaug_training.config import (
    RECIPES_DIR,
    TrainConfig,
    load_config,
    shipped_recipes,
)
from metaug_training.trainer import TrainResult


def _help() -> str:
    res = CliRunner().invoke(main, ["--help"], terminal_width=200)
    assert res.exit_code == 0, res.output
    return res.output


def _default(key: str):
    section, name = key.split(".")
    return getattr(getattr(TrainConfig(), section), name)


def test_help_lists_every_recipe_file_with_its_summary():
    text = _help()
    files = sorted(RECIPES_DIR.glob("*.json"))
    assert len(files) >= 13
    for path in files:
        summary = json.loads(path.read_text())["_summary"]
        line = next((x for x in text.splitlines() if x.split()[:1] == [path.stem]), None)
        assert line is not None, f"{path.stem} is not listed in metaug-train --help"
        assert line.split(None, 1)[1] == summary


def test_every_shipped_recipe_has_a_one_line_summary():
    """--help shows one line per recipe: each summary exists, has no line break and fits."""
    for name, summary in shipped_recipes().items():
        raw = json.loads((RECIPES_DIR / f"{name}.json").read_text())["_summary"]
        assert summary == raw and "\n" not in raw and 0 < len(raw) <= 50, name
        assert load_config(name) == load_config(RECIPES_DIR / f"{name}.json")  # a note, not a setting


def test_a_new_recipe_file_is_listed_without_other_changes(tmp_path):
    (tmp_path / "mine.json").write_text(json.dumps({"_summary": "my  recipe", "method": "cmc"}))
    (tmp_path / "bare.json").write_text(json.dumps({"method": "oucl"}))
    (tmp_path / "broken.json").write_text("{not json")
    assert shipped_recipes(tmp_path) == {"bare": "", "broken": "", "mine": "my recipe"}


def test_config_options_take_their_defaults_from_the_dataclasses():
    params = {p.name: p for p in main.params}
    text = " ".join(_help().split())
    for option, key in CONFIG_OPTIONS.items():
        default = _default(key)  # raises for a key the config does not have
        param = params[option]
        # None = "not given": the recipe's value stands. Otherwise it is the dataclass's default.
        assert param.default is None or param.default == default, (option, param.default, default)
        if param.default is None:
            assert f"the recipe's, else {default}" in text, f"--{option} help does not show {key}'s default"


@pytest.fixture
def captured(monkeypatch):
    """Runs ``metaug-train`` with ``train`` replaced: returns the configs it was called with."""
    seen: list[TrainConfig] = []

    def fake_train(cfg: TrainConfig, resume: bool = False) -> TrainResult:
        seen.append(cfg)
        return TrainResult(status="finished", step=0, checkpoint=None, export_dir=None)

    monkeypatch.setattr(metaug_training.trainer, "train", fake_train)
    return seen


def test_options_override_the_recipe_only_when_given(tmp_path, captured):
    recipe = tmp_path / "r.json"
    recipe.write_text(json.dumps({"method": "cmc", "run": {"device": "cpu", "out_dir": str(tmp_path / "a"),
                                                            "num_threads": 3, "quiet": True}}))
    runner = CliRunner()
    res = runner.invoke(main, ["--config", str(recipe)])
    assert res.exit_code == 0, res.output
    run = captured[-1].run
    assert (run.device, run.out_dir, run.num_threads, run.quiet) == ("cpu", str(tmp_path / "a"), 3, True)
    # the recipe's run.quiet leaves only the result line (no meta-diagnostics hint)
    assert res.output == "finished: step 0, checkpoint None, export None\n"

    recipe.write_text(json.dumps({"method": "cmc"}))
    res = runner.invoke(main, ["--config", str(recipe), "--device", "auto", "-o", str(tmp_path / "b"), "--threads", "1", "-q"])
    assert res.exit_code == 0, res.output
    run = captured[-1].run
    assert (run.device, Path(run.out_dir), run.num_threads, run.quiet) == ("auto", tmp_path / "b", 1, True)
    res = runner.invoke(main, ["--config", str(recipe), "--threads", "1", "run.num_threads=2"])
    assert res.exit_code == 2 and "run.num_threads is set twice" in res.output
    res = runner.invoke(main, ["--config", str(recipe)])
    assert captured[-1].run == TrainConfig().run and "finished: step 0" in res.output


def test_max_steps_zero_on_the_command_line_says_what_to_write(tmp_path, captured):
    recipe = tmp_path / "r.json"
    recipe.write_text("{}")
    res = CliRunner().invoke(main, ["--config", str(recipe), "run.max_steps=0"])
    assert res.exit_code == 2 and not captured
    assert "run.max_steps" in res.output and "null" in res.output
