"""The C extension :mod:`udpkit._fastpath`, loaded in one place, and its contract.

Rule: nothing else imports ``udpkit._fastpath``.  This module says whether it
is here and, if not, why (:func:`unavailable`); declares as typed Protocols
every object C offers (:class:`FastPath`, :class:`LineReader`,
:class:`LinePoller`, :class:`Pacer`) and every interface C calls back
(:class:`UdpEndpointCallbacks`, :class:`PolledConnection`), under public names;
and re-exports the status codes C defines (``LINES_*``, ``HAND_*``).  What
Python defines (protocol literals, verdict words, the transport, batch and grant
sizes, the TCP session's turn budgets) C receives through its constructors.  The
names C must spell itself (the Counters fields it adds to, the callbacks it calls) it
exports, and :func:`_check` holds them against their owners here when the extension
loads: a build that no longer matches is refused with the reason, never half used.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from types import ModuleType
from typing import Protocol

from udpkit.core.counters import Counters
from udpkit.core.handler import Address, Handler, Peer


def _load() -> tuple[ModuleType | None, str]:
    if sys.platform != "linux":
        return None, "not Linux (the C extension needs recvmmsg/sendmmsg)"
    try:
        return importlib.import_module("udpkit._fastpath"), ""
    except ImportError as exc:  # no compiler at install time, or a stale build
        return None, f"C extension not built: {exc}"


_STATUS_NAMES = (
    "LINES_DONE", "LINES_EXIT", "LINES_OVERSIZE", "LINES_RESULT", "LINES_ERROR",
    "LINES_LIMITED", "LINES_EMPTY", "HAND_CLOSED", "HAND_BLOCKED", "HAND_UNUSUAL",
    "HAND_FAILED",
)
"""The status codes C defines and this module re-exports (below)."""


def _check(extension: ModuleType) -> str:
    """Why ``extension`` does not match this Python code, or ``""``."""
    fields = set(getattr(extension, "COUNTER_FIELDS", ()))
    unknown = fields - set(Counters.__slots__)
    callbacks = set(getattr(extension, "CALLBACKS", ()))
    declared = {name for protocol in (UdpEndpointCallbacks, PolledConnection)
                for name in vars(protocol) if not name.startswith("_")}
    undeclared = callbacks - declared
    if not fields or not callbacks:
        return "C extension out of date (it exports no contract): rebuild it"
    if unknown or undeclared:
        return (f"C extension out of date (counters {sorted(unknown)}, callbacks "
                f"{sorted(undeclared)} unknown here): rebuild it")
    missing = [name for name in _STATUS_NAMES if not hasattr(extension, name)]
    if missing:
        return f"C extension out of date (no {', '.join(missing)}): rebuild it"
    return ""


def built() -> bool:
    """Whether the extension was built and loads (whatever ``UDPKIT_NO_FASTPATH`` says)."""
    return _fastpath is not None


def unavailable() -> str | None:
    """Why the C extension cannot be used now, or ``None`` if it can."""
    if os.environ.get("UDPKIT_NO_FASTPATH", "") not in ("", "0"):
        return "UDPKIT_NO_FASTPATH is set"
    if _fastpath is None:
        return _MISSING
    return None


LinesReport = tuple[int, int, bytes, object]
"""``(status, taken, rest, extra)``: what one chunk's lines came to (``LineReader.feed``)."""


# -- what C calls back ------------------------------------------------------------


class UdpEndpointCallbacks(Protocol):
    """What ``FastPath`` calls on its endpoint (``server.udp.UdpEndpoint``)."""

    def handle_result(self, result: object, request: bytes, peer: Peer, arrived: float) -> None:
        """A handler result neither bytes nor ``None`` (an awaitable, or a mistake)."""

    def handler_failed(self, peer: Peer, exc: BaseException) -> None:
        """The handler (or the admission callback) raised ``exc``."""

    def log_abuse(self, reason: str, peer: Peer, now: float) -> None:
        """A datagram dropped for ``reason`` (denied, rate_limited, amplification)."""

    def enqueue(self, reply: bytes, address: Address) -> None:
        """A reply the socket could not take now."""

    def send_failed(self, address: Address, errno: int) -> None:
        """One reply failed to send (counted in C)."""

    def receive_failed(self, errno: int) -> None:
        """``recvmmsg`` failed with an error other than EAGAIN."""


class PolledConnection(Protocol):
    """What ``LinePoller`` calls on the owner of a polled connection."""

    def lines_read(self, taken: int, partial_left: int, now: float) -> None:
        """Facts of one plain chunk: requests taken, bytes of partial line left, when
        (``now``, the poller's monotonic clock).  Looked up once, at ``add``."""

    def handed_back(
        self, kind: int, unsent: bytes, status: int, taken: int, rest: bytes, extra: object,
        now: float,
    ) -> None:
        """The poller let go (``HAND_*``); ``status``, ``taken``, ``rest``, ``extra``: the
        chunk's :data:`LinesReport` (with ``LINES_DONE``, ``rest`` is the partial line
        given back)."""


# -- what C offers ----------------------------------------------------------------


class FastPath(Protocol):
    """``_fastpath.FastPath``: one UDP socket's recvmmsg/handle/sendmmsg loop."""

    kernel_drops_seen: int
    """The socket's kernel drop count already added to ``counters.kernel_drops``."""

    def read(self) -> int:
        """Handle up to ``max_per_read`` waiting datagrams; return how many were read."""
        ...

    def spin(self, seconds: float, /) -> int:
        """Poll without blocking (the GIL released) until a datagram comes or ``seconds``
        pass, then handle as :meth:`read` does; return how many were read (0: none)."""
        ...


class FastPathType(Protocol):
    def __call__(
        self, *, fd: int, handler: Handler, endpoint: UdpEndpointCallbacks, counters: Counters,
        peer_type: type[Peer], max_request: int, recv_buffer: int, ancillary: bool,
        admission_check: Callable[[str, float], str | None] | None,
        constant_verdict: Callable[[str], str | None] | None,
        admission_take: Callable[[str, float, int], int] | None,
        max_amplification: float | None, latency_observe: Callable[[float], None] | None,
        max_per_read: int, grant: int, transport: str, serve: str, denied: str,
        rate_limited: str, amplification: str,
    ) -> FastPath: ...


class LineReader(Protocol):
    """``_fastpath.LineReader``: one TCP connection's line splitting in C."""

    def feed(self, partial: bytes, data: bytes, /) -> LinesReport: ...

    @property
    def polled(self) -> int:
        """Whether a LinePoller reads this connection now."""
        ...

    @property
    def unsent_lead(self) -> int:
        """Of the unsent replies the poller last handed back, the bytes ending a message
        begun in an earlier send (length-prefixed framing; 0 for lines)."""
        ...


class LineReaderType(Protocol):
    def __call__(
        self, handler: Handler, peer: Peer, counters: Counters, write: Callable[[bytes], object],
        observe: Callable[[float], None] | None = None,
        take: Callable[[str, float, int], int] | None = None, *, max_line: int,
        exit_line: bytes | None, empty_reply: bytes | None, grant: int,
        buffered: Callable[[], int] | None = None,
        kept: Callable[[int, bytes, int | None], None] | None = None,
        length_prefix: int = 0,
    ) -> LineReader:
        """``buffered`` and ``kept`` (together): after each write, if ``buffered()`` (the
        transport's write buffer size) is not 0, ``kept(held, wire, None)``.
        ``length_prefix``: 0, lines; n, each message after its length in n bytes
        (:attr:`udpkit.core.framing.StreamFraming.prefix`).  ``exit_line`` ``None``: no
        exit; ``empty_reply`` ``None``: an empty message stops at ``LINES_EMPTY``."""
        ...


class LinePoller(Protocol):
    """``_fastpath.LinePoller``: TCP connections read from one epoll set in C."""

    def add(self, reader: LineReader, fd: int, owner: PolledConnection, partial: bytes, /) -> None:
        """Poll ``fd``, lending it the connection's partial line."""

    def remove(self, reader: LineReader, /) -> bytes | None:
        """Stop polling; the partial line back, or ``None`` if it was not polled."""

    def poll(self) -> None: ...

    def fileno(self) -> int: ...

    def count(self) -> int: ...

    def close(self) -> None: ...


class LinePollerType(Protocol):
    def __call__(
        self, counters: Counters, observe: Callable[[float], None] | None = None, *,
        turn_bytes: int, poll_bytes: int,
    ) -> LinePoller:
        """Per callback each connection reads at most ``turn_bytes``, all together
        about ``poll_bytes`` (:class:`udpkit.core.tcp_session.SessionLimits`)."""
        ...


class Pacer(Protocol):
    """``_fastpath.Pacer``: the bench's open-loop sends, paced by a C thread that never
    holds the GIL (sleep to ``spin_ns`` before each deadline, spin, send; ``pacer.c``),
    and the replies, which the same thread reads with their kernel arrival times."""

    def submit(self, send_at: bytes, sizes: bytes, payloads: list[bytes], /) -> None:
        """Queue batches: ``send_at`` native int64 CLOCK_MONOTONIC nanoseconds and
        ``sizes`` native int32 datagrams, one each per batch; ``payloads`` in order."""

    def collect(self) -> bytes:
        """Each batch's actual send time (native int64 ns), in order, since the last call."""
        ...

    def replies(self) -> tuple[bytes, bytes, bytes, bytes]:
        """The replies read since the last call: ``(data, sizes, arrived, read)``, the
        replies end to end, their native int32 sizes, and native int64 CLOCK_MONOTONIC
        nanoseconds of their kernel arrival (``SO_TIMESTAMPNS``, else the read) and read."""
        ...

    def stats(self) -> tuple[int, int, int, int, int]:
        """``(batches queued, send errors, refused, last errno, replies truncated)``."""
        ...

    def close(self) -> None:
        """Stop the thread at once (what is queued is dropped)."""


class PacerType(Protocol):
    def __call__(
        self, *, fd: int, spin_ns: int, max_batch: int, timer_slack_ns: int,
        timerfd: bool = False,
    ) -> Pacer:
        """The sender of ``fd`` (a connected UDP socket); the figures come from
        :class:`udpkit.core.pacing.PacingPolicy`."""
        ...


_fastpath, _MISSING = _load()
if _fastpath is not None and (_mismatch := _check(_fastpath)):
    _fastpath, _MISSING = None, _mismatch


def _status(name: str) -> int:
    # Only compared with what C returns, so without C any value that C never gives.
    return -1 if _fastpath is None else int(getattr(_fastpath, name))


# -- status codes, defined in C (fastpath.h, tcp_poller.c) -----------------------

LINES_DONE = _status("LINES_DONE")
"""LineReader report: every complete line was handled; ``rest`` is the partial line."""
LINES_EXIT = _status("LINES_EXIT")
"""Stopped at the exit line; ``rest`` follows it."""
LINES_OVERSIZE = _status("LINES_OVERSIZE")
"""Stopped at a line over the limit (or an unfinished one already over it)."""
LINES_RESULT = _status("LINES_RESULT")
"""Stopped at a handler result neither bytes nor ``None`` (``extra``)."""
LINES_ERROR = _status("LINES_ERROR")
"""Stopped at a handler (or ``admission.take``) that raised (``extra``)."""
LINES_LIMITED = _status("LINES_LIMITED")
"""Stopped at a line of a source over its rate limit; ``rest`` starts with it."""
LINES_EMPTY = _status("LINES_EMPTY")
"""Stopped at an empty message with no ``empty_reply`` (len16: it closes the connection);
``rest`` starts with it."""
HAND_CLOSED = _status("HAND_CLOSED")
"""LinePoller hand-back: the peer closed or the socket failed (nothing read)."""
HAND_BLOCKED = _status("HAND_BLOCKED")
"""LinePoller hand-back: a send left ``unsent`` bytes for the transport."""
HAND_UNUSUAL = _status("HAND_UNUSUAL")
"""LinePoller hand-back: a line for Python (the report says which)."""
HAND_FAILED = _status("HAND_FAILED")
"""LinePoller hand-back: a Python error in between (reported as unraisable)."""


def fast_path_type() -> FastPathType | None:
    """The UDP loop's type, or ``None`` (see :func:`unavailable`)."""
    return None if unavailable() else getattr(_fastpath, "FastPath", None)


def line_reader_type() -> LineReaderType | None:
    """The TCP line reader's type, or ``None`` (see :func:`unavailable`)."""
    return None if unavailable() else getattr(_fastpath, "LineReader", None)


def pacer_type() -> PacerType | None:
    """The bench's C paced sender, or ``None`` (see :func:`unavailable`)."""
    return None if unavailable() else getattr(_fastpath, "Pacer", None)


def line_poller_type() -> LinePollerType | None:
    """The TCP poller's type, or ``None`` (see :func:`unavailable`)."""
    return None if unavailable() else getattr(_fastpath, "LinePoller", None)
