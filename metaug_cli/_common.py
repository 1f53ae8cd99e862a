"""What every ``metaug-*`` command shares: the exit-code convention (one text, appended to every
``--help``), ``--version`` (on every command and subcommand), ``--threads`` and ``-q/--quiet``
(:func:`threads_option`, :func:`quiet_option`: on the command that does the work, and on each
group above it), the ``--output/-o`` and ``--device`` options, the error handling and how
written paths are printed.

Exit codes: 0 success; 1 an unexpected internal error (a bug: Python prints the traceback);
2 an error the user can fix (click's usage errors, and every
:class:`~metaug_features.errors.MetAugError`, shown as one ``Error: ...`` line); 130 interrupted
(Ctrl-C, or SIGTERM, which :func:`handle_errors` turns into the same ``KeyboardInterrupt``).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import os
import signal
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import click
from click.core import ParameterSource

from metaug_features import __version__
from metaug_features.device import DEVICE_SPECS, check_device_spec
from metaug_features.errors import MetAugError

F = TypeVar("F", bound=Callable[..., Any])

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


def _print_version(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    """``--version``: print ``<prog> <version>``, where prog is the console script's name (that
    of the outermost command, also when asked of a subcommand), then exit."""
    if not value or ctx.resilient_parsing:
        return
    root = ctx.find_root()
    click.echo(f"{getattr(root.command, 'prog', None) or root.info_name} {__version__}")
    ctx.exit()


def _version_option() -> click.Option:
    return click.Option(["--version"], is_flag=True, expose_value=False, is_eager=True, callback=_print_version,
                        help="Print the command name and the metaug-features version, then exit.")


class Command(click.Command):
    """A click command whose ``--help`` ends with the exit-code convention and that takes ``--version``."""

    def __init__(self, *args: Any, epilog: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, epilog=_epilog(epilog), **kwargs)
        self.params.append(_version_option())


class Group(click.Group):
    """A click group with the conventions of :class:`Command`, whose subcommands (and sub-groups)
    get them too. Before its subcommand it also accepts each shared option (``--threads``,
    ``-q/--quiet``) that one of its subcommands takes, as the default of that subcommand's."""

    command_class = Command
    group_class = type  # sub-groups made with @group.group() are of this class too

    def __init__(self, *args: Any, epilog: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, epilog=_epilog(epilog), **kwargs)
        self.params.append(_version_option())
        self._shared: dict[str, click.Option] = {}

    def get_params(self, ctx: click.Context) -> list[click.Parameter]:
        """The group's own options, then the shared ones its subcommands take, then ``--help``.
        Found from the subcommands each time: a subcommand added later is seen, and nothing is
        registered at import time."""
        params = super().get_params(ctx)
        helps = [p for p in params[-1:] if p is self.get_help_option(ctx)]  # cached by click >= 8.1.8
        rest = params[: len(params) - len(helps)]
        names = {p.name for p in rest}
        shared = [self._group_copy(o) for o in _shared_options(self) if o.name not in names]
        return [*rest, *shared, *helps]

    def _group_copy(self, leaf: SharedOption) -> click.Option:
        """The group-level twin of a subcommand's shared option (one per name, made once: click
        orders callbacks by the options' identity)."""
        if leaf.name not in self._shared:
            self._shared[leaf.name] = click.Option(
                leaf.opts, type=leaf.type, is_flag=leaf.is_flag, default=None if not leaf.is_flag else False,
                expose_value=False, callback=_remember_for_subcommands, metavar=leaf.metavar,
                help=f"{leaf.group_help} (" + (f"as its own {leaf.opts[0]}" if leaf.is_flag
                                                else f"the subcommand's own {leaf.opts[0]} wins") + ").")
        return self._shared[leaf.name]


def command(prog: str, **kwargs: Any) -> Callable[[Callable[..., Any]], click.Command]:
    """``@click.command`` with the shared conventions: ``-h/--help`` ending with the exit codes,
    and ``--version`` printing ``<prog> <version>``."""

    def decorator(fn: Callable[..., Any]) -> click.Command:
        cmd = click.command(cls=Command, context_settings=CONTEXT_SETTINGS, **kwargs)(fn)
        cmd.prog = prog  # type: ignore[attr-defined]
        return cmd

    return decorator


def group(prog: str, **kwargs: Any) -> Callable[[Callable[..., Any]], click.Group]:
    """``@click.group`` with the conventions of :func:`command` (its subcommands get them too)."""

    def decorator(fn: Callable[..., Any]) -> click.Group:
        grp = click.group(cls=Group, context_settings=CONTEXT_SETTINGS, **kwargs)(fn)
        grp.prog = prog  # type: ignore[attr-defined]
        return grp

    return decorator


# ---------------------------------------------------------------------- --threads, -q/--quiet
class SharedOption(click.Option):
    """An option every command offers the same way: on the command that does the work, and,
    through :class:`Group`, on every group above it. A value given to the subcommand wins; else
    the nearest group's; else the subcommand's default. ``group_help`` is the group's help text."""

    def __init__(self, *args: Any, group_help: str = "", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.group_help = group_help


def _shared_options(cmd: click.Command) -> list[SharedOption]:
    """The shared options of ``cmd`` and of every subcommand below it: the first one of each name."""
    found = [p for p in cmd.params if isinstance(p, SharedOption)]
    for sub in getattr(cmd, "commands", {}).values():
        found += _shared_options(sub)
    first: dict[str | None, SharedOption] = {}
    for option in found:
        first.setdefault(option.name, option)
    return list(first.values())


def _meta_key(name: str | None) -> str:
    return f"metaug_cli.{name}"


def _remember_for_subcommands(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """A group's shared option: keep a given value in ``ctx.meta`` (which a group's context
    shares with its subcommands' contexts)."""
    if value is not None and value is not False:
        ctx.meta[_meta_key(param.name)] = value
    return value


def _shared(*decls: str, group_help: str, **kwargs: Any) -> Callable[[F], F]:
    """A :class:`SharedOption` whose value falls back to a group's when the subcommand got none."""
    name = decls[0].lstrip("-").replace("-", "_")

    def decorator(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kw: Any) -> Any:
            ctx = click.get_current_context()
            given = ctx.get_parameter_source(name) in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)
            if not given and _meta_key(name) in ctx.meta:
                kw[name] = ctx.meta[_meta_key(name)]
            return fn(*args, **kw)

        return click.option(*decls, name, cls=SharedOption, group_help=group_help, **kwargs)(wrapper)  # type: ignore[return-value]

    return decorator


def threads_option(help: str, default: int | None = None) -> Callable[[F], F]:
    """``--threads N`` (N >= 1): the CPU threads of the command's computation. ``help`` says what
    they drive and what ``default`` (None: each library step's own default) means."""
    return _shared("--threads", type=click.IntRange(min=1), default=default, show_default=default is not None,
                   metavar="N", help=help, group_help="CPU threads of the subcommand's computation")


def quiet_option(help: str = "No progress bars and no info lines; print only the result.",
                 default: bool = False) -> Callable[[F], F]:
    """``-q/--quiet``: no progress bars and no info lines (errors and the result stay)."""
    return _shared("--quiet", "-q", is_flag=True, default=default, help=help,
                   group_help="No progress bars and no info lines in the subcommand")


def signature_defaults(fn: Callable[..., Any]) -> dict[str, Any]:
    """``{parameter: default}`` of a library function: where an option takes its default when
    the library keeps that setting as a keyword argument rather than a dataclass field."""
    return {name: p.default for name, p in inspect.signature(fn).parameters.items() if p.default is not p.empty}


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
