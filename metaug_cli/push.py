"""``metaug-push FOLDER --repo-id ORG/NAME``: upload a model folder to the Hugging Face Hub.

Only parses options and calls :func:`metaug_training.publish.push_folder`, or with ``--dry-run``
:func:`metaug_training.publish.dry_run_push`, which validates the repo id and the folder (config,
weights, card metadata) and lists what would be uploaded, without any network call.
"""

from __future__ import annotations

import click

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
    from metaug_training.publish import dry_run_push, push_folder

    if dry_run:
        dry_run_push(folder, repo_id, revision=revision, tag=tag, log=click.echo)
        return
    result = push_folder(folder, repo_id, revision=revision, private=private, tag=tag)
    click.echo(f"pushed {len(result.files)} file(s) to {result.repo_id}: {result.commit_url}")
    if result.tag:
        click.echo(f"tagged {result.tag}")


if __name__ == "__main__":
    main()
