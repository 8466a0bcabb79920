"""The blocking client: the asyncio client run on a private event loop.

Rule: one implementation of the protocol glue; this class only owns a loop
(:class:`asyncio.Runner`) and forwards.  Not for use inside a running event
loop: use :class:`~udpkit.client.aio.AsyncClient` there.
"""

from __future__ import annotations

import asyncio
import random
from types import TracebackType

from udpkit.apps import DEFAULT_APP, ReplyRuleLike
from udpkit.client.aio import AsyncClient
from udpkit.core.exchange import Answered, ClientStats
from udpkit.core.framing import FramingName
from udpkit.core.handler import Address, TransportName
from udpkit.core.retry import RetryPolicy


class Client:
    """``with Client("127.0.0.1", 9999) as client: client.request(b"Michael")``."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 9999,
        *,
        transport: TransportName = "udp",
        timeout: float = 5.0,
        retries: int = 3,
        matcher: ReplyRuleLike = DEFAULT_APP,
        framing: FramingName = "line",
        policy: RetryPolicy | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._runner = asyncio.Runner()
        self._client = AsyncClient(
            host,
            port,
            transport=transport,
            timeout=timeout,
            retries=retries,
            matcher=matcher,
            framing=framing,
            policy=policy,
            rng=rng,
        )

    @property
    def address(self) -> Address | None:
        return self._client.address

    def connect(self) -> None:
        self._runner.run(self._client.connect())

    def request(self, payload: bytes) -> bytes:
        """Send ``payload``; return the matching reply or raise :class:`RequestFailed`."""
        return self._runner.run(self._client.request(payload))

    def exchange(self, payload: bytes) -> Answered:
        return self._runner.run(self._client.exchange(payload))

    def stats(self) -> ClientStats:
        return self._client.stats()

    def close(self) -> None:
        try:
            self._runner.run(self._client.close())
        finally:
            self._runner.close()

    def __enter__(self) -> Client:
        self.connect()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
