"""Where a model reference points: a local folder, a shipped model, or a Hugging Face Hub repo.

Resolution order (first match wins):
1. an existing local folder (relative to the working directory, or absolute);
2. a shipped model: a built-in alias (``cifar10-conv``) or its repository path
   (``hub/cifar10-conv``) resolves to the copy of the released folder that is installed with
   the package (:func:`bundled_model_dir`), so it works offline from any directory;
3. a built-in alias from :data:`MODEL_ALIASES` whose folder is not shipped: its Hub repo id at
   the pinned revision;
4. a Hub repo id ``org/name`` with an optional ``@revision``, fetched by ``huggingface_hub``
   into its cache (``cache_dir`` / ``HF_HOME`` as usual; ``HF_HUB_OFFLINE=1`` reads the cache only).

Step 2 comes before step 4 because ``hub/cifar10-conv`` is also a valid repo id (org ``hub``):
the README's command must mean the shipped model wherever it is run.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

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
    if name.startswith("./"):
        name = name[2:]
    if name.startswith(SHIPPED_FOLDER_PREFIX):
        name = name[len(SHIPPED_FOLDER_PREFIX):].rstrip("/")
    root = bundled_models_root()
    if name not in MODEL_ALIASES or root is None:
        return None
    folder = root / name
    return folder if (folder / "config.json").is_file() else None


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
        return _snapshot(parsed[0], parsed[1], cache_dir, ref)
    hint = f"; known aliases: {', '.join(sorted(MODEL_ALIASES))}"
    if path.exists():
        raise ModelNotFoundError(f"{ref!r} is a file, not a model folder (a folder holds config.json and model.safetensors)")
    raise ModelNotFoundError(f"no model folder, alias or Hub repo id {ref!r}{hint}")


def _snapshot(repo_id: str, revision: str | None, cache_dir, ref: str) -> Path:
    # Imported lazily: local folders must load even where huggingface_hub is slow to import.
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    local_hint = f" (there is no local folder named {ref!r} either)" if "/" in ref else ""
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
        raise ModelNotFoundError(f"Hub repo {repo_id!r} has no revision {revision!r}") from None
    except (HfHubHTTPError, OSError) as e:
        raise ModelNotFoundError(f"could not download {repo_id!r} from the Hub: {e}{local_hint}") from None
    return Path(folder)
