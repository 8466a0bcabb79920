"""The one error path of the ``udpkit`` command.

Rule: whatever goes wrong in any sub-command reaches the user as ONE line on
stderr, ``udpkit CMD: <what> (<hint>)``, and one exit code:

* ``2``: the command line or the configuration cannot be used as given (an
  unknown flag, a bad value, a host name that does not resolve, an address
  already in use, an app that does not load, an output path that cannot be
  written);
* ``1``: the run happened and failed (no reply, refused, nothing answered);
* ``3``: the run happened and missed a threshold it was given (``bench --slo``);
* ``4``: the run happened but the generator's own error spoils its figures
  (``bench --strict``: the send lag's p99 over the stated fraction of the latency p50);
* ``130``: interrupted (Ctrl-C) before there was anything to report;
* ``141``: standard output was closed by its reader (``udpkit ping | head``):
  silently, as a tool killed by SIGPIPE.

No traceback for anything a user can cause; ``UDPKIT_DEBUG=1`` shows the
traceback of an unexpected error (a bug) instead of its one line.  Every
sub-command is a :class:`UdpkitCommand`, which turns exceptions into a
:class:`Failure`; :class:`UdpkitGroup` does the same for the group's own
errors (an unknown command).  Nothing else prints errors.
"""

from __future__ import annotations

import errno
import os
import re
import sys
from collections.abc import Sequence
from typing import IO, TYPE_CHECKING, Any

import click

from udpkit.core.errors import LocalProtocolError, RequestFailed, UdpkitError, UsageError

if TYPE_CHECKING:
    from udpkit.bench.result import BenchResult
    from udpkit.core.slo import SloOutcome

USAGE = 2
"""Exit code: the command line or the configuration cannot be used as given."""
FAILED = 1
"""Exit code: the run happened and failed."""
SLO_FAILED = 3
"""Exit code: the run happened but missed a threshold (``bench --slo``)."""
IMPRECISE = 4
"""Exit code: the generator's own send lag spoils the figures (``bench --strict``)."""
INTERRUPTED = 130
"""Exit code: Ctrl-C before there was a result (128 + SIGINT, as shells report it)."""
OUTPUT_CLOSED = 141
"""Exit code: the reader of stdout went away (128 + SIGPIPE)."""

_CONFIG_ERRNOS = frozenset({
    errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES, errno.EPERM, errno.ENOENT,
    errno.ENOTDIR, errno.EISDIR, errno.EROFS,
})


def debug() -> bool:
    """``UDPKIT_DEBUG=1``: show the traceback of unexpected errors."""
    return os.environ.get("UDPKIT_DEBUG", "") not in ("", "0")


class Failure(click.ClickException):
    """What a sub-command tells the user when it stops: one line and an exit code."""

    def __init__(self, command: str, what: str, *, hint: str = "", exit_code: int = USAGE):
        super().__init__(what)
        self.command = command
        self.what = what
        self.hint = hint
        self.exit_code = exit_code  # type: ignore[misc]  # click reads it per instance

    def line(self) -> str:
        prefix = f"udpkit {self.command}" if self.command else "udpkit"
        what = " ".join(self.what.split())  # one line, whatever the message held
        return f"{prefix}: {what}" + (f" ({self.hint})" if self.hint else "")

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(self.line(), err=True)


def with_slos(document: dict[str, Any], outcomes: Sequence[SloOutcome]) -> dict[str, Any]:
    """A bench result's ``--json`` document, with its ``--slo`` outcomes when it had any."""
    if outcomes:
        document["slo"] = [outcome.as_dict() for outcome in outcomes]
    return document


def check_run(command: str, result: BenchResult, outcomes: Sequence[SloOutcome], *,
              measured: str | None = None) -> None:
    """The exit of a finished bench run (``bench``, ``bench --replay``, ``bench merge``),
    once its figures are out: 130 when interrupted (``measured`` names what ran, "s of
    measurement"; ``None``: a run that cannot be), 1 when no reply came, 3 when a
    ``--slo`` failed."""
    if measured is not None and result.summary.interrupted:
        raise Failure(command, f"interrupted after {result.duration:.3f} s of {measured}",
                      hint="the figures above are partial", exit_code=INTERRUPTED)
    if result.received == 0:
        raise Failure(command, f"no replies: {result.lost} of {result.sent} requests lost",
                      exit_code=FAILED)
    failed = [outcome.slo.text for outcome in outcomes if not outcome.passed]
    if failed:
        raise Failure(command, f"{len(failed)} of {len(outcomes)} thresholds failed: "
                      + ", ".join(failed), exit_code=SLO_FAILED)


def request_failed(exc: RequestFailed) -> tuple[str, str]:
    """What and hint for a request without an acceptable reply."""
    what = f"{exc.cause}: {exc.message}" + (f" ({exc.address})" if exc.address else "")
    hint = "--expect any accepts whatever the server replies" if exc.cause == "protocol" else ""
    return what, hint


_CLICK_WORDING = (
    (re.compile(r" \(env var: '[A-Z0-9_]+'\)"), ""),
    (re.compile(r"is not a valid integer range"), "is not a whole number"),
    (re.compile(r"is not a valid integer"), "is not a whole number"),
    (re.compile(r"is not a valid float range"), "is not a number"),
    (re.compile(r"is not a valid float"), "is not a number"),
)


def _click_message(exc: click.ClickException) -> str:
    message = exc.format_message().strip().rstrip(".")
    for pattern, replacement in _CLICK_WORDING:
        message = pattern.sub(replacement, message)
    return message[:1].lower() + message[1:]


def translate(command: str, exc: BaseException) -> Failure:
    """The one line and exit code for ``exc`` raised while running ``command``."""
    help_hint = f"see 'udpkit {command} --help'" if command else "see 'udpkit --help'"
    if isinstance(exc, Failure):
        return exc
    if isinstance(exc, click.UsageError):
        return Failure(command, _click_message(exc), hint=help_hint, exit_code=USAGE)
    if isinstance(exc, click.ClickException):
        return Failure(command, _click_message(exc), exit_code=exc.exit_code)
    if isinstance(exc, KeyboardInterrupt | click.Abort):
        return Failure(command, "interrupted", exit_code=INTERRUPTED)
    if isinstance(exc, RequestFailed):
        what, hint = request_failed(exc)
        return Failure(command, what, hint=hint, exit_code=FAILED)
    if isinstance(exc, UsageError | LocalProtocolError):
        parts = getattr(exc, "what", None), getattr(exc, "hint", None)
        if isinstance(parts[0], str) and isinstance(parts[1], str):  # the app loader's error
            return Failure(command, parts[0], hint=parts[1], exit_code=USAGE)
        return Failure(command, str(exc), exit_code=USAGE)
    if isinstance(exc, UdpkitError):
        return Failure(command, str(exc), exit_code=FAILED)
    if isinstance(exc, OSError):
        what = exc.strerror or str(exc)
        if exc.filename:
            what = f"{exc.filename}: {what}"
        code = USAGE if exc.errno in _CONFIG_ERRNOS else FAILED
        return Failure(command, what, exit_code=code)
    return Failure(
        command,
        f"unexpected error: {type(exc).__name__}: {exc}",
        hint="UDPKIT_DEBUG=1 shows the traceback",
        exit_code=FAILED,
    )


def _guarded(command: str, exc: Exception) -> Failure:
    if debug() and not isinstance(exc, click.ClickException | UdpkitError):
        raise exc
    return translate(command, exc)


class UdpkitCommand(click.Command):
    """A sub-command: environment variables named after its flags, and the one error path.

    Each option ``--some-flag`` of command ``cmd`` reads ``UDPKIT_CMD_SOME_FLAG``
    (shown in ``--help``); each single-valued argument ``TARGET`` reads
    ``UDPKIT_CMD_TARGET``.
    """

    def __init__(self, name: str | None, **kwargs: Any) -> None:
        super().__init__(name, **kwargs)
        self.subcommands: dict[str, click.Command] = {}
        """Commands reached by a reserved first argument (``bench merge``)."""
        prefix = "UDPKIT_" + (name or "").upper().replace("-", "_").replace(" ", "_") + "_"
        from_env: list[str] = []
        for param in self.params:
            if not param.expose_value or param.envvar is not None:
                continue
            if isinstance(param, click.Option):
                longs = [opt for opt in param.opts if opt.startswith("--")] or param.opts
                param.envvar = prefix + longs[0].lstrip("-").upper().replace("-", "_")
                param.show_envvar = True
            elif isinstance(param, click.Argument) and param.nargs == 1 and param.name:
                param.envvar = prefix + param.name.upper()
                from_env.append(f"{param.name.upper()} from {param.envvar}")
        if from_env:
            note = "Environment: " + ", ".join(from_env) + "; each flag from the variable shown."
            self.epilog = f"{self.epilog}\n\n{note}" if self.epilog else note

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.exceptions.Exit:
            raise
        except Exception as exc:
            raise _guarded(self.name or "", exc) from None

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.exceptions.Exit:
            raise
        except BrokenPipeError:
            # Nothing more can be written; keep the interpreter's final flush quiet.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            raise click.exceptions.Exit(OUTPUT_CLOSED) from None
        except KeyboardInterrupt as exc:
            raise translate(self.name or "", exc) from None
        except Exception as exc:
            raise _guarded(self.name or "", exc) from None


class UdpkitGroup(click.Group):
    """The ``udpkit`` group: its own errors (unknown command) take the one path too."""

    command_class = UdpkitCommand

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as exc:
            raise translate("", exc) from None

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        try:
            name, command, rest = super().resolve_command(ctx, args)
        except click.UsageError as exc:
            raise translate("", exc) from None
        if isinstance(command, UdpkitCommand) and rest and rest[0] in command.subcommands:
            # ``udpkit bench merge ...``: a reserved first argument names a sub-command,
            # and ``udpkit bench TARGET ...`` keeps its meaning.
            return f"{name} {rest[0]}", command.subcommands[rest[0]], rest[1:]
        return name, command, rest
