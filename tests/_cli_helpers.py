"""Helpers shared by the command-line tests."""

from __future__ import annotations


def assert_user_error(res, *needles: str) -> None:
    """``res`` (a click ``Result``) is a user error: exit code 2, exactly one ``Error:`` line and
    no traceback, that line holding every one of ``needles``."""
    assert res.exit_code == 2, res.output + repr(res.exception)
    errors = [line for line in res.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "Traceback" not in res.output, res.output
    for n in needles:
        assert n in errors[0], errors[0]
