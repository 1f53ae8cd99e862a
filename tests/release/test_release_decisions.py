"""The release tooling as a package of the checkout (``python -m metaug_release``): the decisions
the shell scripts used to make in heredocs are commands (does a new evaluation beat the current
release, the current_release.json writer, the view-generator epoch budget), option defaults come
from one place, and the command follows every metaug command's conventions."""

from __future__ import annotations

import inspect
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from metaug_cli._common import EXIT_CODES
from metaug_features import __version__
from metaug_features.errors import MetAugError
from metaug_release import readme as readme_module
from metaug_release import release_record, reproduce
from metaug_release.cli import main as release_cli
from metaug_release.encoder_eval import BATCH_SIZE, EvalSettings
from metaug_release.paths import BENCHMARKS, REPO
from metaug_release.records import load_evaluation
from metaug_release.view_generator_budget import MAX_EPOCHS, OVERHEAD_S, budget_from_probe, epoch_budget

C2_LEG5 = BENCHMARKS / "campaign" / "c2" / "leg5.json"          # the shipped default pair's evaluation
C1_LEG4 = BENCHMARKS / "campaign" / "leg4.json"                 # campaign 1's, lower on conv
FIRST = BENCHMARKS / "release" / "metaug.json"                  # the first release's, far lower
NO_PROBE = BENCHMARKS / "recipe_study" / "oucl-shared-step1755.json"   # k-NN only


def _record(tmp_path: Path, evaluation: Path) -> Path:
    path = tmp_path / "current_release.json"
    path.write_text(json.dumps({"_comment": "kept", "record": "benchmarks/release",
                                "evaluation": evaluation.relative_to(REPO).as_posix(),
                                "evaluated_folder": "hub/cifar10-fc", "recipe": "x.json"}, indent=2) + "\n")
    return path


# ---------------------------------------------------------------------- beats the current release
def test_beats_needs_both_conv_numbers_strictly_higher(tmp_path):
    new, cur = load_evaluation(C2_LEG5), load_evaluation(C1_LEG4)
    assert new["conv"].knn[200] > cur["conv"].knn[200] and new["conv"].probe > cur["conv"].probe
    assert release_record.beats_current(C2_LEG5, _record(tmp_path, C1_LEG4)).beats
    assert not release_record.beats_current(C1_LEG4, _record(tmp_path, C2_LEG5)).beats
    tie = release_record.beats_current(C2_LEG5, _record(tmp_path, C2_LEG5))   # a tie keeps the release
    assert not tie.beats and [r[1] for r in tie.rows] == [r[2] for r in tie.rows]
    # one number higher and one lower is no
    mixed = release_record.Comparison([("a", 2.0, 1.0), ("b", 1.0, 2.0)], "x")
    assert not mixed.beats and release_record.Comparison([("a", 2.0, 1.0), ("b", 3.0, 2.0)], "x").beats


def test_beats_command_prints_the_answer_and_the_numbers(tmp_path):
    res = CliRunner().invoke(release_cli, ["current-release", "beats", str(FIRST), "--current",
                                           str(_record(tmp_path, C2_LEG5))])
    assert res.exit_code == 0, res.output
    assert res.stdout == "no\n"
    assert "weighted k-NN k=200 (conv): " in res.stderr and "fast linear probe (conv): " in res.stderr
    res = CliRunner().invoke(release_cli, ["current-release", "beats", str(C2_LEG5), "--current",
                                           str(_record(tmp_path, FIRST))])
    assert res.exit_code == 0 and res.stdout == "yes\n", res.output


def test_beats_the_committed_release_is_no_for_its_own_evaluation():
    """The shipped default's own evaluation does not beat itself (against the committed record)."""
    current = json.loads((BENCHMARKS / "current_release.json").read_text())["evaluation"]
    assert not release_record.beats_current(REPO / current).beats


def test_beats_without_a_probe_is_a_clear_error(tmp_path):
    res = CliRunner().invoke(release_cli, ["current-release", "beats", str(NO_PROBE), "--current",
                                           str(_record(tmp_path, C2_LEG5))])
    assert res.exit_code == 2 and "fast linear probe (conv) was not measured" in res.output, res.output


# ---------------------------------------------------------------------- current_release.json
def test_write_current_release_keeps_the_comment_and_stores_repo_paths(tmp_path):
    path = _record(tmp_path, FIRST)
    recipe = REPO / "metaug_training" / "recipes" / "study-oucl-shared.json"
    release_record.write_current_release(BENCHMARKS / "campaign" / "c2", C2_LEG5, recipe, REPO / "hub" / "cifar10-fc",
                                         path)
    doc = json.loads(path.read_text())
    assert doc == {"_comment": "kept", "record": "benchmarks/campaign/c2", "evaluation": "benchmarks/campaign/c2/leg5.json",
                   "evaluated_folder": "hub/cifar10-fc", "recipe": "metaug_training/recipes/study-oucl-shared.json"}
    assert list(doc) == ["_comment", "record", "evaluation", "evaluated_folder", "recipe"]   # the file's order


def test_the_committed_record_is_what_the_writer_writes(tmp_path):
    """Rewriting benchmarks/current_release.json from its own fields gives the same bytes."""
    committed = BENCHMARKS / "current_release.json"
    copy = tmp_path / "current_release.json"
    copy.write_bytes(committed.read_bytes())
    doc = json.loads(committed.read_text())
    release_record.write_current_release(*(REPO / doc[k] for k in ("record", "evaluation", "recipe", "evaluated_folder")),
                                         copy)
    assert copy.read_bytes() == committed.read_bytes()


def test_write_command_refuses_missing_files_and_changes_nothing(tmp_path):
    path = _record(tmp_path, FIRST)
    before = path.read_bytes()
    with pytest.raises(MetAugError, match="the evaluation .* does not exist"):
        release_record.write_current_release(tmp_path, tmp_path / "no.json", FIRST, tmp_path, path)
    assert path.read_bytes() == before
    res = CliRunner().invoke(release_cli, ["current-release", "write", "--record", str(tmp_path), "--evaluation",
                                           str(tmp_path / "no.json"), "--recipe", str(FIRST)])
    assert res.exit_code == 2 and "--evaluation" in res.output


# ---------------------------------------------------------------------- view-generator budget
def _probe(root: Path, row: str, rates: list[float]) -> None:
    (root / row).mkdir(parents=True)
    lines = [json.dumps({"step": 100 * (i + 1), "loss": 1.0, "img_per_s": r}) for i, r in enumerate(rates)]
    (root / row / "log.jsonl").write_text("\n".join([json.dumps({"event": "start"}), *lines]) + "\n")


def test_budget_is_what_the_slowest_row_finishes(tmp_path):
    _probe(tmp_path, "oucl", [10.0, 400.0])    # the last (steady) rate counts
    _probe(tmp_path, "idaa", [5.0, 200.0])
    epochs, rates = budget_from_probe(tmp_path, ["oucl", "idaa"], limit_s=540, spent_s=165)
    assert rates == {"oucl": 400.0, "idaa": 200.0}
    assert epochs == int((540 - 165 - OVERHEAD_S) * 200.0 / 50_000) == 1
    assert epoch_budget({"a": 40.0}, 5400, 100, images=10_000) == int((5400 - 100 - OVERHEAD_S) * 40 / 10_000) == 20
    assert epoch_budget({"a": 1e6}, 5400, 0) == MAX_EPOCHS and epoch_budget({"a": 1.0}, 60, 50) == 1


def test_budget_command_and_its_errors(tmp_path):
    _probe(tmp_path, "oucl", [1000.0])
    res = CliRunner().invoke(release_cli, ["view-generators-budget", str(tmp_path), "oucl", "--limit-s", "3075",
                                           "--spent-s", "0", "--images", "10000"])
    assert res.exit_code == 0 and res.stdout == f"{MAX_EPOCHS}\n", res.output   # 300 epochs' time, capped
    res = CliRunner().invoke(release_cli, ["view-generators-budget", str(tmp_path), "a2", "--limit-s", "1",
                                           "--spent-s", "0"])
    assert res.exit_code == 2 and "no probe log" in res.output and "a2" in res.output


# ---------------------------------------------------------------------- scripts call the commands
@pytest.mark.parametrize("script", ["campaign_leg.sh", "release.sh", "campaign_final.sh", "study_leg.sh",
                                    "view_generators_eval.sh"])
def test_scripts_decide_nothing_in_python_heredocs(script):
    text = (BENCHMARKS / script).read_text()
    assert "<<" not in text and not re.search(r"python3? - ", text), f"{script}: a decision in a heredoc"
    assert not re.search(r"metaug-release (evaluate|campaign|cards|reproduce)", text), "the old console script"
    assert "metaug_training.release" not in text


def test_scripts_call_the_decision_commands():
    leg = (BENCHMARKS / "campaign_leg.sh").read_text()
    assert 'BEATS=$(python -m metaug_release current-release beats "$EVAL")' in leg
    assert "python -m metaug_release current-release write --record \"$OUTDIR\"" in leg
    assert "python -m metaug_release current-release write" in (BENCHMARKS / "release.sh").read_text()
    train = (BENCHMARKS / "view_generators_train.sh").read_text()
    assert "$PY -m metaug_release view-generators-budget" in train and "min(rates.values())" not in train


@pytest.mark.parametrize("script", ["campaign_leg.sh", "release.sh", "campaign_final.sh", "study_leg.sh",
                                    "view_generators_train.sh", "view_generators_eval.sh"])
def test_scripts_parse(script):
    res = subprocess.run(["bash", "-n", str(BENCHMARKS / script)], check=False, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


def test_readme_leg_defaults_to_the_campaigns_last_released_leg(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text((REPO / "README.md").read_text())
    by_default = readme_module.write_readme(None, readme, campaign=2).read_text()
    released = max(r["leg"] for r in readme_module.read_rows(campaign=2) if r.get("released"))
    readme.write_text((REPO / "README.md").read_text())
    assert readme_module.write_readme(released, readme, campaign=2).read_text() == by_default


# ---------------------------------------------------------------------- defaults and conventions
def _options(*path: str) -> dict[str, object]:
    cmd = release_cli
    for name in path:
        cmd = cmd.commands[name]
    return {p.name: p for p in cmd.params}


def test_option_defaults_come_from_the_settings():
    """One source: the evaluate options' defaults are EvalSettings' and reproduce's are its module's."""
    ev = _options("evaluate")
    assert ev["batch_size"].default == EvalSettings.batch_size == BATCH_SIZE
    assert (ev["seed"].default, ev["threads"].default) == (EvalSettings.seed, EvalSettings.threads)
    assert tuple(ev["layers"].default.split(",")) == EvalSettings.layers
    rep = _options("reproduce")
    assert rep["batch_size"].default == BATCH_SIZE and rep["tolerance"].default == reproduce.TOLERANCE
    assert inspect.signature(reproduce.layer_features).parameters["batch_size"].default == BATCH_SIZE
    assert inspect.signature(reproduce.reproduce).parameters["tolerance"].default == reproduce.TOLERANCE


def test_evaluate_requires_data_instead_of_a_temporary_path(tmp_path):
    assert _options("evaluate")["data"].required
    res = CliRunner().invoke(release_cli, ["evaluate", "--model", "cifar10-conv", "-o", str(tmp_path / "o")])
    assert res.exit_code == 2 and "Missing option '--data'" in res.output and not (tmp_path / "o").exists()


def _all_commands(cmd=release_cli, path=()):
    yield path, cmd
    for name, sub in getattr(cmd, "commands", {}).items():
        yield from _all_commands(sub, (*path, name))


@pytest.mark.parametrize("path", [p for p, _ in _all_commands()], ids=lambda p: " ".join(p) or "main")
def test_every_subcommand_help_ends_with_the_exit_codes(path):
    res = CliRunner().invoke(release_cli, [*path, "--help"], prog_name="python -m metaug_release")
    assert res.exit_code == 0, res.output
    assert " ".join(EXIT_CODES.split()) in " ".join(res.output.split())


def test_runs_as_a_module_from_the_checkout_with_its_version():
    res = subprocess.run([sys.executable, "-m", "metaug_release", "--version"], cwd=REPO, check=False, capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0 and res.stdout == f"python -m metaug_release {__version__}\n", res.stderr
    res = subprocess.run([sys.executable, "-m", "metaug_release", "campaign", "cards", "--leg", "99"], cwd=REPO, check=False,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "Error: no row for leg 99" in res.stderr + res.stdout
