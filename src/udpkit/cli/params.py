"""The command line's shared grammar: targets, listen addresses, ports, log options.

Rule: one spelling everywhere.  A client's target is ``[HOST][:PORT]`` with
the defaults ``127.0.0.1:9999`` (``udpkit ping``, ``udpkit ping :7000``,
``udpkit ping example.test``, ``udpkit ping [::1]:7000``); an address to
listen on is ``HOST:PORT`` (port 0 picks a free one); a port is a number in
its range, with a message that says so.  Every command parses these with the
types below, which all call :func:`udpkit.core.addresses.parse_host_port`.
"""

from __future__ import annotations

import os
from typing import Any

import click

from udpkit.core.addresses import is_ascii_decimal, parse_host_port
from udpkit.core.errors import UsageError

DEFAULT_HOST = "127.0.0.1"
"""Host of a target that names none."""
DEFAULT_PORT = 9999
"""Port of a target that names none, and the server's default port."""
DEFAULT_TARGET = f"{DEFAULT_HOST}:{DEFAULT_PORT}"
"""The target of a client command given none."""

LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_LEVEL_HELP = "Least severe log lines shown."
LOG_FORMAT_HELP = "Log lines as text, or as one JSON object each (time, level, event, fields)."


def parse_target(text: str) -> tuple[str, int]:
    """``[HOST][:PORT]``: any part left out takes its default (``127.0.0.1:9999``).

    A blank target is refused (often an unset shell variable): leaving the
    argument out is how to ask for the defaults.
    """
    value = text.strip()
    if not value:
        raise UsageError("the target is blank (leave it out for 127.0.0.1:9999)")
    if is_ascii_decimal(value):
        raise UsageError(f"{text!r} is not a host: write a port as :{value}")
    return parse_host_port(value, allow_zero=False, default_host=DEFAULT_HOST,
                           default_port=DEFAULT_PORT)


class Target(click.ParamType[tuple[str, int]]):
    """A client's ``[HOST][:PORT]``."""

    name = "[HOST][:PORT]"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, tuple):
            return value
        try:
            return parse_target(str(value))
        except UsageError as exc:
            self.fail(str(exc), param, ctx)


class HostPort(click.ParamType[tuple[str, int]]):
    """An address to listen on or forward to, ``HOST:PORT``."""

    name = "HOST:PORT"

    def __init__(self, *, allow_zero: bool) -> None:
        self.allow_zero = allow_zero

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, tuple):
            return value
        try:
            return parse_host_port(str(value), allow_zero=self.allow_zero)
        except UsageError as exc:
            self.fail(str(exc), param, ctx)


class Port(click.ParamType[int]):
    """A port number, ``0`` allowed only where it means "pick a free one"."""

    name = "PORT"

    def __init__(self, *, allow_zero: bool) -> None:
        self.low = 0 if allow_zero else 1

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, int):
            return value
        text = str(value).strip()
        if not is_ascii_decimal(text) or not self.low <= int(text) <= 65535:
            self.fail(f"{value!r} is not a port (a number in {self.low}..65535)", param, ctx)
        return int(text)


def check_output_path(path: str, flag: str) -> None:
    """Raise :class:`UsageError` unless a file can be written at ``path``.

    Called before any work, so a run is never lost to a typo in its output path.
    """
    target = os.path.abspath(path)
    directory = os.path.dirname(target)
    if os.path.isdir(target):
        raise UsageError(f"{flag} {path}: is a directory")
    if not os.path.isdir(directory):
        raise UsageError(f"{flag} {path}: directory {directory} does not exist")
    if not os.access(directory, os.W_OK | os.X_OK) or (
        os.path.exists(target) and not os.access(target, os.W_OK)
    ):
        raise UsageError(f"{flag} {path}: not writable")


MAX_QUERY_LINES = 10_000_000
"""Lines of a ``--query-file`` read at most (dnsperf's files run to millions)."""


def read_query_file(path: str) -> tuple[str, ...]:
    """The lines of a ``--query-file``, or :class:`UsageError` (one line)."""
    try:
        with open(path, encoding="utf-8") as file:
            lines = []
            for line in file:
                lines.append(line)
                if len(lines) > MAX_QUERY_LINES:
                    raise UsageError(f"--query-file {path}: more than {MAX_QUERY_LINES} lines")
    except OSError as exc:
        raise UsageError(f"--query-file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise UsageError(f"--query-file {path}: not UTF-8 text ({exc.reason})") from None
    return tuple(lines)
