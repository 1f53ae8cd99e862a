"""``metaug-push FOLDER --repo-id ORG/NAME``: upload a model folder to the Hugging Face Hub.

Only parses options and calls :mod:`metaug_training.publish`. ``--dry-run`` validates the folder
(config, weights, card metadata) and lists what would be uploaded, without any network call.
"""

from __future__ import annotations

import click

from metaug_features.errors import MetAugError

from ._common import command, handle_errors


@command("metaug-push")
@click.argument("folder", type=click.Path(file_okay=False))
@click.option("--repo-id", required=True, metavar="ORG/NAME", help="Hub model repo (created if missing).")
@click.option("--revision", default=None, help="Branch to push to (created if missing; default: main).")
@click.option("--private", is_flag=True, help="Create the repo as private.")
@click.option("--tag", default=None, metavar="TAG", help="Tag the uploaded commit (e.g. v0.1.0, the revision the built-in aliases pin).")
@click.option("--dry-run", is_flag=True, help="Validate the folder and list what would be uploaded; no network.")
@handle_errors()
def main(folder: str, repo_id: str, revision: str | None, private: bool, tag: str | None, dry_run: bool) -> None:
    """Publish the model folder FOLDER (config.json + model.safetensors + README.md)."""
    from metaug_training.publish import alias_for, push_folder, validate_model_folder

    if dry_run:
        report = validate_model_folder(folder)
        click.echo(report.summary())
        target = f"{repo_id}" + (f" (branch {revision})" if revision else "") + (f", tag {tag}" if tag else "")
        if not report.ok:
            raise MetAugError(f"dry run: {folder} is not publishable ({len(report.errors)} error(s) above)")
        click.echo(f"dry run OK: would push {len(report.files)} file(s) to {target}")
        for line in alias_for(repo_id):
            click.echo(f"alias: {line}")
        return
    result = push_folder(folder, repo_id, revision=revision, private=private, tag=tag)
    click.echo(f"pushed {len(result.files)} file(s) to {result.repo_id}: {result.commit_url}")
    if result.tag:
        click.echo(f"tagged {result.tag}")


if __name__ == "__main__":
    main()
