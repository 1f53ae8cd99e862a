"""Publishing a model folder to the Hugging Face Hub (``metaug-push``).

Two steps with one job each:

- :func:`validate_model_folder` checks a folder offline: config.json parses, the weights load
  into the architecture the config describes, README.md has YAML metadata that
  ``huggingface_hub.ModelCard`` parses, with ``library_name``, tags, datasets, licence and a
  ``model-index`` with at least one eval result; nothing but the model files would be uploaded.
- :func:`push_folder` validates, then checks that a token exists and the Hub is not disabled
  (``HF_HUB_OFFLINE``) *before* any network call, then ``create_repo`` (exist_ok),
  ``upload_folder`` and optionally ``create_tag`` (the release tag the aliases in
  ``metaug_features.hub.MODEL_ALIASES`` are pinned to).

:func:`dry_run_push` is ``metaug-push --dry-run``: the same checks, logged, with no network.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from metaug_features.errors import MetAugError
from metaug_features.hub import parse_hub_ref
from metaug_features.model_io import load_model_dir

#: The files a model folder consists of; everything else in the folder is left out of uploads.
UPLOAD_PATTERNS = ["config.json", "model.safetensors", "model-*.safetensors", "model.safetensors.index.json", "README.md"]
REQUIRED_METADATA = ("library_name", "license", "tags", "datasets")


class PublishError(MetAugError):
    """The folder is not publishable, or the Hub cannot be used (no token, offline)."""


@dataclass
class FolderReport:
    """Outcome of :func:`validate_model_folder`.

    Attributes:
        folder: the folder checked.
        files: [(relative path, bytes)] that an upload would send, sorted.
        ignored: files in the folder that are not part of the model (not uploaded).
        errors: what is wrong (empty = valid).
        eval_results: [(metric name, value)] parsed from the card's model-index.
        architecture / num_parameters: from the loaded encoder (None when it did not load).
    """

    folder: Path
    files: list[tuple[str, int]] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    eval_results: list[tuple[str, float]] = field(default_factory=list)
    architecture: str | None = None
    num_parameters: int | None = None

    @property
    def ok(self) -> bool:
        return not self.errors

    def summary(self) -> str:
        """Human-readable lines: what would be uploaded, the parsed metrics, the errors."""
        lines = [f"folder: {self.folder}"]
        if self.architecture:
            lines.append(f"model: {self.architecture}, {self.num_parameters:,} parameters")
        lines.append("would upload:")
        lines += [f"  {name}  ({size:,} bytes)" for name, size in self.files]
        if self.ignored:
            lines.append("not uploaded (not model files): " + ", ".join(self.ignored))
        if self.eval_results:
            lines.append("card metrics:")
            lines += [f"  {name}: {value}" for name, value in self.eval_results]
        lines += [f"ERROR: {e}" for e in self.errors]
        return "\n".join(lines)


def _matches_upload(rel: str) -> bool:
    import fnmatch

    return any(fnmatch.fnmatch(rel, p) for p in UPLOAD_PATTERNS)


def validate_model_folder(folder: str | os.PathLike) -> FolderReport:
    """Check that ``folder`` is a complete, loadable model folder with a Hub-valid card.
    Never touches the network; never raises for a bad folder (errors go in the report)."""
    root = Path(folder)
    report = FolderReport(folder=root)
    if not root.is_dir():
        report.errors.append(f"{root} is not a folder")
        return report
    for p in sorted(q for q in root.rglob("*") if q.is_file()):
        rel = p.relative_to(root).as_posix()
        if _matches_upload(rel):
            report.files.append((rel, p.stat().st_size))
        else:
            report.ignored.append(rel)
    try:
        enc = load_model_dir(root)
        report.architecture = enc.config.architecture
        report.num_parameters = sum(t.numel() for t in enc.state_dict().values())
    except MetAugError as e:
        report.errors.append(f"model does not load: {e}")
    _check_card(root / "README.md", report)
    return report


def _check_card(path: Path, report: FolderReport) -> None:
    from huggingface_hub import ModelCard

    if not path.is_file():
        report.errors.append("README.md (the model card) is missing; export with --card-metrics")
        return
    try:
        card = ModelCard.load(path)
    except Exception as e:  # noqa: BLE001 -- yaml errors, ValueError from model-index parsing, ...
        report.errors.append(f"README.md metadata does not parse: {type(e).__name__}: {e}")
        return
    data = card.data.to_dict()
    missing = [k for k in REQUIRED_METADATA if not data.get(k)]
    if missing:
        report.errors.append(f"README.md metadata lacks {missing}")
    if data.get("library_name") not in (None, "metaug-features"):
        report.errors.append(f"README.md library_name is {data.get('library_name')!r}, expected 'metaug-features'")
    results = card.data.eval_results or []
    if not results:
        report.errors.append("README.md has no model-index with measured metrics (eval results)")
    for r in results:
        report.eval_results.append((r.metric_name or r.metric_type, r.metric_value))


def hub_token(token: str | None = None) -> str | None:
    """The token to push with: ``token``, else ``HF_TOKEN`` / the saved login (empty = none)."""
    if token:
        return token
    from huggingface_hub import get_token

    return get_token() or None


def hub_offline() -> bool:
    """``HF_HUB_OFFLINE`` as set now (huggingface_hub reads it once at import; we re-read it)."""
    from huggingface_hub import constants

    env = os.environ.get("HF_HUB_OFFLINE")
    if env is not None:
        return env.strip().upper() in {"1", "ON", "YES", "TRUE"}
    return bool(constants.HF_HUB_OFFLINE)


def _check_repo_id(repo_id: str) -> None:
    """PublishError unless ``repo_id`` is a plain ORG/NAME (no revision)."""
    if parse_hub_ref(repo_id) is None or "@" in repo_id:
        raise PublishError(f"--repo-id must look like ORG/NAME, got {repo_id!r}")


def dry_run_push(folder: str | os.PathLike, repo_id: str, *, revision: str | None = None, tag: str | None = None,
                 log: Callable[[str], None] = print) -> FolderReport:
    """``metaug-push --dry-run``: check everything :func:`push_folder` checks before the network
    (the repo id, then the folder) and ``log`` what a push would do: the folder's summary, the
    target, and the built-in aliases that pin ``repo_id``. Never touches the network.

    Returns the folder's report (valid). Raises:
        PublishError: ``repo_id`` is not ORG/NAME (nothing logged), or the folder is not
            publishable (after the summary with its errors is logged).
    """
    _check_repo_id(repo_id)
    report = validate_model_folder(folder)
    log(report.summary())
    if not report.ok:
        raise PublishError(f"dry run: {folder} is not publishable ({len(report.errors)} error(s) above)")
    target = repo_id + (f" (branch {revision})" if revision else "") + (f", tag {tag}" if tag else "")
    log(f"dry run OK: would push {len(report.files)} file(s) to {target}")
    for line in alias_for(repo_id):
        log(f"alias: {line}")
    return report


@dataclass
class PushResult:
    repo_id: str
    revision: str | None
    commit_url: str | None
    tag: str | None
    files: list[str]


def push_folder(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    revision: str | None = None,
    private: bool = False,
    tag: str | None = None,
    token: str | None = None,
    commit_message: str | None = None,
) -> PushResult:
    """Upload a validated model folder to the Hub repo ``repo_id`` (created if missing).

    Raises:
        PublishError: invalid repo id or folder, no token, offline mode, or the Hub is
            unreachable — all raised before anything is created or uploaded.
    """
    _check_repo_id(repo_id)
    report = validate_model_folder(folder)
    if not report.ok:
        raise PublishError("the folder is not publishable:\n" + report.summary())
    tok = hub_token(token)
    if tok is None:
        raise PublishError("no Hugging Face token: run `hf auth login` or set HF_TOKEN (a write token); nothing was uploaded")
    if hub_offline():
        raise PublishError("HF_HUB_OFFLINE is set: unset it to publish; nothing was uploaded")

    from huggingface_hub import HfApi

    api = HfApi(token=tok)
    try:
        # One cheap authenticated call first: no network or a bad token stops us here, before
        # a repo is created.
        api.whoami(token=tok)
    except Exception as e:  # noqa: BLE001 -- any failure of the probe stops the push
        raise PublishError(f"cannot reach the Hugging Face Hub with this token ({type(e).__name__}: {e}); "
                           f"check the network and the token; nothing was uploaded") from None
    api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    if revision is not None:
        api.create_branch(repo_id, branch=revision, exist_ok=True)
    info = api.upload_folder(
        repo_id=repo_id, folder_path=str(folder), revision=revision, allow_patterns=UPLOAD_PATTERNS,
        commit_message=commit_message or f"Upload {Path(folder).name} with metaug-push",
    )
    if tag is not None:
        # Tag the commit just made, so an alias pinned to this tag means exactly these files.
        api.create_tag(repo_id, tag=tag, revision=getattr(info, "oid", None) or revision,
                       tag_message=f"metaug-features release {tag}")
    return PushResult(repo_id=repo_id, revision=revision, commit_url=getattr(info, "commit_url", None),
                      tag=tag, files=[f for f, _ in report.files])


def alias_for(repo_id: str) -> list[str]:
    """Built-in aliases that point at ``repo_id`` (to remind the pusher which tag they pin)."""
    from metaug_features.hub import MODEL_ALIASES

    return [f"{name} -> {rid}@{rev}" for name, (rid, rev) in MODEL_ALIASES.items() if rid == repo_id]

