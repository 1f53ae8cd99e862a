"""Where a model reference points: a local folder, a built-in alias, or a Hugging Face Hub repo.

Resolution order (first match wins):
1. an existing local folder;
2. a built-in alias from :data:`MODEL_ALIASES` (name -> Hub repo id + pinned revision);
3. a Hub repo id ``org/name`` with an optional ``@revision``, fetched by ``huggingface_hub``
   into its cache (``cache_dir`` / ``HF_HOME`` as usual; ``HF_HUB_OFFLINE=1`` reads the cache only).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from .errors import ModelNotFoundError

#: The Hub organisation the built-in aliases point to; override with $METAUG_HUB_ORG
#: (e.g. to use a mirror or your own uploads of the same folders).
HUB_ORGANIZATION = os.environ.get("METAUG_HUB_ORG", "metaug-features")

#: Built-in names -> (Hub repo id, pinned revision). The revision is the release tag that
#: ``metaug-push`` creates, so an alias always means the same weights. The same folders ship
#: in this repository under hub/ and can be used directly by path.
MODEL_ALIASES: dict[str, tuple[str, str]] = {
    "cifar10-conv": (f"{HUB_ORGANIZATION}/metaug-alexnet32-cifar10-conv", "v0.1.0"),
    "cifar10-fc": (f"{HUB_ORGANIZATION}/metaug-alexnet32-cifar10-fc", "v0.1.0"),
}

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


def resolve_model_dir(ref: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> Path:
    """Turn a model reference into a local folder (downloading from the Hub if needed).

    Raises:
        ModelNotFoundError: no folder, alias or repo matches, or the Hub cannot be reached
            and the model is not in the cache. The message says what to do.
    """
    path = Path(ref)
    if path.is_dir():
        return path
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
