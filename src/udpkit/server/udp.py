"""UDP glue: drain the socket, call the handler, send replies.

Rule: this module only moves bytes.  The reader drains the socket on every
wake-up (bounded per wake-up so TCP is not starved), classifies each datagram
(truncated, empty, oversize, denied, rate-limited), calls the handler and
sends at once; only on ``BlockingIOError`` is a reply queued (bounded: the
excess is counted as a send error).  No ``OSError`` from the socket ever stops
the loop.  The clock is read once per wake-up, not per datagram.

Two paths do this, with the same outcomes and counters: the C extension
:mod:`udpkit._fastpath` (``recvmmsg``/``sendmmsg``, Linux, sync handlers) and
the pure-Python ``recvmsg``/``sendto`` loop here, used when the extension did
not build, when ``UDPKIT_NO_FASTPATH=1`` or ``fast_path=False``, and for async
handlers or the access log.  The C side calls back into this class for
everything that is not a byte-level check (awaitables, handler errors, logs,
the send queue: :class:`udpkit._native.UdpEndpointCallbacks`), so both paths
share that code.

With ``busy_poll`` (``serve --busy-poll``), :mod:`udpkit.core.busy_poll` decides
and this module carries it out: after a wake-up that found work the socket leaves
the loop's interest set and is polled (``FastPath.spin`` with the GIL released, or
:meth:`UdpEndpoint.spin_pure`), the loop gets a turn between slices
(``call_soon``), and the socket goes back to the loop when the decision is to
sleep.  Off, the loop calls the read itself, as it always did.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable

from udpkit import _native
from udpkit.core.admission import (
    AMPLIFICATION,
    DENIED,
    RATE_LIMITED,
    SERVE,
    TOKENS_PER_GRANT,
    Admission,
)
from udpkit.core.busy_poll import Action, BusyPoll
from udpkit.core.counters import Counters
from udpkit.core.handler import Address, Handler, Peer, Reply, TransportName
from udpkit.core.histogram import LatencyHistogram
from udpkit.server.dispatch import (
    AsyncCalls,
    HandlerTimeout,
    cancelled_from_outside,
    check_reply,
    discard,
    is_async_handler,
    is_awaitable,
    log_handler_error,
)
from udpkit.server.kernel_drops import drops_since, socket_drops
from udpkit.server.logs import log_abuse, log_access, server_log

DATAGRAMS_PER_WAKEUP = 256
"""Datagrams read and handled per wake-up (on either path) before yielding to the
event loop, so that TCP and timers are not starved by a UDP flood."""

_MSG_TRUNC = socket.MSG_TRUNC
# Linux: the count of datagrams the kernel dropped for a full receive queue
# comes as ancillary data once this option is on (socket(7), SO_RXQ_OVFL).
_SO_RXQ_OVFL = getattr(socket, "SO_RXQ_OVFL", 40) if sys.platform == "linux" else None
_ANCILLARY_SPACE = socket.CMSG_SPACE(4)

TRANSPORT: TransportName = "udp"
"""The transport every :class:`Peer` of this module names (C is given it too)."""

FAST_PATH_NAME = "recvmmsg/sendmmsg (C extension)"


def fast_path_refusal(
    handler: Handler, *, enabled: bool = True, access_log: bool = False
) -> str | None:
    """Why the C fast path cannot serve ``handler`` here, or ``None`` if it can."""
    if not enabled:
        return "disabled by configuration"
    missing = _native.unavailable()
    if missing is not None:
        return missing
    if is_async_handler(handler):
        return "async handler"
    if access_log:
        return "access log on"
    return None


class UdpEndpoint:
    """One bound UDP socket served by a handler."""

    def __init__(
        self,
        sock: socket.socket,
        handler: Handler,
        counters: Counters,
        *,
        async_calls: AsyncCalls | None = None,
        max_request: int,
        recv_buffer: int,
        send_queue: int,
        access_log: bool,
        admission: Admission | None = None,
        max_amplification: float | None = None,
        latency: LatencyHistogram | None = None,
        fast_path: bool = True,
        busy_poll: float = 0.0,
    ) -> None:
        self.sock = sock
        self.handler = handler
        self.counters = counters
        self.async_calls = async_calls if async_calls is not None else AsyncCalls()
        self.max_request = max_request
        self.recv_buffer = recv_buffer
        self.access_log = access_log
        self.admission = admission
        self.max_amplification = max_amplification
        self.latency = latency
        self.kernel_drops_seen = 0
        """This socket's kernel drop count (sk_drops) already in ``counters.kernel_drops``:
        the pure path's; on the C path the C object keeps it (one owner per socket)."""
        self._ancillary = 0
        if _SO_RXQ_OVFL is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, _SO_RXQ_OVFL, 1)
                self._ancillary = _ANCILLARY_SPACE
            except OSError:
                pass
        self._queue: deque[tuple[bytes, Address]] = deque()
        self._queue_limit = send_queue
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop = asyncio.get_running_loop()
        self._reading = False
        self._writing = False
        self.fast_path_refusal = fast_path_refusal(
            handler, enabled=fast_path, access_log=access_log
        )
        self._read: Callable[[], int] = self.read_batch
        self._fast: _native.FastPath | None = None
        fast_path_type = _native.fast_path_type()
        if self.fast_path_refusal is None and fast_path_type is not None:
            self._fast = fast_path_type(
                fd=sock.fileno(),
                handler=handler,
                endpoint=self,
                counters=counters,
                peer_type=Peer,
                max_request=max_request,
                recv_buffer=recv_buffer,
                ancillary=bool(self._ancillary),
                admission_check=admission.check if admission is not None else None,
                constant_verdict=admission.constant_verdict if admission is not None else None,
                admission_take=admission.take if admission is not None else None,
                max_amplification=max_amplification,
                latency_observe=latency.observe if latency is not None else None,
                max_per_read=DATAGRAMS_PER_WAKEUP,
                grant=TOKENS_PER_GRANT,
                transport=TRANSPORT,
                serve=SERVE,
                denied=DENIED,
                rate_limited=RATE_LIMITED,
                amplification=AMPLIFICATION,
            )
            self._read = self._fast.read
        self.busy_poll = BusyPoll(busy_poll)
        """The spin / yield / sleep decisions of ``--busy-poll`` (off: duration 0)."""
        self._spin: Callable[[float], int] = (
            self._fast.spin if self._fast is not None else self.spin_pure
        )
        self._resume_handle: asyncio.Handle | None = None

    @property
    def fast(self) -> bool:
        """Whether the C fast path serves this socket."""
        return self.fast_path_refusal is None

    def start(self) -> None:
        self._sleep()
        self._reading = True

    def _sleep(self) -> None:
        """Wait in the event loop: without busy polling, the loop calls the read itself."""
        on_readable = self._on_readable if self.busy_poll.enabled else self._read
        self._loop.add_reader(self.sock.fileno(), on_readable)

    def stop_reading(self) -> None:
        """Stop taking new datagrams; the ones already queued in the kernel are handled."""
        if self._reading:
            self._stop_polling()
            self._loop.remove_reader(self.sock.fileno())
            self._reading = False
            self.drain_kernel_queue()

    def _stop_polling(self) -> None:
        self.busy_poll.stop()
        if self._resume_handle is not None:
            self._resume_handle.cancel()
            self._resume_handle = None

    # -- busy polling (udpkit.core.busy_poll decides; this carries it out) -----

    def _on_readable(self) -> None:
        found = self._read()
        if found and self.busy_poll.woke(time.monotonic(), found) is Action.SPIN:
            self._loop.remove_reader(self.sock.fileno())
            self._spin_slice()

    def _spin_slice(self) -> None:
        """Poll until the decision is to yield to the loop or to sleep in it."""
        busy, spin, clock = self.busy_poll, self._spin, time.monotonic
        now = clock()
        action = Action.SPIN
        while action is Action.SPIN:
            found = spin(busy.spin_time(now))
            now = clock()
            action = busy.polled(now, found)
        if action is Action.YIELD:
            self._resume_handle = self._loop.call_soon(self._resume)
        elif self._reading:
            self._sleep()

    def _resume(self) -> None:
        self._resume_handle = None
        if self.busy_poll.resumed(time.monotonic()) is Action.SPIN:
            self._spin_slice()
        elif self._reading:
            self._sleep()

    def spin_pure(self, seconds: float) -> int:
        """The pure path's spin: read without blocking until a datagram comes (then
        handle up to ``DATAGRAMS_PER_WAKEUP``) or ``seconds`` have passed; 0: none came."""
        until = time.monotonic() + seconds
        while True:
            found = self.read_batch()
            if found or time.monotonic() >= until:
                return found

    def drain_kernel_queue(self, max_batches: int = 64) -> None:
        """Handle what the kernel already holds (bounded, should a flood go on)."""
        for _ in range(max_batches):
            if self._read() < DATAGRAMS_PER_WAKEUP:
                return

    def busy(self) -> bool:
        return bool(self._tasks or self._queue)

    async def wait_idle(self) -> None:
        while self.busy():
            if self._tasks:
                await asyncio.wait(list(self._tasks))
            else:
                await asyncio.sleep(0.01)

    def account_kernel_drops(self) -> None:
        """Add the drops the kernel counted for this socket that no datagram has reported
        yet (SO_RXQ_OVFL comes with the next datagram, so a flood's tail went uncounted)."""
        if self.sock.fileno() < 0:
            return
        total = socket_drops(self.sock)
        if total is None:
            return
        keeper: _native.FastPath | UdpEndpoint = self._fast if self._fast is not None else self
        self.counters.kernel_drops += drops_since(keeper.kernel_drops_seen, total)
        keeper.kernel_drops_seen = total & 0xFFFFFFFF

    def close(self) -> None:
        self.account_kernel_drops()
        self._stop_polling()
        if self._reading:
            self._loop.remove_reader(self.sock.fileno())
            self._reading = False
        if self._writing:
            self._loop.remove_writer(self.sock.fileno())
            self._writing = False
        for task in self._tasks:
            task.cancel()
        self.counters.send_errors += len(self._queue)  # replies that will never leave
        self._queue.clear()
        self.sock.close()

    # -- receive -------------------------------------------------------------

    def read_batch(self) -> int:
        """The pure path: handle up to ``DATAGRAMS_PER_WAKEUP`` datagrams; return how
        many were read."""
        recvmsg = self.sock.recvmsg
        bufsize = self.recv_buffer
        ancillary = self._ancillary
        counters = self.counters
        max_request = self.max_request
        check = self.admission.check if self.admission is not None else None
        now = time.monotonic()
        for count in range(DATAGRAMS_PER_WAKEUP):
            try:
                data, anc, flags, address = recvmsg(bufsize, ancillary)
            except (BlockingIOError, InterruptedError):
                return count
            except OSError as exc:
                # e.g. an ICMP error queued on the socket: report, keep serving.
                server_log.warning("UDP receive error (ignored): %s", exc)
                continue
            counters.received += 1
            if anc:
                self._kernel_drops(anc)
            if flags & _MSG_TRUNC:
                counters.dropped_truncated += 1
            elif not data:
                counters.dropped_empty += 1
            elif len(data) > max_request:
                counters.dropped_oversize += 1
            elif check is not None and (verdict := check(address[0], now)) is not None:
                if verdict == DENIED:
                    counters.dropped_denied += 1
                else:
                    counters.dropped_rate_limited += 1
                log_abuse(verdict, Peer(address, TRANSPORT), now)
            else:
                self._handle(data, address, now)
        return DATAGRAMS_PER_WAKEUP

    def _kernel_drops(self, ancillary: list[tuple[int, int, bytes]]) -> None:
        for level, kind, value in ancillary:
            if level == socket.SOL_SOCKET and kind == _SO_RXQ_OVFL and len(value) >= 4:
                total = int.from_bytes(value[:4], sys.byteorder)
                self.counters.kernel_drops += drops_since(self.kernel_drops_seen, total)
                self.kernel_drops_seen = total

    def _handle(self, data: bytes, address: Address, arrived: float) -> None:
        peer = Peer(address, TRANSPORT)
        if self.access_log:
            log_access(peer, data)
        try:
            result = self.handler(data, peer)
        except BaseException as exc:  # SystemExit, KeyboardInterrupt too: the handler's
            self.handler_failed(peer, exc)
            return
        if type(result) is bytes:
            self._reply(result, data, address, arrived)
        elif result is None:
            self.counters.no_reply += 1
        else:
            self.handle_result(result, data, peer, arrived)

    # -- shared with the C fast path (_native.UdpEndpointCallbacks) ------------

    def handle_result(self, result: object, request: bytes, peer: Peer, arrived: float) -> None:
        """A handler result that is not plain bytes or ``None``: an awaitable, or a mistake."""
        try:
            if is_awaitable(result):
                self._spawn(result, request, peer, arrived)  # type: ignore[arg-type]
                return
            reply = check_reply(result, peer)
        except BaseException as exc:
            self.handler_failed(peer, exc)
            return
        if reply is None:
            self.counters.no_reply += 1
        else:
            self._reply(reply, request, peer.address, arrived)

    def handler_failed(self, peer: Peer, exc: BaseException) -> None:
        self.counters.handler_errors += 1
        log_handler_error(peer, exc)

    def log_abuse(self, reason: str, peer: Peer, now: float) -> None:
        log_abuse(reason, peer, now)

    def send_failed(self, address: Address, errno: int) -> None:
        server_log.warning(
            "UDP send to %s failed: %s", Peer(address, TRANSPORT), os.strerror(errno)
        )

    def receive_failed(self, errno: int) -> None:
        server_log.warning("UDP receive error (ignored): %s", os.strerror(errno))

    def _spawn(
        self, pending: Awaitable[Reply], request: bytes, peer: Peer, arrived: float
    ) -> None:
        admission = self.admission
        source = admission.source_key(peer.host)[0] if admission is not None else peer.host
        if not self.async_calls.try_take(source):
            discard(pending)
            self.counters.dropped_overload += 1
            log_abuse("overload", peer, arrived)
            return
        task = self._loop.create_task(self._finish(pending, request, peer, arrived))
        self.async_calls.hold(task, source)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _finish(
        self, pending: Awaitable[Reply], request: bytes, peer: Peer, arrived: float
    ) -> None:
        try:
            reply = check_reply(await self.async_calls.bounded(pending), peer)
        except HandlerTimeout as exc:
            self.counters.handler_timeouts += 1
            log_handler_error(peer, exc)
            return
        except asyncio.CancelledError as exc:
            self.counters.handler_errors += 1
            if cancelled_from_outside():  # a forced stop: counted, and let through
                raise
            log_handler_error(peer, exc)  # the handler's own cancellation: its failure
            return
        except BaseException as exc:
            self.counters.handler_errors += 1
            log_handler_error(peer, exc)
            return
        if reply is None:
            self.counters.no_reply += 1
        else:
            self._reply(reply, request, peer.address, arrived)

    # -- send ----------------------------------------------------------------

    def _reply(self, reply: bytes, request: bytes, address: Address, arrived: float) -> None:
        """Send a handler's reply unless it amplifies more than allowed."""
        limit = self.max_amplification
        if limit is not None and len(reply) > limit * len(request):
            self.counters.dropped_amplification += 1
            log_abuse(AMPLIFICATION, Peer(address, TRANSPORT), time.monotonic())
            return
        self.send(reply, address)
        if self.latency is not None:
            self.latency.observe(time.monotonic() - arrived)

    def send(self, reply: bytes, address: Address) -> None:
        """Send at once; queue only while the socket is full."""
        if self._queue:
            self.enqueue(reply, address)
            return
        try:
            self.sock.sendto(reply, address)
        except (BlockingIOError, InterruptedError):
            self.enqueue(reply, address)
        except OSError as exc:
            self.counters.send_errors += 1
            server_log.warning("UDP send to %s failed: %s", Peer(address, TRANSPORT), exc)
        else:
            self.counters.replied += 1

    def enqueue(self, reply: bytes, address: Address) -> None:
        if len(self._queue) >= self._queue_limit:
            self.counters.send_errors += 1
            return
        self._queue.append((reply, address))
        if not self._writing:
            self._loop.add_writer(self.sock.fileno(), self._on_writable)
            self._writing = True

    def _on_writable(self) -> None:
        queue = self._queue
        while queue:
            reply, address = queue[0]
            try:
                self.sock.sendto(reply, address)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self.counters.send_errors += 1
            else:
                self.counters.replied += 1
            queue.popleft()
        self._loop.remove_writer(self.sock.fileno())
        self._writing = False
