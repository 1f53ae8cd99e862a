"""Where a model reference points: a local folder, a shipped model, or a Hugging Face Hub repo.

Resolution order (first match wins):
1. an existing local folder (relative to the working directory, or absolute);
2. a shipped model: a built-in alias (``cifar10-conv``) or its repository path
   (``hub/cifar10-conv``) resolves to the copy of the released folder that is installed with
   the package (:func:`bundled_model_dir`), so it works offline from any directory;
3. a built-in alias from :data:`MODEL_ALIASES` whose folder is not shipped: its Hub repo id at
   the pinned revision;
4. a Hub repo id and revision that the cards and aliases advertise for a shipped folder
   (``metaug-features/metaug-only-oucl-alexnet32-cifar10-conv@v0.3.0``, :data:`SHIPPED_RELEASES`):
   the installed copy, offline, once its files' sha256 match the table's (else step 5);
5. a Hub repo id ``org/name`` with an optional ``@revision``, fetched by ``huggingface_hub``
   into its cache (``cache_dir`` / ``HF_HOME`` as usual; ``HF_HUB_OFFLINE=1`` reads the cache only).

Step 2 comes before step 5 because ``hub/cifar10-conv`` is also a valid repo id (org ``hub``):
the README's command must mean the shipped model wherever it is run.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import NamedTuple

from .errors import ModelNotFoundError

#: The Hub organisation the built-in aliases point to; override with $METAUG_HUB_ORG
#: (e.g. to use a mirror or your own uploads of the same folders).
HUB_ORGANIZATION = os.environ.get("METAUG_HUB_ORG", "metaug-features")

#: The release the shipped folders are (bumped whenever hub/ is re-released; it need not follow
#: the package version). ``metaug-push --tag`` with this tag publishes a folder under the
#: revision its alias pins. v0.3.0: the repo id ``metaug-alexnet32-cifar10-*`` now names campaign
#: 1's MetAug weights, where v0.2.0's README would have pushed the OUCL ones under it; the OUCL
#: pair moved to ``metaug-only-oucl-alexnet32-cifar10-*`` and its cards changed. A new tag keeps a
#: pin from ever meaning the other weights.
RELEASE_TAG = "v0.3.0"

#: Built-in names -> (Hub repo id, pinned revision). Each name is also the name of a released
#: folder under hub/ that ships inside the package (see :func:`bundled_model_dir`); the alias
#: resolves to that installed copy, offline. The repo id and revision say where the same folder
#: is (or will be) published with ``metaug-push``; the README says whether it is.
#:
#: - ``cifar10-conv`` / ``cifar10-fc`` (the defaults, the best model measured): "MetAug (only
#:   OUCL)", the MetAug paper's Table 1 name for its OUCL-only ablation (CPU training campaign 2);
#: - ``cifar10-metaug-conv`` / ``cifar10-metaug-fc``: MetAug, the full method with the official
#:   code's values (CPU training campaign 1).
MODEL_ALIASES: dict[str, tuple[str, str]] = {
    "cifar10-conv": (f"{HUB_ORGANIZATION}/metaug-only-oucl-alexnet32-cifar10-conv", RELEASE_TAG),
    "cifar10-fc": (f"{HUB_ORGANIZATION}/metaug-only-oucl-alexnet32-cifar10-fc", RELEASE_TAG),
    "cifar10-metaug-conv": (f"{HUB_ORGANIZATION}/metaug-alexnet32-cifar10-conv", RELEASE_TAG),
    "cifar10-metaug-fc": (f"{HUB_ORGANIZATION}/metaug-alexnet32-cifar10-fc", RELEASE_TAG),
}


class ShippedRelease(NamedTuple):
    """A shipped folder and the sha256 (hex) of the two files that make its features."""

    folder: str
    config_sha256: str
    weights_sha256: str


#: (Hub repo id, revision) -> the shipped folder that is that revision byte for byte, for the ids
#: the cards and aliases advertise (org ``metaug-features``; a mirror set with $METAUG_HUB_ORG is
#: another repo and goes to the Hub). config.json and model.safetensors are compared, not the
#: card, whose prose may change without a release. A re-release that changes either file needs
#: a new tag and new rows: tests/features/test_hub_shipped_ids.py recomputes the hashes from hub/.
#:
#: v0.2.0 was never published; its last cards (commit 182da6c, campaign 2's final model) named
#: under ``metaug-alexnet32-cifar10-*`` the files now shipped as cifar10-conv / cifar10-fc,
#: identical in both files (README: "v0.2.0 would have published the OUCL ones under it").
#: (Its first cards, commit 288529d, before campaign 2, named campaign 1's files, now shipped as
#: cifar10-metaug-*: the tag moved with each re-release, which is why v0.3.0 exists.)
SHIPPED_RELEASES: dict[tuple[str, str], ShippedRelease] = {
    ("metaug-features/metaug-only-oucl-alexnet32-cifar10-conv", "v0.3.0"): ShippedRelease(
        "cifar10-conv",
        "ed2c4b3ab185d3ab9167d8ff7b67a56c759f302af3153c0d9777921c714b9cb3",
        "855d0a7ba5db95340c9792b3486946281a85a1bf199f73a6d24faaa5eaa8a678",
    ),
    ("metaug-features/metaug-only-oucl-alexnet32-cifar10-fc", "v0.3.0"): ShippedRelease(
        "cifar10-fc",
        "f1bd04e9bef541385c862133f27f839bad4bd0e425a40e35f92543c48b267af4",
        "f5b0647638a7c4009c7988c33944ff9eece45d1d2bac0563e1d678f73cadfbf0",
    ),
    ("metaug-features/metaug-alexnet32-cifar10-conv", "v0.3.0"): ShippedRelease(
        "cifar10-metaug-conv",
        "54e4de5ecde09d1668e9a7440a05edf70b7fa16a16c30605b0c4bbb42052db36",
        "d6ff4da56b3e7f85e4535d82313cb5b2c5eb25d43cfb7510e60bb9cd130d5b8b",
    ),
    ("metaug-features/metaug-alexnet32-cifar10-fc", "v0.3.0"): ShippedRelease(
        "cifar10-metaug-fc",
        "30b6e3109f3a5320816e97f26eb7d6ae641341fdbe47e3b688a448a06de6851f",
        "ca9e7eeab5b9858489064599d308fc2ae74fd193d88da6e2a0d27d21c6d8378d",
    ),
    ("metaug-features/metaug-alexnet32-cifar10-conv", "v0.2.0"): ShippedRelease(
        "cifar10-conv",
        "ed2c4b3ab185d3ab9167d8ff7b67a56c759f302af3153c0d9777921c714b9cb3",
        "855d0a7ba5db95340c9792b3486946281a85a1bf199f73a6d24faaa5eaa8a678",
    ),
    ("metaug-features/metaug-alexnet32-cifar10-fc", "v0.2.0"): ShippedRelease(
        "cifar10-fc",
        "f1bd04e9bef541385c862133f27f839bad4bd0e425a40e35f92543c48b267af4",
        "f5b0647638a7c4009c7988c33944ff9eece45d1d2bac0563e1d678f73cadfbf0",
    ),
}

#: The repository folder that holds the released model folders; ``hub/<alias>`` names a shipped one.
SHIPPED_FOLDER_PREFIX = "hub/"

#: Files a model folder may consist of; nothing else is downloaded.
MODEL_FILE_PATTERNS = ["config.json", "model.safetensors", "model*.safetensors", "model.safetensors.index.json", "README.md"]

_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


def parse_hub_ref(ref: str) -> tuple[str, str | None] | None:
    """``"org/name@rev"`` -> ("org/name", "rev"); ``"org/name"`` -> ("org/name", None);
    anything that is not a repo id -> None."""
    repo, _, rev = ref.partition("@")
    if not _REPO_ID.match(repo) or (ref.count("@") > 1):
        return None
    return repo, (rev or None)


def bundled_models_root() -> Path | None:
    """The folder holding the shipped model folders, or None when the package has none.

    - Installed from a wheel or sdist: ``metaug_features/_bundled_models/`` inside the package
      (pyproject maps the repository's ``hub/`` there as package data).
    - A source checkout (editable install, or the repository on ``sys.path``): the repository's
      own ``hub/`` folder beside the package, so what the campaign re-releases is used at once.
    """
    package_dir = Path(__file__).resolve().parent
    for candidate in (package_dir / "_bundled_models", package_dir.parent / "hub"):
        if candidate.is_dir():
            return candidate
    return None


def bundled_model_dir(ref: str | os.PathLike) -> Path | None:
    """The installed copy of a shipped model for ``ref`` (``"cifar10-conv"`` or
    ``"hub/cifar10-conv"``), or None when ``ref`` names no shipped model."""
    name = str(ref).replace(os.sep, "/")
    name = name.removeprefix("./")
    if name.startswith(SHIPPED_FOLDER_PREFIX):
        name = name[len(SHIPPED_FOLDER_PREFIX):].rstrip("/")
    root = bundled_models_root()
    if name not in MODEL_ALIASES or root is None:
        return None
    folder = root / name
    return folder if (folder / "config.json").is_file() else None


class ShippedCopyMismatch(ModelNotFoundError):
    """An id and revision name a shipped folder, but the installed copy's bytes differ."""


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def shipped_release_dir(repo_id: str, revision: str | None) -> Path | None:
    """The installed copy of the shipped folder that ``repo_id@revision`` names, or None when
    the pair is not in :data:`SHIPPED_RELEASES` (or the package ships no such folder).

    Raises:
        ShippedCopyMismatch: the pair names a shipped folder, but its config.json or
            model.safetensors has another sha256 than the table's (a modified installation, or a
            checkout whose hub/ was re-released under the same tag).
    """
    release = SHIPPED_RELEASES.get((repo_id, revision or ""))
    if release is None:
        return None
    folder = bundled_model_dir(release.folder)
    if folder is None:
        return None
    for name, expected in (("config.json", release.config_sha256), ("model.safetensors", release.weights_sha256)):
        path = folder / name
        got = file_sha256(path) if path.is_file() else "missing"
        if got != expected:
            raise ShippedCopyMismatch(
                f"the shipped copy of {repo_id}@{revision} ({path}) is not that release: its sha256 is {got}, "
                f"the release's is {expected}"
            )
    return folder


def resolve_model_dir(ref: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> Path:
    """Turn a model reference into a local folder (downloading from the Hub if needed).

    Raises:
        ModelNotFoundError: no folder, alias or repo matches, or the Hub cannot be reached
            and the model is not in the cache. The message says what to do.
    """
    path = Path(ref)
    if path.is_dir():
        return path
    shipped = bundled_model_dir(ref)
    if shipped is not None:
        return shipped
    ref = str(ref)
    if ref in MODEL_ALIASES:
        repo_id, revision = MODEL_ALIASES[ref]
        return _snapshot(repo_id, revision, cache_dir, ref)
    parsed = parse_hub_ref(ref)
    if parsed is not None:
        # A shipped copy whose bytes differ is never used: the Hub (or its cache) holds the real
        # release; if that fails too, the error says why the shipped copy was passed over.
        try:
            shipped = shipped_release_dir(*parsed)
        except ShippedCopyMismatch as e:
            return _snapshot(parsed[0], parsed[1], cache_dir, ref, note=f" (not used: {e})")
        if shipped is not None:
            return shipped
        return _snapshot(parsed[0], parsed[1], cache_dir, ref)
    hint = f"; known aliases: {', '.join(sorted(MODEL_ALIASES))}"
    if path.exists():
        raise ModelNotFoundError(f"{ref!r} is a file, not a model folder (a folder holds config.json and model.safetensors)")
    raise ModelNotFoundError(f"no model folder, alias or Hub repo id {ref!r}{hint}")


def _snapshot(repo_id: str, revision: str | None, cache_dir, ref: str, note: str = "") -> Path:
    # Imported lazily: local folders must load even where huggingface_hub is slow to import.
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    local_hint = (f" (there is no local folder named {ref!r} either)" if "/" in ref else "") + note
    try:
        folder = snapshot_download(repo_id, revision=revision, cache_dir=cache_dir, allow_patterns=MODEL_FILE_PATTERNS)
    except LocalEntryNotFoundError:
        raise ModelNotFoundError(
            f"model {repo_id}{'@' + revision if revision else ''} is not in the Hugging Face cache and the Hub "
            f"cannot be reached (offline, or HF_HUB_OFFLINE=1){local_hint}. Download it once with network access, "
            "or pass the path of a local model folder."
        ) from None
    except RepositoryNotFoundError:
        raise ModelNotFoundError(f"Hub repo {repo_id!r} does not exist or is private (log in with `hf auth login`){local_hint}") from None
    except RevisionNotFoundError:
        raise ModelNotFoundError(f"Hub repo {repo_id!r} has no revision {revision!r}{note}") from None
    except (HfHubHTTPError, OSError) as e:
        raise ModelNotFoundError(f"could not download {repo_id!r} from the Hub: {e}{local_hint}") from None
    return Path(folder)
