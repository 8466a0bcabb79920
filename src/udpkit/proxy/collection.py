"""The named proxies of one process and what Toxiproxy's API does to them.

Rule: one owner for the set of named proxies.  Every change (create, update,
delete, populate, reset, toxics) goes through one :class:`asyncio.Lock`, so
two API calls never interleave half-done; each keeps Toxiproxy's semantics
(``toxiproxy/proxy_collection.go``, ``toxic_collection.go``): create refuses a
name in use (409); populate replaces a proxy only when its listen or upstream
differs, and stops at the first proxy that cannot start, keeping those before
it; update restarts the proxy when its address changes; reset enables
every proxy and removes every toxic.  Counters of a proxy survive its changes
and go with its deletion.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import replace

from udpkit.capture.writer import PcapRecorder
from udpkit.core.addresses import parse_host_port
from udpkit.core.errors import UsageError
from udpkit.core.toxics import (
    TOXIC_EXISTS,
    TOXIC_NOT_FOUND,
    Toxic,
    ToxicError,
    toxic_from_json,
    updated_toxic,
)
from udpkit.core.toxiproxy import (
    MAX_PROXIES,
    MAX_TOXICS,
    PROXY_EXISTS,
    PROXY_NOT_FOUND,
    ProxySpec,
    proxy_update,
)
from udpkit.proxy.config import ProxyConfig
from udpkit.proxy.delay_line import DelayLine
from udpkit.proxy.named import NamedProxy


class PopulateFailed(Exception):
    """``POST /populate`` stopped at ``error``; ``done`` were created (or kept) before,
    and stay: Toxiproxy answers with the error and lists them."""

    def __init__(self, error: ToxicError, done: list[NamedProxy]) -> None:
        super().__init__(error.message)
        self.error = error
        self.done = done


class ProxyCollection:
    """Named proxies by name, in creation order."""

    def __init__(self, *, seed: int, settings: ProxyConfig, delay_line: DelayLine,
                 tap: PcapRecorder | None = None) -> None:
        self.seed = seed
        self.tap = tap
        self.settings = settings
        self.delay_line = delay_line
        self.proxies: dict[str, NamedProxy] = {}
        self.lock = asyncio.Lock()

    def __iter__(self) -> Iterator[NamedProxy]:
        return iter(list(self.proxies.values()))

    def get(self, name: str) -> NamedProxy:
        proxy = self.proxies.get(name)
        if proxy is None:
            raise ToxicError(PROXY_NOT_FOUND, 404)
        return proxy

    # -- proxies ------------------------------------------------------------------

    async def create(self, spec: ProxySpec) -> NamedProxy:
        async with self.lock:
            if spec.name in self.proxies:
                raise ToxicError(PROXY_EXISTS, 409)
            return await self._add(spec)

    async def _add(self, spec: ProxySpec, *, replacing: NamedProxy | None = None) -> NamedProxy:
        if len(self.proxies) - (replacing is not None) >= MAX_PROXIES:
            raise ToxicError(f"more than {MAX_PROXIES} proxies", 400)
        proxy = NamedProxy(spec, seed=self.seed, settings=self.settings,
                           delay_line=self.delay_line, tap=self.tap)
        await _start(proxy)
        if replacing is not None:
            del self.proxies[spec.name]
        self.proxies[spec.name] = proxy
        return proxy

    async def populate(self, specs: list[ProxySpec]) -> list[NamedProxy]:
        """Create each, or replace a same-named one whose listen or upstream differs.

        As Toxiproxy (``PopulateJson``): in order, stopping at the first that cannot
        start; those done before stay (no rollback), and :class:`PopulateFailed` says
        which.  A proxy being replaced is stopped first: if its replacement cannot
        start it stays, stopped (``enabled: false``)."""
        out: list[NamedProxy] = []
        async with self.lock:
            for spec in specs:
                existing = self.proxies.get(spec.name)
                try:
                    if existing is None:
                        out.append(await self._add(spec))
                        continue
                    if not _differs(existing, spec):
                        out.append(existing)
                        continue
                    await existing.stop()
                    existing.spec = replace(existing.spec, enabled=False)
                    out.append(await self._add(spec, replacing=existing))
                except ToxicError as exc:
                    raise PopulateFailed(exc, out) from None
        return out

    async def update(self, name: str, body: object) -> NamedProxy:
        async with self.lock:
            proxy = self.get(name)
            spec = proxy_update(proxy.spec, body)
            if _differs(proxy, spec):
                await proxy.stop()
                proxy.spec = spec
                await _start(proxy)
                return proxy
            was_enabled = proxy.spec.enabled
            proxy.spec = spec
            if spec.enabled and not was_enabled:
                await _start(proxy)
            elif was_enabled and not spec.enabled:
                await proxy.disable()
            return proxy

    async def delete(self, name: str) -> None:
        async with self.lock:
            proxy = self.get(name)
            del self.proxies[name]
            await proxy.stop()

    async def reset(self) -> None:
        """Enable every proxy, remove every toxic."""
        async with self.lock:
            for proxy in self:
                proxy.set_toxics([])
                if not proxy.spec.enabled:
                    proxy.spec = replace(proxy.spec, enabled=True)
                    await _start(proxy)

    async def close(self) -> None:
        async with self.lock:
            for proxy in self:
                await proxy.stop()

    # -- toxics -------------------------------------------------------------------

    async def add_toxic(self, name: str, body: object) -> Toxic:
        async with self.lock:
            proxy = self.get(name)
            toxic = toxic_from_json(body, protocols=proxy.spec.protocols)
            if any(t.name == toxic.name for t in proxy.toxics):
                raise ToxicError(TOXIC_EXISTS, 409)
            if len(proxy.toxics) >= MAX_TOXICS:
                raise ToxicError(f"more than {MAX_TOXICS} toxics on one proxy", 400)
            proxy.set_toxics([*proxy.toxics, toxic])
            return toxic

    def get_toxic(self, name: str, toxic_name: str) -> Toxic:
        for toxic in self.get(name).toxics:
            if toxic.name == toxic_name:
                return toxic
        raise ToxicError(TOXIC_NOT_FOUND, 404)

    async def update_toxic(self, name: str, toxic_name: str, body: object) -> Toxic:
        async with self.lock:
            proxy = self.get(name)
            old = self.get_toxic(name, toxic_name)
            new = updated_toxic(old, body)
            proxy.set_toxics([new if t.name == toxic_name else t for t in proxy.toxics])
            return new

    async def remove_toxic(self, name: str, toxic_name: str) -> None:
        async with self.lock:
            proxy = self.get(name)
            self.get_toxic(name, toxic_name)
            proxy.set_toxics([t for t in proxy.toxics if t.name != toxic_name])


def _differs(proxy: NamedProxy, spec: ProxySpec) -> bool:
    """Toxiproxy's ``Differs``: the listen address (as bound) or the upstream changed."""
    if spec.upstream != proxy.spec.upstream or spec.protocol != proxy.spec.protocol:
        return True
    host, port = spec.listen_address
    bound_host, bound_port = parse_host_port(proxy.listen)
    return host != bound_host or port not in (0, bound_port)


async def _start(proxy: NamedProxy) -> None:
    """Start, or say why not as Toxiproxy does (a 500 with the system's words); a proxy
    that could not start is closed and shows ``enabled: false``."""
    try:
        await proxy.start()
    except (UsageError, OSError) as exc:
        await proxy.stop()
        proxy.spec = replace(proxy.spec, enabled=False)
        if isinstance(exc, OSError):
            raise ToxicError(f"listen {proxy.spec.listen}: {exc.strerror or exc}", 500) from None
        raise ToxicError(str(exc), 500) from None
