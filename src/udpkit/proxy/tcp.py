"""TCP glue of the proxy: relay each connection through the stream policy.

Rule: this module only moves bytes.  Each direction is a reader that asks
the policy when each chunk may be written (latency, bandwidth, reset after N
bytes) and a writer that waits until then, so latency does not cut
throughput.  A close is passed on after ``slow_close``; a reset limit aborts
both sockets with RST.  Any error on either side ends that relay only.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import Awaitable, Callable

from udpkit.capture.writer import PcapRecorder, TcpFlow
from udpkit.core.impairment import LinkPolicy, StreamState
from udpkit.proxy.stats import GlueCounters

_CHUNK = 65536
_QUEUE = 16
"""Chunks read ahead of the writer per direction (then reading pauses: backpressure)."""

_Item = tuple[float, bytes, bool] | None
"""(when, data, reset after) or ``None`` for end of stream."""

OpenUpstream = Callable[[], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]


class _Reset(Exception):
    """The policy's byte limit was reached: reset the connection."""


class TcpRelay:
    """One client connection and its upstream connection."""

    def __init__(
        self,
        client_reader: asyncio.StreamReader,
        client_writer: asyncio.StreamWriter,
        *,
        up: LinkPolicy,
        down: LinkPolicy,
        counters: GlueCounters,
        tap: PcapRecorder | None = None,
    ) -> None:
        self.tap = tap
        self.flow: TcpFlow | None = None
        self.client_reader = client_reader
        self.client_writer = client_writer
        self.up = up
        self.down = down
        self.counters = counters
        self._loop = asyncio.get_running_loop()

    async def run(self, open_upstream: OpenUpstream, connect_timeout: float) -> None:
        """Connect upstream, relay both ways until both close or one breaks."""
        try:
            async with asyncio.timeout(connect_timeout):
                upstream_reader, upstream_writer = await open_upstream()
        except (OSError, TimeoutError):
            self.counters.tcp_upstream_failures += 1
            _reset(self.client_writer)
            return
        writers = (self.client_writer, upstream_writer)
        if self.tap is not None:
            info = self.client_writer.get_extra_info
            self.flow = self.tap.tcp_flow(client=info("peername"), proxy=info("sockname"))
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._direction(
                    self.client_reader, upstream_writer, self.up))
                group.create_task(self._direction(
                    upstream_reader, self.client_writer, self.down))
        except* _Reset:
            if self.flow is not None:
                self.flow.reset()
            for writer in writers:
                _reset(writer)
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

    async def _direction(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, policy: LinkPolicy
    ) -> None:
        queue: asyncio.Queue[_Item] = asyncio.Queue(_QUEUE)
        state = StreamState()
        async with asyncio.TaskGroup() as group:
            group.create_task(self._read(reader, queue, policy, state))
            group.create_task(self._write(writer, queue, policy, to_server=policy is self.up))

    async def _read(
        self,
        reader: asyncio.StreamReader,
        queue: asyncio.Queue[_Item],
        policy: LinkPolicy,
        state: StreamState,
    ) -> None:
        while True:
            chunk = await reader.read(_CHUNK)
            if not chunk:
                await queue.put(None)
                return
            decision = policy.decide_stream(chunk, self._loop.time(), state)
            await queue.put((decision.at, decision.data, decision.reset))
            if decision.reset:
                return

    async def _write(
        self, writer: asyncio.StreamWriter, queue: asyncio.Queue[_Item], policy: LinkPolicy,
        *, to_server: bool,
    ) -> None:
        while True:
            item = await queue.get()
            if item is None:
                # Toxiproxy's slow_close: hold the close back, then pass it on.
                if policy.settings.slow_close:
                    await asyncio.sleep(policy.settings.slow_close)
                if writer.can_write_eof():
                    writer.write_eof()
                else:
                    writer.close()
                if self.flow is not None:
                    self.flow.end(to_server)
                return
            at, data, reset = item
            wait = at - self._loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if data:
                writer.write(data)
                if self.flow is not None:
                    self.flow.data(to_server, data)
                await writer.drain()
            if reset:
                raise _Reset


def _reset(writer: asyncio.StreamWriter) -> None:
    """Abort with RST (``SO_LINGER`` 0), not FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
