"""TCP glue of the proxy: relay each connection through a sans-IO stream shaper.

Rule: this module only moves bytes.  Each direction is a reader that hands
every chunk to its shaper (:class:`~udpkit.core.toxics.StreamToxics` for a
named Toxiproxy proxy, :class:`~udpkit.core.toxics.PolicyStream` for the
``--loss ...`` proxy) and a writer that carries out the events it returns at
their times, from one time-ordered queue, so latency does not cut throughput.
A half-close is passed on when the shaper says; a close or reset event ends
the whole connection (both sides), a reset with RST.  Any error on either side
ends that relay only.  :meth:`TcpRelay.send_up` and :meth:`TcpRelay.send_down`
are where payload bytes leave the proxy (a tap for recording goes there).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import socket
import struct
from collections.abc import Awaitable, Callable
from typing import Protocol

from udpkit.capture.writer import PcapRecorder, TcpFlow
from udpkit.core.toxics import Close, EndOfStream, Reset, StreamEvent, Write
from udpkit.proxy.stats import GlueCounters

_CHUNK = 65536
_MAX_QUEUED = 1024 * 1024
"""Bytes read ahead of the writer per direction (then reading pauses: backpressure)."""
_DIRECT_WRITE = 64 * 1024
"""A chunk due now is written by the reader itself while the socket's buffer holds less
than this (asyncio's default high-water mark); beyond it, the writer task waits for it."""

OpenUpstream = Callable[[], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]


class StreamShaper(Protocol):
    """What one direction of a connection does to the bytes (sans-IO)."""

    def start(self, now: float) -> list[StreamEvent]: ...

    def feed(self, chunk: bytes, now: float) -> list[StreamEvent]: ...

    def end(self, now: float) -> list[StreamEvent]: ...


class _Reset(Exception):
    """The shaper said: reset the connection."""


class _Close(Exception):
    """The shaper said: close the connection."""


class _Outbox:
    """One direction's events waiting for their time."""

    def __init__(self, shaper: StreamShaper) -> None:
        self.shaper = shaper
        self.heap: list[tuple[float, int, StreamEvent]] = []
        self.order = itertools.count()
        self.queued = 0
        self.changed = asyncio.Event()
        self.space = asyncio.Event()
        self.space.set()

    def put(self, events: list[StreamEvent]) -> None:
        for event in events:
            heapq.heappush(self.heap, (event.at, next(self.order), event))
            if isinstance(event, Write):
                self.queued += len(event.data)
        if self.queued >= _MAX_QUEUED:
            self.space.clear()
        if events:
            self.changed.set()

    def replace(self, shaper: StreamShaper, now: float) -> None:
        """A new shaper (the toxics changed): data already decided keeps its time, closes
        and resets the old one planned are forgotten."""
        self.shaper = shaper
        self.heap = [item for item in self.heap if isinstance(item[2], Write | EndOfStream)]
        heapq.heapify(self.heap)
        self.put(shaper.start(now))
        self.changed.set()


class TcpRelay:
    """One client connection and its upstream connection."""

    def __init__(
        self,
        client_reader: asyncio.StreamReader,
        client_writer: asyncio.StreamWriter,
        *,
        up: StreamShaper,
        down: StreamShaper,
        counters: GlueCounters,
        number: int = 0,
        tap: PcapRecorder | None = None,
    ) -> None:
        self.number = number
        self.tap = tap
        """Where forwarded bytes are recorded (``proxy --pcap``), if anywhere."""
        self.flow: TcpFlow | None = None
        """The connection's number in its proxy (seeds its decisions)."""
        self.client_reader = client_reader
        self.client_writer = client_writer
        self._up = _Outbox(up)
        self._down = _Outbox(down)
        self.counters = counters
        self._loop = asyncio.get_running_loop()

    def replace_shapers(self, up: StreamShaper, down: StreamShaper) -> None:
        now = self._loop.time()
        self._up.replace(up, now)
        self._down.replace(down, now)

    async def run(self, open_upstream: OpenUpstream, connect_timeout: float) -> None:
        """Connect upstream, relay both ways until both close or one breaks."""
        try:
            async with asyncio.timeout(connect_timeout):
                upstream_reader, upstream_writer = await open_upstream()
        except (OSError, TimeoutError):
            self.counters.tcp_upstream_failures += 1
            reset(self.client_writer)
            return
        writers = (self.client_writer, upstream_writer)
        if self.tap is not None:
            info = self.client_writer.get_extra_info
            self.flow = self.tap.tcp_flow(client=info("peername"), proxy=info("sockname"))
        now = self._loop.time()
        self._up.put(self._up.shaper.start(now))
        self._down.put(self._down.shaper.start(now))
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._read(self.client_reader, self._up, upstream_writer,
                                             self.send_up))
                group.create_task(self._write(upstream_writer, self._up, self.send_up))
                group.create_task(self._read(upstream_reader, self._down, self.client_writer,
                                             self.send_down))
                group.create_task(self._write(self.client_writer, self._down, self.send_down))
        except* _Reset:
            if self.flow is not None:
                self.flow.reset()
            for writer in writers:
                reset(writer)
        except* _Close:
            for writer in writers:
                writer.close()
        except* (OSError, asyncio.IncompleteReadError):
            if self.flow is not None:
                self.flow.reset()
            for writer in writers:
                writer.transport.abort()
        else:
            for writer in writers:
                writer.close()
        finally:
            for writer in writers:
                if not writer.transport.is_closing():
                    writer.transport.abort()

    async def _read(self, reader: asyncio.StreamReader, outbox: _Outbox,
                    writer: asyncio.StreamWriter,
                    send: Callable[[asyncio.StreamWriter, bytes], None]) -> None:
        while True:
            await outbox.space.wait()
            chunk = await reader.read(_CHUNK)
            now = self._loop.time()
            if not chunk:
                outbox.put(outbox.shaper.end(now))
                return
            events = outbox.shaper.feed(chunk, now)
            if (len(events) == 1 and not outbox.heap and type(events[0]) is Write
                    and events[0].at <= now
                    and writer.transport.get_write_buffer_size() < _DIRECT_WRITE):
                # Due now, nothing queued ahead, room in the socket's buffer: write it
                # here, not through the writer task (most chunks of an unimpaired link).
                if events[0].data:
                    send(writer, events[0].data)
                continue
            outbox.put(events)

    async def _write(self, writer: asyncio.StreamWriter, outbox: _Outbox,
                     send: Callable[[asyncio.StreamWriter, bytes], None]) -> None:
        heap = outbox.heap
        while True:
            heap = outbox.heap
            if not heap:
                outbox.changed.clear()
                await outbox.changed.wait()
                continue
            wait = heap[0][0] - self._loop.time()
            if wait > 0:
                outbox.changed.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await outbox.changed.wait()
                continue
            _, _, event = heapq.heappop(heap)
            if isinstance(event, Write):
                outbox.queued -= len(event.data)
                if outbox.queued < _MAX_QUEUED:
                    outbox.space.set()
                if event.data:
                    send(writer, event.data)
                    await writer.drain()
            elif isinstance(event, EndOfStream):
                if writer.can_write_eof():
                    writer.write_eof()
                else:
                    writer.close()
                if self.flow is not None:
                    self.flow.end(send == self.send_up)
                return
            elif isinstance(event, Close):
                raise _Close
            elif isinstance(event, Reset):
                raise _Reset

    # The two places where payload bytes leave the proxy, one per direction.

    def send_up(self, writer: asyncio.StreamWriter, data: bytes) -> None:
        """Client to server: ``data`` goes to the upstream connection."""
        writer.write(data)
        if self.flow is not None:
            self.flow.data(True, data)

    def send_down(self, writer: asyncio.StreamWriter, data: bytes) -> None:
        """Server to client: ``data`` goes to the client."""
        writer.write(data)
        if self.flow is not None:
            self.flow.data(False, data)


def reset(writer: asyncio.StreamWriter) -> None:
    """Abort with RST (``SO_LINGER`` 0), not FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
