"""The proxy's HTTP JSON control API: Toxiproxy's API, and the ``--loss`` proxy's own.

Toxiproxy's routes (``/proxies``, ``/populate``, ``/reset``, ``/version``,
``/metrics``) are :mod:`udpkit.proxy.toxiproxy_api`'s; the routes below belong to
the anonymous proxy of ``--upstream`` and the impairment flags, and answer 404
when there is none.

Rule: routing is a plain function from (method, path, body) to a response, so it is
tested without sockets; the connection, its bounds (head, body, time, connections at
once) and the untrusted head are :mod:`udpkit.http_server`'s and
:mod:`udpkit.core.http_request`'s, shared with ``/metrics``.  The body is untrusted JSON:
anything ``json.loads`` refuses (bad syntax, nesting too deep, an integer of more digits
than Python converts) is a 400, and the impairment values are checked against their
bounds (:class:`~udpkit.core.impairment.Impairments`).  Every malformed request gets a
4xx with a message saying what was wrong; nothing a client sends stops the proxy.

Endpoints::

    GET   /                 the list below
    GET   /stats            counters per direction and of the proxy itself
    GET   /impairments      current settings per direction
    PUT   /impairments      {"up": {...}, "down": {...}, "both": {...}}: replace
    PATCH /impairments      the same, changing only the fields given
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Protocol

from udpkit.core.errors import UsageError
from udpkit.core.http_request import RequestHead, Response, error, json_response
from udpkit.core.impairment import LinkSettings, update_from_json
from udpkit.http_server import HttpLimits
from udpkit.proxy import toxiproxy_api
from udpkit.proxy.collection import ProxyCollection
from udpkit.proxy.stats import ProxyStats

CONTROL_LIMITS = HttpLimits(max_head=16 * 1024, max_body=64 * 1024, request_timeout=10.0,
                            max_connections=32)
"""What one control client may use: small JSON documents, a few at once."""


class Controlled(Protocol):
    """What the control API needs from a proxy."""

    @property
    def settings(self) -> LinkSettings: ...

    def set_settings(self, settings: LinkSettings) -> None: ...

    def stats(self) -> ProxyStats: ...

    @property
    def collection(self) -> ProxyCollection: ...

    @property
    def anonymous(self) -> bool:
        """Whether an ``--upstream`` proxy runs (the routes of this module)."""


_ROUTES: dict[str, tuple[str, ...]] = {
    "/": ("GET",),
    "/stats": ("GET",),
    "/impairments": ("GET", "PUT", "PATCH"),
}


def router(proxy: Controlled) -> Callable[[RequestHead, bytes], Awaitable[Response]]:
    """The control API of ``proxy`` as an :class:`~udpkit.http_server.HttpEndpoint` router."""

    async def answer(request: RequestHead, body: bytes) -> Response:
        response = await toxiproxy_api.route(request.method, request.path, body,
                                             proxy.collection)
        if response is not None:
            return response
        if not proxy.anonymous and request.path.rstrip("/") in ("/stats", "/impairments"):
            return error(404, f"{request.path} belongs to the --upstream proxy, and there is "
                              "none; use /proxies")
        return route(request.method, request.path, body, proxy)

    return answer


def route(method: str, path: str, body: bytes, proxy: Controlled) -> Response:
    """Answer one request; a 4xx for anything malformed."""
    path = path.rstrip("/") or "/"
    allowed = _ROUTES.get(path)
    if allowed is None:
        return error(404, f"no such endpoint {path!r}; try GET /")
    if method not in allowed:
        return error(405, f"{method} is not allowed on {path} (allowed: {', '.join(allowed)})",
                     ("Allow", ", ".join(allowed)))
    if path == "/":
        return json_response(200, {"endpoints": [
            "GET /stats", "GET /impairments", "PUT /impairments", "PATCH /impairments",
            "GET /version", "GET /proxies", "POST /proxies", "POST /populate",
            "GET /proxies/{proxy}", "POST /proxies/{proxy}", "DELETE /proxies/{proxy}",
            "GET /proxies/{proxy}/toxics", "POST /proxies/{proxy}/toxics",
            "GET /proxies/{proxy}/toxics/{toxic}", "POST /proxies/{proxy}/toxics/{toxic}",
            "DELETE /proxies/{proxy}/toxics/{toxic}", "POST /reset", "GET /metrics"]})
    if path == "/stats":
        return json_response(200, proxy.stats().as_json())
    if method == "GET":
        return json_response(200, proxy.settings.as_json())
    try:
        document = json.loads(body)
    except RecursionError:
        return error(400, "body is not valid JSON: nested too deeply")
    except ValueError as exc:  # JSONDecodeError, bad UTF-8, an integer of too many digits
        return error(400, f"body is not valid JSON: {str(exc)[:200]}")
    try:
        settings = update_from_json(proxy.settings, document, merge=method == "PATCH")
    except UsageError as exc:
        return error(400, str(exc))
    proxy.set_settings(settings)
    return json_response(200, settings.as_json())
