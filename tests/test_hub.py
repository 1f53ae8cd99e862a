"""Model reference resolution: local folder, alias table, Hub id with revision, offline cache."""

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from metaug_features import MODEL_ALIASES, ModelNotFoundError, build_encoder, save_pretrained
from metaug_features.hub import parse_hub_ref, resolve_model_dir


def test_parse_hub_ref():
    assert parse_hub_ref("org/name") == ("org/name", None)
    assert parse_hub_ref("org/name@v1.0") == ("org/name", "v1.0")
    assert parse_hub_ref("name") is None
    assert parse_hub_ref("a/b/c") is None
    assert parse_hub_ref("org/name@a@b") is None


def test_alias_table_is_pinned():
    assert {"cifar10-conv", "cifar10-fc"} <= set(MODEL_ALIASES)
    for repo_id, revision in MODEL_ALIASES.values():
        assert parse_hub_ref(repo_id) == (repo_id, None) and revision


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
