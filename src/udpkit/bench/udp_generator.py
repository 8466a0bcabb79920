"""UDP load generator glue: a raw non-blocking socket driving a :class:`LoadCore`.

Rule: this module only moves bytes and arms one timer.  The reader drains the
socket in batches on every wake-up and hands the whole batch to the core with
one timestamp; :meth:`UdpGenerator._transmit` is the one place that sends:
equal-sized payloads go out as one UDP GSO super-datagram (Linux
``UDP_SEGMENT``), others one by one; only on ``BlockingIOError`` is the rest
queued until the socket is writable.  A raw socket with ``loop.add_reader``
rather than a ``DatagramProtocol``: no per-datagram callback, no transport
buffer, the figure that matters for a load generator.

Where the kernel timestamps arrivals (``SO_TIMESTAMPNS``), a reply's latency
ends at its arrival, not when the event loop got round to reading it
(:class:`ReplyReader`; the wait in between is counted apart), and a closed
loop's request starts when it is handed to the socket, after its payload was
rendered: the generator's own wake-up and bookkeeping stay out of the figure.
"""

from __future__ import annotations

import contextlib
import errno
import socket
import struct
import time
from collections import deque

from udpkit.bench.generator import Generator
from udpkit.core.handler import Address
from udpkit.core.load_stats import ArrivalSchedule, LoadCore

_SOL_UDP = getattr(socket, "SOL_UDP", 17)
_UDP_SEGMENT = getattr(socket, "UDP_SEGMENT", 103)
_GSO_MAX_SEGMENTS = 64
_GSO_MAX_BYTES = 65000
_RECV_BUFFER = 65536
_SOCKET_BUFFER = 4 * 1024 * 1024
_SEND_BLOCKED = (errno.EAGAIN, errno.EWOULDBLOCK, errno.ENOBUFS)
_SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
_TIMESPEC = struct.Struct("@qq")


def enable_timestamps(sock: socket.socket) -> bool:
    """Ask the kernel to timestamp each arrival (``SO_TIMESTAMPNS``); whether it will."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
    except OSError:
        return False
    return True


class ReplyReader:
    """Reads a socket's waiting replies into a :class:`LoadCore`, each at its kernel
    arrival time where the kernel gives one (``SO_TIMESTAMPNS``), else at the read."""

    def __init__(self, sock: socket.socket, core: LoadCore) -> None:
        self._sock = sock
        self._core = core
        self.kernel_time = enable_timestamps(sock)
        self._space = socket.CMSG_SPACE(_TIMESPEC.size)
        self.refused = False

    def read(self, limit: int) -> int:
        """Read up to ``limit`` replies; how many were read."""
        if not self.kernel_time:
            return self._read_plain(limit)
        recvmsg = self._sock.recvmsg
        receive = self._core.receive
        monotonic = time.monotonic
        offset = time.time() - monotonic()  # CLOCK_REALTIME - CLOCK_MONOTONIC, now
        space = self._space
        unpack = _TIMESPEC.unpack_from
        count = 0
        while count < limit:
            try:
                data, ancillary, _, _ = recvmsg(_RECV_BUFFER, space)
            except (BlockingIOError, InterruptedError):
                break
            except ConnectionRefusedError:
                self.refused = True
                break
            except OSError:
                break  # another ICMP error: the requests will time out
            read_at = monotonic()
            arrived = read_at
            for level, kind, value in ancillary:
                if level == socket.SOL_SOCKET and kind == _SO_TIMESTAMPNS:
                    seconds, nanoseconds = unpack(value)
                    arrived = min(read_at, seconds + nanoseconds * 1e-9 - offset)
            receive((data,), arrived, read_lag_us=int((read_at - arrived) * 1_000_000))
            count += 1
        return count

    def _read_plain(self, limit: int) -> int:
        replies, refused = read_waiting(self._sock, limit)
        if refused:
            self.refused = True
        if replies:
            self._core.receive(replies, time.monotonic())  # the event loop's clock
        return len(replies)


def read_waiting(sock: socket.socket, limit: int) -> tuple[list[bytes], bool]:
    """Up to ``limit`` datagrams waiting on a connected UDP socket, and whether the read
    ended on an ICMP port unreachable (``ECONNREFUSED``); another ICMP error ends it
    too, and the requests it concerned time out."""
    recv = sock.recv
    replies: list[bytes] = []
    append = replies.append
    try:
        while len(replies) < limit:
            append(recv(_RECV_BUFFER))
    except (BlockingIOError, InterruptedError):
        pass
    except ConnectionRefusedError:
        return replies, True
    except OSError:
        pass  # another ICMP error: the requests will time out
    return replies, False


def open_udp_socket(server: Address) -> socket.socket:
    """A non-blocking UDP socket connected to ``server`` (ICMP errors become ECONNREFUSED)."""
    family = socket.AF_INET6 if ":" in server[0] else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            with contextlib.suppress(OSError):  # best effort
                sock.setsockopt(socket.SOL_SOCKET, option, _SOCKET_BUFFER)
        sock.connect(server)
    except BaseException:
        sock.close()
        raise
    return sock


class UdpGenerator(Generator):
    """Closed loop (keep ``concurrency`` in flight) or open loop (follow a schedule)."""

    core: LoadCore

    def __init__(
        self,
        core: LoadCore,
        server: Address,
        *,
        concurrency: int,
        schedule: ArrivalSchedule | None,
        batch: int = 64,
        gso: bool = True,
    ) -> None:
        super().__init__(server)
        self.core = core
        self.concurrency = concurrency
        self.schedule = schedule
        self.batch = batch
        self.gso = gso and hasattr(socket.socket, "sendmsg")
        self._sock = open_udp_socket(server)
        self._fd = self._sock.fileno()
        self._queue: deque[bytes] = deque()
        self._writing = False
        self._reader = ReplyReader(self._sock, core)

    @property
    def _refused(self) -> bool:
        return self._reader.refused

    # -- life cycle --------------------------------------------------------------

    async def _start(self) -> None:
        self._loop.add_reader(self._fd, self._on_readable)
        self._pump(self._loop.time())

    def stop(self) -> None:
        """Stop sending now; the run ends when the requests in flight are resolved."""
        now = self._loop.time()
        self.core.stop(now)
        self._check_done(now)

    def close(self) -> None:
        super().close()
        if self._sock.fileno() >= 0:
            self._loop.remove_reader(self._fd)
            if self._writing:
                self._loop.remove_writer(self._fd)
            self._sock.close()

    # -- input ---------------------------------------------------------------------

    def _on_readable(self) -> None:
        self.replies += self._reader.read(self.batch * 4)
        self._pump(self._loop.time())

    def _pump(self, now: float) -> None:
        """Expire, send what is due, re-arm the timer, notice the end."""
        core = self.core
        if self._refused and self.replies == 0:
            self._fail_refused()
            return
        core.expire(now)
        if self.schedule is None:
            want = self.concurrency - core.in_flight
            if want > 0:
                payloads = core.issue(want, self._loop.time())  # the send's own time
                self._transmit(payloads)
        else:
            intended = self.schedule.due(now)
            if intended:
                self._transmit(core.issue_scheduled(intended, now))
        if self._check_done(now):
            return
        self._arm(now)

    def _check_done(self, now: float) -> bool:
        if self.core.finished(now) and not self._done.done():
            self._done.set_result(None)
            return True
        return self._done.done()

    def _arm(self, now: float) -> None:
        when = self.core.next_deadline()
        core = self.core
        if core.sending(now):
            candidates = [core.stop_at]
            if self.schedule is not None:
                candidates.append(self.schedule.next_time())
            if when is not None:
                candidates.append(when)
            when = min(candidates)
        if when is None or when == float("inf"):
            return
        self._timer.arm_earlier(when)  # an armed earlier timer fires first and re-arms

    # -- output --------------------------------------------------------------------

    def _transmit(self, payloads: list[bytes]) -> None:
        """Send at once; queue only while the socket is full."""
        if not payloads:
            return
        if self._queue:
            self._queue.extend(payloads)
            return
        sent = self._send_batch(payloads)
        if sent < len(payloads):
            self._queue.extend(payloads[sent:])
            if not self._writing:
                self._loop.add_writer(self._fd, self._on_writable)
                self._writing = True

    def _on_writable(self) -> None:
        queue = self._queue
        while queue:
            chunk = [queue.popleft() for _ in range(min(len(queue), self.batch))]
            sent = self._send_batch(chunk)
            if sent < len(chunk):
                queue.extendleft(reversed(chunk[sent:]))
                return
        self._loop.remove_writer(self._fd)
        self._writing = False

    def _send_batch(self, payloads: list[bytes]) -> int:
        """Send as many of ``payloads`` as the socket takes; return how many."""
        sock = self._sock
        count = len(payloads)
        index = 0
        try:
            while index < count:
                size = len(payloads[index])
                if self.gso:
                    per_call = min(self.batch, _GSO_MAX_SEGMENTS, max(1, _GSO_MAX_BYTES // size))
                    stop = min(count, index + per_call)
                    if len(set(map(len, payloads[index:stop]))) == 1:
                        end = stop
                    else:
                        end = index + 1
                        while end < stop and len(payloads[end]) == size:
                            end += 1
                    if end - index > 1:
                        try:
                            sock.sendmsg(
                                [b"".join(payloads[index:end])],
                                [(_SOL_UDP, _UDP_SEGMENT, struct.pack("=H", size))],
                            )
                        except (BlockingIOError, InterruptedError, ConnectionRefusedError):
                            raise
                        except OSError as exc:
                            if exc.errno in _SEND_BLOCKED:
                                raise
                            self.gso = False  # the kernel has no UDP GSO: one by one
                            continue
                        index = end
                        continue
                sock.send(payloads[index])
                index += 1
        except (BlockingIOError, InterruptedError):
            return index
        except ConnectionRefusedError:
            self._reader.refused = True
            return count  # dropped: those requests will time out
        except OSError as exc:
            if exc.errno in _SEND_BLOCKED:
                return index
            return count  # dropped: those requests will time out
        return count
