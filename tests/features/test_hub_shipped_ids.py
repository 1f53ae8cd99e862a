"""The Hub ids and revisions the cards and aliases advertise resolve offline to the shipped copy,
checked by hash; another revision, or a copy whose bytes differ, is not used."""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from huggingface_hub import constants as hf_constants

from metaug_features import MODEL_ALIASES, ModelNotFoundError, hub, load_encoder
from metaug_features.feature_files import read_feature_set
from metaug_features.hub import SHIPPED_RELEASES, file_sha256, resolve_model_dir

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "examples" / "cifar10-sample"
#: The cards' and README's publishing commands: ``--repo-id ORG/NAME --tag REV``.
_PUSH = re.compile(r"hub/([\w-]+) --repo-id (metaug-features/\S+) --tag (v[\d.]+)")


@pytest.fixture
def offline(tmp_path, monkeypatch) -> Path:
    """A working directory outside the repository, an empty Hugging Face cache, the Hub off."""
    work = tmp_path / "elsewhere"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    # huggingface_hub reads the variables at import; the constants are what its calls consult.
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    return work


def _advertised() -> set[tuple[str, str, str]]:
    """(folder, repo id, revision) that the cards, the README and the aliases name."""
    found = set()
    for text in [(REPO / "README.md").read_text(), *(p.read_text() for p in REPO.glob("hub/*/README.md"))]:
        found |= set(_PUSH.findall(text))
    found |= {(name, repo_id, rev) for name, (repo_id, rev) in MODEL_ALIASES.items()}
    return found


def test_every_advertised_id_names_its_folder_in_the_table():
    advertised = _advertised()
    assert {folder for folder, _, _ in advertised} == set(MODEL_ALIASES)  # the parse found them all
    for folder, repo_id, revision in advertised:
        assert SHIPPED_RELEASES[(repo_id, revision)].folder == folder, (repo_id, revision)


@pytest.mark.parametrize("key", sorted(SHIPPED_RELEASES))
def test_table_hashes_are_the_committed_files(key):
    """The literals cannot drift from hub/: a re-release that changes a file under the same tag
    fails here (give it a new tag and new rows instead)."""
    release = SHIPPED_RELEASES[key]
    folder = REPO / "hub" / release.folder
    assert file_sha256(folder / "config.json") == release.config_sha256
    assert file_sha256(folder / "model.safetensors") == release.weights_sha256


def test_v020_rows_are_the_files_the_last_v020_cards_named():
    """v0.2.0's last release commit (campaign 2's final model, before the v0.3.0 tag) held the
    same bytes as the folders its rows point to."""
    for (repo_id, revision), release in SHIPPED_RELEASES.items():
        if revision != "v0.2.0":
            continue
        for name, expected in (("config.json", release.config_sha256), ("model.safetensors", release.weights_sha256)):
            old_folder = release.folder.replace("-metaug", "")
            r = subprocess.run(["git", "show", f"182da6c:hub/{old_folder}/{name}"], cwd=REPO, capture_output=True,
                               check=False)
            if r.returncode != 0:
                pytest.skip("not a git checkout with the v0.2.0 history")
            assert hashlib.sha256(r.stdout).hexdigest() == expected, (repo_id, name)
            card = subprocess.run(["git", "show", f"182da6c:hub/{old_folder}/README.md"], cwd=REPO,
                                  capture_output=True, text=True, check=True).stdout
            assert f"--repo-id {repo_id} --tag v0.2.0" in card


@pytest.mark.parametrize("key", sorted(SHIPPED_RELEASES))
def test_advertised_id_loads_offline_outside_the_repository(key, offline):
    repo_id, revision = key
    release = SHIPPED_RELEASES[key]
    folder = resolve_model_dir(f"{repo_id}@{revision}")
    assert folder.resolve() == (REPO / "hub" / release.folder).resolve()
    files = sorted(SAMPLE.glob("*/000[0-1].jpg"))[:6]
    by_id = load_encoder(f"{repo_id}@{revision}").extract(files)
    by_alias = load_encoder(release.folder).extract(files)
    assert by_id.shape == (6, by_alias.shape[1]) and torch.equal(by_id, by_alias)


@pytest.mark.parametrize("ref", [
    "metaug-features/metaug-only-oucl-alexnet32-cifar10-conv@v0.1.0",   # not the shipped revision
    "metaug-features/metaug-only-oucl-alexnet32-cifar10-conv@v0.2.0",   # that name had no v0.2.0
    "metaug-features/metaug-only-oucl-alexnet32-cifar10-conv",          # no revision: the Hub's latest
    "someone-else/metaug-only-oucl-alexnet32-cifar10-conv@v0.3.0",      # another org
])
def test_other_revisions_and_ids_go_to_the_hub(ref, offline):
    with pytest.raises(ModelNotFoundError, match="is not in the Hugging Face cache and the Hub cannot be reached"):
        load_encoder(ref)


def test_a_modified_shipped_copy_is_refused(offline, tmp_path, monkeypatch):
    root = tmp_path / "installed"
    shutil.copytree(REPO / "hub" / "cifar10-conv", root / "cifar10-conv")
    weights = root / "cifar10-conv" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1  # one bit of one weight: loadable, but not the release
    weights.write_bytes(bytes(data))
    monkeypatch.setattr(hub, "bundled_models_root", lambda: root)
    ref = "metaug-features/metaug-only-oucl-alexnet32-cifar10-conv@v0.3.0"
    with pytest.raises(hub.ShippedCopyMismatch, match="model.safetensors.* is not that release"):
        hub.shipped_release_dir(*ref.split("@"))
    # load_encoder passes it over for the Hub, which is off: the error says both.
    with pytest.raises(ModelNotFoundError) as err:
        load_encoder(ref)
    message = str(err.value)
    assert "not in the Hugging Face cache" in message and "not used" in message
    assert SHIPPED_RELEASES[tuple(ref.split("@"))].weights_sha256 in message


def test_metaug_extract_resolves_the_advertised_id_offline(offline):
    from metaug_cli.extract import main

    images = offline / "images"
    for f in sorted(SAMPLE.glob("*/0000.jpg"))[:4]:
        (images / f.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(f, images / f.parent.name / f.name)
    ref = "metaug-features/metaug-alexnet32-cifar10-fc@v0.3.0"
    r = CliRunner().invoke(main, ["--model", ref, "-o", "feats", "--workers", "0", str(images)])
    assert r.exit_code == 0, r.output + repr(r.exception)
    got = read_feature_set(offline / "feats")
    expected = load_encoder("cifar10-metaug-fc").extract([images / p for p in got.paths])
    assert got.features.shape == (4, expected.shape[1])
    assert torch.equal(torch.from_numpy(got.features), expected)
