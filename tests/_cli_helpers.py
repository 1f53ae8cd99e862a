"""Helpers shared by the command-line tests: the user-error check, and the walk over every
console script of pyproject.toml and each of its subcommands."""

from __future__ import annotations

import importlib
import importlib.util
import re
from pathlib import Path

import click


def assert_user_error(res, *needles: str) -> None:
    """``res`` (a click ``Result``) is a user error: exit code 2, exactly one ``Error:`` line and
    no traceback, that line holding every one of ``needles``."""
    assert res.exit_code == 2, res.output + repr(res.exception)
    errors = [line for line in res.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "Traceback" not in res.output, res.output
    for n in needles:
        assert n in errors[0], errors[0]


# ---------------------------------------------------------------------- walking the commands
REPO = Path(__file__).resolve().parents[1]


def console_scripts() -> dict[str, str]:
    """``[project.scripts]`` of pyproject.toml: command name -> "module:attribute"."""
    text = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    section = text.split("[project.scripts]", 1)[1].split("\n[", 1)[0]
    return dict(re.findall(r'^([\w-]+)\s*=\s*"([^"]+)"', section, flags=re.MULTILINE))


#: Commands of the checkout that are no console script of the wheel but follow the same conventions.
CHECKOUT_COMMANDS = {"python -m metaug_release": "metaug_release.cli:main"}


def command_targets() -> dict[str, str]:
    """Every command to check: the console scripts, then :data:`CHECKOUT_COMMANDS`."""
    return {**console_scripts(), **CHECKOUT_COMMANDS}


def importable(targets: dict[str, str]) -> list[str]:
    """The names of ``targets`` whose module exists (a dangling one is a test of its own)."""
    return [n for n, t in targets.items() if importlib.util.find_spec(t.split(":")[0]) is not None]


def script_command(name: str) -> click.Command:
    """The click object a command runs."""
    module, attr = command_targets()[name].split(":")
    return getattr(importlib.import_module(module), attr)


def walk_commands(names) -> list[tuple[str, list[str], click.Command]]:
    """(script, subcommand path, command) for each script of ``names`` and every subcommand of
    a group, at any depth (``metaug-eval knn``), found from the click objects."""
    out = []

    def walk(name: str, path: list[str], cmd: click.Command) -> None:
        out.append((name, path, cmd))
        for sub, c in getattr(cmd, "commands", {}).items():
            walk(name, [*path, sub], c)

    for name in names:
        walk(name, [], script_command(name))
    return out


def command_id(value) -> str | None:
    """pytest ids for (script, path, command) parameters: ``metaug-eval knn``."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return " ".join(value) or "-"
    return None
