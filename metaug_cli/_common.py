"""What every ``metaug-*`` command shares: the exit-code convention (one text, appended to every
``--help``), ``--version``, the ``--output/-o`` and ``--device`` options, the error handling and
how written paths are printed.

Exit codes: 0 success; 1 an unexpected internal error (a bug: Python prints the traceback);
2 an error the user can fix (click's usage errors, and every
:class:`~metaug_features.errors.MetAugError`, shown as one ``Error: ...`` line); 130 interrupted
(Ctrl-C, or SIGTERM, which :func:`handle_errors` turns into the same ``KeyboardInterrupt``).
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import threading
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, TypeVar

import click

from metaug_features import __version__
from metaug_features.device import DEVICE_SPECS, check_device_spec
from metaug_features.errors import MetAugError

F = TypeVar("F", bound=Callable[..., Any])
C = TypeVar("C", bound=click.Command)

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130

EXIT_CODES = """\
Exit codes:
  0    success
  1    internal error (a bug: the traceback is shown)
  2    an error you can fix: bad option or argument, bad input, missing
       model, a failed check (one "Error: ..." line)
  130  interrupted (Ctrl-C or SIGTERM)"""
"""The exit-code convention of every command, as ``--help`` and README.md show it."""

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"]}


# ---------------------------------------------------------------------- commands
def _epilog(extra: str | None) -> str:
    """The exit codes (kept as written: ``\\b``), then a command's own epilog if it has one."""
    return "\b\n" + EXIT_CODES + (f"\n\n{extra}" if extra else "")


class Command(click.Command):
    """A click command whose ``--help`` ends with the exit-code convention."""

    def __init__(self, *args: Any, epilog: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, epilog=_epilog(epilog), **kwargs)


class Group(click.Group):
    """A click group whose ``--help`` and whose subcommands' ``--help`` end with the exit codes."""

    command_class = Command

    def __init__(self, *args: Any, epilog: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, epilog=_epilog(epilog), **kwargs)


def _with_version(cmd: C, prog: str) -> C:
    """Add ``--version`` (printing ``<prog> <version>``) as the last option before ``--help``."""
    click.version_option(__version__, "--version", prog_name=prog, message="%(prog)s %(version)s",
                         help="Print the command name and the metaug-features version, then exit.")(cmd)
    return cmd


def command(prog: str, **kwargs: Any) -> Callable[[Callable[..., Any]], click.Command]:
    """``@click.command`` with the shared conventions: ``-h/--help`` ending with the exit codes,
    and ``--version`` printing ``<prog> <version>``."""

    def decorator(fn: Callable[..., Any]) -> click.Command:
        return _with_version(click.command(cls=Command, context_settings=CONTEXT_SETTINGS, **kwargs)(fn), prog)

    return decorator


def group(prog: str, **kwargs: Any) -> Callable[[Callable[..., Any]], click.Group]:
    """``@click.group`` with the conventions of :func:`command` (its subcommands get the exit codes too)."""

    def decorator(fn: Callable[..., Any]) -> click.Group:
        return _with_version(click.group(cls=Group, context_settings=CONTEXT_SETTINGS, **kwargs)(fn), prog)

    return decorator


# ---------------------------------------------------------------------- errors
class UserError(click.ClickException):
    """An error the user can fix: ``Error: <message>`` on stderr, exit status 2, no traceback."""

    exit_code = EXIT_USER_ERROR


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """While the block runs, SIGTERM raises KeyboardInterrupt like Ctrl-C (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


def interrupted(message: str) -> click.exceptions.Exit:
    """Print ``message`` on stderr; return the exception that exits with status 130."""
    click.echo(f"\n{message}", err=True)
    return click.exceptions.Exit(EXIT_INTERRUPTED)


def handle_errors(on_interrupt: str | Callable[..., str] = "interrupted") -> Callable[[F], F]:
    """Wrap a command's function in the exit-code convention: a MetAugError exits 2 with one
    ``Error:`` line; Ctrl-C or SIGTERM prints ``on_interrupt`` (a text, or a function of the
    command's keyword arguments; say there how to resume where the command can) and exits 130;
    anything else is a bug and keeps its traceback (exit 1)."""

    def decorator(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                with _sigterm_as_interrupt():
                    return fn(*args, **kwargs)
            except MetAugError as e:
                raise UserError(str(e)) from None
            except KeyboardInterrupt:
                raise interrupted(on_interrupt(**kwargs) if callable(on_interrupt) else on_interrupt) from None

        return wrapper  # type: ignore[return-value]

    return decorator


# ---------------------------------------------------------------------- paths
def normalised(path: str | os.PathLike) -> Path:
    """``path`` made absolute and normalised (``./out/../out/x`` -> ``/cwd/out/x``), symlinks kept."""
    return Path(os.path.abspath(os.fspath(path)))


def echo_written(paths: Iterable[str | os.PathLike], quiet: bool = False) -> None:
    """``wrote <path>`` on stderr for each file a command wrote (normalised), unless ``quiet``."""
    if not quiet:
        for p in paths:
            click.echo(f"wrote {normalised(p)}", err=True)


class _OutputOption(click.Option):
    """``--output/-o``; older spellings (``legacy``) still parse but are left out of ``--help``."""

    def __init__(self, param_decls: list[str], legacy: tuple[str, ...] = (), **kwargs: Any) -> None:
        super().__init__([*param_decls, *legacy], **kwargs)
        self.legacy = legacy

    def get_help_record(self, ctx: click.Context) -> tuple[str, str] | None:
        every = self.opts
        self.opts = [o for o in every if o not in self.legacy]
        try:
            return super().get_help_record(ctx)
        finally:
            self.opts = every


class _LegacyArgument(click.Argument):
    """An optional positional argument kept for old scripts; not shown in the usage line."""

    def get_usage_pieces(self, ctx: click.Context) -> list[str]:
        return []


def output_option(help: str, *, default: str | None = None, required: bool = False, file: bool = False,
                  legacy_options: tuple[str, ...] = (), legacy_argument: str | None = None) -> Callable[[F], F]:
    """The ``--output/-o DIR`` option (``-o FILE`` with ``file=True``), passed to the command as
    ``output``: a normalised :class:`~pathlib.Path`, or None when optional and not given.

    ``legacy_options`` (e.g. ``("--out-dir",)``) are older names that still work, hidden from
    ``--help``. ``legacy_argument`` names an optional positional argument after the command's
    other ones, the older way to give the folder: either form may be used, both only if they
    agree. Place this decorator below the command's ``click.argument`` decorators."""

    def decorator(fn: F) -> F:
        @functools.wraps(fn)
        def merged(*args: Any, **kwargs: Any) -> Any:
            output = kwargs.pop("output")
            old = kwargs.pop(legacy_argument) if legacy_argument else None
            if output is not None and old is not None and normalised(output) != normalised(old):
                raise UserError(f"two output folders given: -o {output} and the positional {old}; give one")
            output = output if output is not None else old
            if output is None and required:
                raise click.UsageError("Missing option '--output' / '-o'.")
            return fn(*args, output=normalised(output) if output is not None else None, **kwargs)

        text = help + ("  [required]" if required else "")
        f = click.option("--output", "-o", "output", cls=_OutputOption, legacy=legacy_options, default=default,
                         show_default=default is not None, metavar="FILE" if file else "DIR", help=text,
                         type=click.Path())(merged)  # the library checks it, with a better message
        if legacy_argument:
            f = click.argument(legacy_argument, cls=_LegacyArgument, required=False)(f)
        return f  # type: ignore[return-value]

    return decorator


# ---------------------------------------------------------------------- devices
class DeviceSpec(click.ParamType):
    """``auto | cpu | cuda | cuda:N`` (checked by :func:`metaug_features.device.check_device_spec`;
    whether the GPU exists is checked when the command resolves it)."""

    name = "device"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        try:
            return check_device_spec(value)
        except MetAugError as e:
            self.fail(str(e), param, ctx)


def device_option(default: str | None = "auto", help: str = "") -> Callable[[F], F]:
    """The ``--device`` option: ``auto`` (a CUDA GPU when one is visible, else cpu) | ``cpu`` |
    ``cuda`` | ``cuda:N``."""
    text = f"{DEVICE_SPECS}; auto = the first CUDA GPU when one is visible, else cpu." + (f" {help}" if help else "")
    return click.option("--device", type=DeviceSpec(), default=default, show_default=default is not None,
                        metavar="DEVICE", help=text)
