"""An impairment proxy on its own thread and event loop, for any test suite.

Rule: usable from plain synchronous tests and from asyncio tests alike, with
or without pytest-asyncio: the proxy runs on a private loop in a daemon
thread; every call from the test's thread goes through that loop
(``run_coroutine_threadsafe``), so nothing is shared unsynchronised.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable
from types import TracebackType
from typing import TypeVar

from udpkit.core.addresses import parse_host_port
from udpkit.core.impairment import NO_IMPAIRMENTS, Impairments, LinkSettings
from udpkit.proxy.config import ProxyConfig
from udpkit.proxy.runner import Proxy
from udpkit.proxy.stats import ProxyStats

T = TypeVar("T")

_START_TIMEOUT = 10.0


class BackgroundProxy:
    """``with BackgroundProxy(ProxyConfig(...)) as proxy: proxy.address``."""

    def __init__(self, config: ProxyConfig) -> None:
        self.config = config
        self._loop = asyncio.new_event_loop()
        self._proxy: Proxy | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="udpkit-proxy", daemon=True)

    # -- life cycle -------------------------------------------------------------

    def start(self) -> BackgroundProxy:
        self._thread.start()
        if not self._ready.wait(_START_TIMEOUT):
            raise RuntimeError("the proxy did not start within 10 s")
        if self._error is not None:
            self._thread.join()
            raise self._error
        return self

    def close(self) -> None:
        if self._thread.is_alive() and self._proxy is not None:
            self._loop.call_soon_threadsafe(self._proxy.request_exit)
            self._thread.join(_START_TIMEOUT)
        if not self._loop.is_closed() and not self._thread.is_alive():
            self._loop.close()

    def __enter__(self) -> BackgroundProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._main())
        finally:
            self._ready.set()

    async def _main(self) -> None:
        proxy = Proxy(self.config)
        try:
            await proxy.startup()
        except BaseException as exc:
            self._error = exc
            return
        self._proxy = proxy
        self._ready.set()
        try:
            await proxy.main_loop()
        finally:
            await proxy.shutdown()

    # -- the running proxy ---------------------------------------------------------

    @property
    def proxy(self) -> Proxy:
        if self._proxy is None:
            raise RuntimeError("the proxy is not running")
        return self._proxy

    @property
    def host(self) -> str:
        return self.config.host

    @property
    def port(self) -> int:
        return self.proxy.port

    def address_of(self, name: str) -> tuple[str, int]:
        """Where clients of the named proxy ``name`` send (as bound)."""
        listen = self._call(lambda: self.proxy.collection.get(name).listen)
        return parse_host_port(listen)

    def named_summary(self, name: str) -> dict[str, object]:
        """The counters of the named proxy ``name`` (as in the exit summary)."""
        return self._call(lambda: self.proxy.collection.get(name).summary())

    def add_toxic(self, proxy: str, toxic: dict[str, object]) -> dict[str, object]:
        """Add a toxic (Toxiproxy's JSON body) to the named proxy ``proxy``."""

        async def add() -> dict[str, object]:
            return (await self.proxy.collection.add_toxic(proxy, toxic)).as_json()

        return asyncio.run_coroutine_threadsafe(add(), self._loop).result(_START_TIMEOUT)

    def remove_toxic(self, proxy: str, name: str) -> None:
        asyncio.run_coroutine_threadsafe(
            self.proxy.collection.remove_toxic(proxy, name), self._loop).result(_START_TIMEOUT)

    @property
    def address(self) -> tuple[str, int]:
        """Where clients send: the proxy's listening address."""
        return (self.config.host, self.proxy.port)

    @property
    def control_url(self) -> str | None:
        port = self.proxy.control_port
        if port is None:
            return None
        host = self.config.control_host
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    @property
    def seed(self) -> int:
        return self.proxy.seed

    def stats(self) -> ProxyStats:
        """The counters now (read on the proxy's loop)."""
        return self._call(self.proxy.stats)

    @property
    def settings(self) -> LinkSettings:
        return self._call(lambda: self.proxy.settings)

    def set_impairments(
        self,
        *,
        up: Impairments | None = None,
        down: Impairments | None = None,
        both: Impairments | None = None,
    ) -> None:
        """Change impairments while running; directions not given are kept."""

        def change() -> None:
            current = self.proxy.settings
            new_up = up if up is not None else both if both is not None else current.up
            new_down = down if down is not None else both if both is not None else current.down
            self.proxy.set_settings(LinkSettings(up=new_up, down=new_down))

        self._call(change)

    def clear_impairments(self) -> None:
        self.set_impairments(both=NO_IMPAIRMENTS)

    def _call(self, function: Callable[[], T]) -> T:
        if not self._thread.is_alive():
            raise RuntimeError("the proxy is not running")

        async def call() -> T:
            return function()

        future: concurrent.futures.Future[T] = asyncio.run_coroutine_threadsafe(
            call(), self._loop
        )
        return future.result(_START_TIMEOUT)
