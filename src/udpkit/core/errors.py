"""Exceptions, split by whose fault it was.

Rule: local misuse (:class:`LocalProtocolError`, :class:`UsageError`) and
remote misbehaviour (:class:`RemoteProtocolError`) are different types; a
client failure says whether it timed out, was refused or got a reply it could
not accept.  Decoders of untrusted bytes raise only :class:`BadInput`.
"""

from __future__ import annotations

from typing import Literal

Cause = Literal["timeout", "refused", "closed", "protocol"]


class UdpkitError(Exception):
    """Base class of every error udpkit raises on purpose."""


class UsageError(UdpkitError, ValueError):
    """The caller asked for something impossible (bad option, bad payload)."""


class AppLoadError(UsageError):
    """The app named on the command line (or in ``ServerConfig.app``) cannot be loaded.

    The only error :func:`udpkit.apps.load_app` raises, whatever went wrong (no
    such built-in app, missing module, syntax error or exception at import,
    missing attribute, not callable).  ``str()`` is one line, ``<what>
    (<hint>)``, fit for ``udpkit serve: ...`` on stderr.
    """

    def __init__(self, what: str, hint: str) -> None:
        what, hint = " ".join(what.splitlines()), " ".join(hint.splitlines())
        super().__init__(f"{what} ({hint})")
        self.what = what
        self.hint = hint


class LocalProtocolError(UdpkitError):
    """This side tried to break the protocol (e.g. a newline inside a TCP line)."""


class RemoteProtocolError(UdpkitError):
    """The peer sent something the protocol does not allow."""


class BadInput(UdpkitError):
    """Untrusted bytes from the network could not be decoded.

    The only exception a ``*_untrusted`` decoder may raise.
    """


class RequestFailed(UdpkitError):
    """A request got no acceptable reply before its deadline.

    Carries what a person needs to act on it: where it went, how many attempts
    were made, how long it took and why it failed.
    """

    cause: Cause = "protocol"

    def __init__(
        self,
        message: str,
        *,
        address: str = "",
        attempts: int = 0,
        elapsed: float = 0.0,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.address = address
        self.attempts = attempts
        self.elapsed = elapsed

    def __str__(self) -> str:
        where = f" ({self.address})" if self.address else ""
        return (
            f"{self.cause}: {self.message}{where} after {self.attempts} attempt(s) "
            f"in {self.elapsed * 1000:.0f} ms"
        )


class RequestTimeout(RequestFailed, TimeoutError):
    """No acceptable reply arrived before the overall deadline."""

    cause: Cause = "timeout"


class RequestRefused(RequestFailed, ConnectionRefusedError):
    """The peer refused: TCP RST on connect, or ICMP port unreachable for UDP."""

    cause: Cause = "refused"


class ConnectionClosed(RequestFailed, ConnectionError):
    """The TCP peer closed the connection before replying."""

    cause: Cause = "closed"


class UnexpectedReply(RequestFailed, RemoteProtocolError):
    """The peer answered, but with something that does not match the request."""

    cause: Cause = "protocol"
