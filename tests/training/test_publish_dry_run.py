"""``dry_run_push``, what ``metaug-push --dry-run`` runs: it logs the folder's summary, the target
and the aliases that pin the repo, refuses a bad repo id before reading the folder and an
unpublishable folder after showing its errors, and the command prints exactly its lines."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner

from metaug_cli.push import main as push_main
from metaug_features import EncoderConfig, save_pretrained
from metaug_features.hub import MODEL_ALIASES
from metaug_features.model import MetAugEncoder
from metaug_training.model_card import render_card
from metaug_training.publish import PublishError, dry_run_push

CFG = EncoderConfig(architecture="alexnet32", width=0.125, views=("l", "ab"))
METRIC = {"task": "image-classification", "dataset": "CIFAR-10 (JPEG q75)", "metric": "accuracy",
          "name": "weighted k-NN k=200 T=0.07 (conv)", "value": 55.13}
RELEASED_ID, RELEASED_TAG = MODEL_ALIASES["cifar10-metaug-conv"]


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_torch_thread):
    yield


@pytest.fixture
def folder(tmp_path):
    torch.manual_seed(0)
    card = render_card(CFG, [METRIC], recipe="cifar10-metaug", budget={"epochs": 2}, hardware="2 CPU cores",
                       repo_id=RELEASED_ID)
    return save_pretrained(MetAugEncoder(CFG).eval(), tmp_path / "model", card=card)


def test_a_valid_folder_logs_the_summary_the_target_and_the_aliases(folder):
    lines: list[str] = []
    report = dry_run_push(folder, RELEASED_ID, revision="main", tag=RELEASED_TAG, log=lines.append)
    assert report.ok and [f for f, _ in report.files] == ["README.md", "config.json", "model.safetensors"]
    assert lines[0] == report.summary() and "weighted k-NN k=200 T=0.07 (conv): 55.13" in lines[0]
    assert lines[1] == f"dry run OK: would push 3 file(s) to {RELEASED_ID} (branch main), tag {RELEASED_TAG}"
    # every alias that pins this repo id, and only those
    pinned = sorted(name for name, (rid, _) in MODEL_ALIASES.items() if rid == RELEASED_ID)
    assert sorted(line.split("alias: ")[1].split(" -> ")[0] for line in lines[2:]) == pinned
    assert f"alias: cifar10-metaug-conv -> {RELEASED_ID}@{RELEASED_TAG}" in lines


def test_an_unaliased_repo_without_branch_or_tag_gets_no_alias_line(folder):
    lines: list[str] = []
    dry_run_push(folder, "my-org/my-model", log=lines.append)
    assert lines[1:] == ["dry run OK: would push 3 file(s) to my-org/my-model"]


def test_an_unpublishable_folder_is_refused_after_its_errors_are_shown(folder):
    (folder / "model.safetensors").unlink()
    lines: list[str] = []
    with pytest.raises(PublishError, match=r"dry run: .*model is not publishable \(1 error\(s\) above\)"):
        dry_run_push(folder, "o/n", log=lines.append)
    assert len(lines) == 1 and "ERROR: model does not load" in lines[0] and "dry run OK" not in lines[0]


@pytest.mark.parametrize("repo_id", ["not a repo", "o/n@v1", "just-a-name"])
def test_a_bad_repo_id_is_refused_first(tmp_path, repo_id):
    """push_folder would refuse it: the dry run says so too, before reading the (missing) folder."""
    lines: list[str] = []
    with pytest.raises(PublishError, match="--repo-id must look like ORG/NAME"):
        dry_run_push(tmp_path / "absent", repo_id, log=lines.append)
    assert lines == []


def test_the_command_prints_exactly_the_logged_lines(folder):
    lines: list[str] = []
    dry_run_push(folder, RELEASED_ID, tag=RELEASED_TAG, log=lines.append)
    res = CliRunner().invoke(push_main, [str(folder), "--repo-id", RELEASED_ID, "--tag", RELEASED_TAG, "--dry-run"])
    assert res.exit_code == 0 and res.output == "".join(line + "\n" for line in lines)
    bad = CliRunner().invoke(push_main, [str(folder), "--repo-id", "o/n@v1", "--dry-run"])
    assert bad.exit_code == 2 and "--repo-id must look like ORG/NAME" in bad.output
