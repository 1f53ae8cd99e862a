"""Model reference resolution: local folder, alias table, Hub id with revision, offline cache."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from metaug_features import MODEL_ALIASES, ModelNotFoundError, build_encoder, save_pretrained
from metaug_features.hub import RELEASE_TAG, bundled_model_dir, parse_hub_ref, resolve_model_dir

REPO = Path(__file__).resolve().parents[2]


def test_parse_hub_ref():
    assert parse_hub_ref("org/name") == ("org/name", None)
    assert parse_hub_ref("org/name@v1.0") == ("org/name", "v1.0")
    assert parse_hub_ref("name") is None
    assert parse_hub_ref("a/b/c") is None
    assert parse_hub_ref("org/name@a@b") is None


def test_alias_table_is_pinned():
    assert {"cifar10-conv", "cifar10-fc", "cifar10-metaug-conv", "cifar10-metaug-fc"} <= set(MODEL_ALIASES)
    assert len({repo_id for repo_id, _ in MODEL_ALIASES.values()}) == len(MODEL_ALIASES)   # one repo per folder
    for repo_id, revision in MODEL_ALIASES.values():
        assert parse_hub_ref(repo_id) == (repo_id, None) and revision == RELEASE_TAG


@pytest.mark.parametrize("ref", ["cifar10-conv", "hub/cifar10-conv", "./hub/cifar10-conv", "hub/cifar10-conv/"])
def test_shipped_model_resolves_offline_from_any_folder(ref, tmp_path, monkeypatch):
    # A folder without hub/ and an unreachable Hub: the shipped copy is used, nothing is downloaded.
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder = resolve_model_dir(ref)
    # In a checkout the shipped copy is the repository's hub/ (tests/test_wheel_install.py
    # covers the installed package's copy).
    assert folder.resolve() == (REPO / "hub" / "cifar10-conv").resolve()


@pytest.mark.parametrize("ref", ["cifar10-metaug-conv", "hub/cifar10-metaug-conv", "cifar10-metaug-fc"])
def test_metaug_alias_resolves_offline_to_its_bundled_folder(ref, tmp_path, monkeypatch):
    """The MetAug pair (campaign 1) ships beside the default pair: its aliases resolve offline to
    its own folders, never to the default ones; the default aliases stay MetAug (only OUCL)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    name = ref.split("/")[-1]
    folder = resolve_model_dir(ref)
    assert folder.resolve() == (REPO / "hub" / name).resolve() == bundled_model_dir(name).resolve()
    assert MODEL_ALIASES[name][0].endswith(f"/metaug-alexnet32-{name.replace('-metaug', '')}")
    for default in ("cifar10-conv", "cifar10-fc"):
        assert "/metaug-only-oucl-alexnet32-" in MODEL_ALIASES[default][0]
        assert resolve_model_dir(default).resolve() == (REPO / "hub" / default).resolve()


def test_every_alias_is_shipped():
    for name in MODEL_ALIASES:
        folder = bundled_model_dir(name)
        assert folder is not None and (folder / "model.safetensors").is_file(), name
    assert bundled_model_dir("hub/not-a-release") is None and bundled_model_dir("org/cifar10-conv") is None


def test_a_local_folder_named_like_a_shipped_model_wins(tmp_path, monkeypatch):
    torch.manual_seed(0)
    mine = build_encoder(architecture="alexnet32", width=0.125, views=("l", "ab"))
    save_pretrained(mine, tmp_path / "hub" / "cifar10-conv")
    monkeypatch.chdir(tmp_path)
    assert resolve_model_dir("hub/cifar10-conv").resolve() == (tmp_path / "hub" / "cifar10-conv").resolve()


def test_local_folder_wins(tmp_path, monkeypatch):
    (tmp_path / "org" / "name").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert resolve_model_dir("org/name").resolve() == tmp_path / "org" / "name"


def test_unknown_name_lists_aliases(tmp_path):
    with pytest.raises(ModelNotFoundError, match="known aliases: cifar10-conv"):
        resolve_model_dir("no-such-model")
    f = tmp_path / "file.txt"
    f.write_text("x")
    with pytest.raises(ModelNotFoundError, match="is a file"):
        resolve_model_dir(f)


def _run_offline(code: str, cache: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=cache)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True, timeout=120)


def test_offline_and_not_cached_gives_clear_error(tmp_path):
    r = _run_offline(
        """
        from metaug_features import load_encoder, ModelNotFoundError
        try:
            load_encoder("someorg/somemodel@v2")
        except ModelNotFoundError as e:
            print("ERR", e)
        """,
        str(tmp_path / "hf"),
    )
    assert r.returncode == 0, r.stderr
    assert "ERR model someorg/somemodel@v2 is not in the Hugging Face cache" in r.stdout
    assert "there is no local folder" in r.stdout


def test_cached_hub_model_loads_offline(tmp_path):
    # Lay out the Hugging Face cache by hand (models--org--name/{refs,snapshots}), exactly as
    # huggingface_hub leaves it after a download, then load with HF_HUB_OFFLINE=1.
    torch.manual_seed(0)
    enc = build_encoder(architecture="alexnet32", width=0.125, views=("l", "ab")).eval()
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hf" / "hub" / "models--someorg--somemodel"
    save_pretrained(enc, repo / "snapshots" / commit)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "v1").write_text(commit)
    torch.save(enc(torch.zeros(2, 3, 32, 32)), tmp_path / "expected.pt")
    r = _run_offline(
        f"""
        import torch
        from metaug_features import load_encoder
        enc = load_encoder("someorg/somemodel@v1")
        expected = torch.load({str(tmp_path / 'expected.pt')!r}, weights_only=True)
        print("EQUAL", torch.equal(enc(torch.zeros(2, 3, 32, 32)), expected))
        """,
        str(tmp_path / "hf"),
    )
    assert r.returncode == 0, r.stderr
    assert "EQUAL True" in r.stdout


def test_readme_states_hub_status_and_the_pinned_revision():
    readme = (REPO / "README.md").read_text()
    assert "not published on the Hugging Face Hub yet" in readme
    for name, (repo_id, revision) in MODEL_ALIASES.items():
        assert f"metaug-push hub/{name} --repo-id {repo_id} --tag {revision}" in readme
