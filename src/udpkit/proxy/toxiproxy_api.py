"""Toxiproxy's HTTP API (``toxiproxy/api.go``): routes, JSON shapes, status codes.

Rule: routing only.  Bodies are checked by :mod:`udpkit.core.toxiproxy` and
:mod:`udpkit.core.toxics`, changes made by
:class:`~udpkit.proxy.collection.ProxyCollection`; every refusal is a
:class:`~udpkit.core.toxics.ToxicError` turned into Toxiproxy's body
``{"error": ..., "status": ...}``.  The connection, its bounds and the untrusted
head are :mod:`udpkit.http_server`'s.  :func:`route` answers ``None`` for a path
that is not Toxiproxy's, so the ``--loss`` proxy's own routes can follow.
"""

from __future__ import annotations

import dataclasses
import urllib.parse
from collections.abc import Callable, Iterable

import udpkit
from udpkit.core.http_request import Response, json_response
from udpkit.core.toxics import STREAMS, ToxicError
from udpkit.core.toxiproxy import (
    Sample,
    error_json,
    load_json_untrusted,
    prometheus_text,
    proxies_from_json,
    proxy_from_json,
    proxy_json,
)
from udpkit.proxy.collection import PopulateFailed, ProxyCollection
from udpkit.proxy.named import DirectionCounters, NamedProxy
from udpkit.proxy.stats import GlueStats

VERSION = f"udpkit {udpkit.__version__}"


def _error(error: ToxicError, *extra: tuple[str, str]) -> Response:
    return json_response(error.status, error_json(error), *extra)


def _no_content() -> Response:
    return Response(204, b"")


def _proxy(proxy: NamedProxy) -> dict[str, object]:
    return proxy_json(proxy.spec, proxy.listen, proxy.toxics)


def _allowed(method: str, allowed: tuple[str, ...]) -> None:
    if method not in allowed:
        raise ToxicError(f"{method} is not allowed here (allowed: {', '.join(allowed)})", 405)


async def route(method: str, path: str, body: bytes,
                proxies: ProxyCollection) -> Response | None:
    """Answer one request of Toxiproxy's API; ``None`` if ``path`` is none of its routes."""
    parts = [urllib.parse.unquote(part) for part in path.strip("/").split("/")]
    try:
        return await _route(method, parts, body, proxies)
    except ToxicError as exc:
        if exc.status == 405:
            return _error(exc, ("Allow", str(exc).rpartition("allowed: ")[2].rstrip(")")))
        return _error(exc)


async def _route(method: str, parts: list[str], body: bytes,
                 proxies: ProxyCollection) -> Response | None:
    head = parts[0]
    if parts == ["version"]:
        _allowed(method, ("GET",))
        return json_response(200, {"version": VERSION})
    if parts == ["reset"]:
        _allowed(method, ("POST",))
        await proxies.reset()
        return _no_content()
    if parts == ["metrics"]:
        _allowed(method, ("GET",))
        return Response(200, metrics_text(proxies).encode(),
                        content_type="text/plain; version=0.0.4; charset=utf-8")
    if parts == ["populate"]:
        _allowed(method, ("POST",))
        # Toxiproxy's Populate answers an error with its status, and the proxies made
        # before it ("proxies": null when none, as Go writes an empty slice).
        try:
            specs = proxies_from_json(load_json_untrusted(body), allow_toxics=False)
            created = await proxies.populate(specs)
        except ToxicError as exc:
            return json_response(exc.status, {**error_json(exc), "proxies": None})
        except PopulateFailed as failed:
            return json_response(failed.error.status, {
                **error_json(failed.error),
                "proxies": [_proxy(p) for p in failed.done] or None})
        return json_response(201, {"proxies": [_proxy(p) for p in created]})
    if head != "proxies" or len(parts) > 4:
        return None
    if len(parts) == 1:
        _allowed(method, ("GET", "POST"))
        if method == "GET":
            return json_response(200, {p.spec.name: _proxy(p) for p in proxies})
        spec = proxy_from_json(load_json_untrusted(body))
        return json_response(201, _proxy(await proxies.create(spec)))
    name = parts[1]
    if len(parts) == 2:
        _allowed(method, ("GET", "POST", "PATCH", "DELETE"))
        if method == "GET":
            return json_response(200, _proxy(proxies.get(name)))
        if method == "DELETE":
            await proxies.delete(name)
            return _no_content()
        proxies.get(name)  # 404 before looking at the body, as Toxiproxy
        return json_response(200, _proxy(await proxies.update(name, load_json_untrusted(body))))
    if parts[2] != "toxics":
        return None
    if len(parts) == 3:
        _allowed(method, ("GET", "POST"))
        if method == "GET":
            return json_response(200, [t.as_json() for t in proxies.get(name).toxics])
        proxies.get(name)
        toxic = await proxies.add_toxic(name, load_json_untrusted(body))
        return json_response(200, toxic.as_json())
    toxic_name = parts[3]
    _allowed(method, ("GET", "POST", "PATCH", "DELETE"))
    if method == "GET":
        return json_response(200, proxies.get_toxic(name, toxic_name).as_json())
    if method == "DELETE":
        await proxies.remove_toxic(name, toxic_name)
        return _no_content()
    proxies.get_toxic(name, toxic_name)
    toxic = await proxies.update_toxic(name, toxic_name, load_json_untrusted(body))
    return json_response(200, toxic.as_json())


# --------------------------------------------------------------------------- /metrics

_DIRECTION_HELP = {
    "datagrams_received": "UDP datagrams read",
    "datagrams_forwarded": "UDP datagrams handed on (at least once)",
    "datagrams_dropped": "UDP datagrams dropped by a toxic",
    "dropped_disabled": "UDP datagrams dropped because the proxy was disabled",
    "chunks": "TCP reads",
}


def metrics_text(proxies: ProxyCollection,
                 extra: Callable[[], Iterable[tuple[str, str, str, Iterable[Sample]]]]
                 | None = None) -> str:
    """Prometheus text: Toxiproxy's byte counters, then udpkit's per proxy and per toxic."""
    rows: list[tuple[NamedProxy, str, DirectionCounters]] = []
    for proxy in proxies:
        for direction, stream in zip(("up", "down"), STREAMS, strict=True):
            rows.append((proxy, stream, proxy.direction_counters(direction)))

    def labels(proxy: NamedProxy, stream: str) -> dict[str, str]:
        return {"direction": stream, "listener": proxy.listen, "proxy": proxy.spec.name,
                "upstream": proxy.spec.upstream}

    families: list[tuple[str, str, str, Iterable[Sample]]] = [
        ("toxiproxy_proxy_received_bytes_total", "counter",
         "Bytes received by the proxy, per direction.",
         [(labels(p, s), c.bytes_received) for p, s, c in rows]),
        ("toxiproxy_proxy_sent_bytes_total", "counter",
         "Bytes sent by the proxy, per direction (after toxics).",
         [(labels(p, s), c.bytes_sent) for p, s, c in rows]),
    ]
    for field, help_text in _DIRECTION_HELP.items():
        families.append((f"udpkit_proxy_{field}_total", "counter", help_text + ".",
                         [({"proxy": p.spec.name, "direction": s}, getattr(c, field))
                          for p, s, c in rows]))
    glue = [(p, p.glue_stats()) for p in proxies]
    for field in (spec.name for spec in dataclasses.fields(GlueStats)):
        families.append((f"udpkit_proxy_{field}_total", "counter",
                         f"{field.replace('_', ' ').capitalize()}.",
                         [({"proxy": p.spec.name}, getattr(g, field)) for p, g in glue]))
    families.append(("udpkit_proxy_enabled", "gauge", "1 if the proxy is enabled.",
                     [({"proxy": p.spec.name}, float(p.spec.enabled)) for p in proxies]))
    toxic_rows = []
    for proxy in proxies:
        types: dict[str, tuple[str, str]] = {t.name: (t.type, t.stream) for t in proxy.toxics}
        for toxic_name, counters in proxy.toxic_counters.items():
            kind, where = types.get(toxic_name, ("removed", ""))
            for event, value in counters.as_json().items():
                toxic_rows.append(({"proxy": proxy.spec.name, "toxic": toxic_name,
                                    "type": kind, "stream": where, "event": event},
                                   float(value)))
    families.append(("udpkit_toxic_events_total", "counter",
                     "What each toxic did (event: applied, skipped, bytes, dropped, ...).",
                     toxic_rows))
    if extra is not None:
        families.extend(extra())
    return prometheus_text(families)
