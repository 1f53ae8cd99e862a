"""``python -m metaug_release``: run from the repository root (``-m`` puts the current folder on
``sys.path``; the package is part of the checkout, not of the installed wheel)."""

from metaug_release.cli import main

if __name__ == "__main__":  # pragma: no cover
    main(prog_name="python -m metaug_release")
