"""The proxy's HTTP JSON control API: read stats, change impairments while running.

Rule: the request head is untrusted bytes, decoded by one function that may
raise only :class:`~udpkit.core.errors.BadInput`; routing is a plain function
from (method, path, body) to (status, JSON), so it is tested without sockets.
One request per connection (``Connection: close``), bounded head and body,
bounded time.  Every malformed request gets a 4xx with a message saying what
was wrong; nothing a client sends stops the proxy.

Endpoints::

    GET   /                 the list below
    GET   /stats            counters per direction and of the proxy itself
    GET   /impairments      current settings per direction
    PUT   /impairments      {"up": {...}, "down": {...}, "both": {...}}: replace
    PATCH /impairments      the same, changing only the fields given
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from udpkit.core.errors import BadInput, UsageError
from udpkit.core.impairment import LinkSettings, update_from_json
from udpkit.proxy.stats import ProxyStats

MAX_HEAD = 16 * 1024
MAX_BODY = 64 * 1024
REQUEST_TIMEOUT = 10.0

_REASONS = {
    200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
    408: "Request Timeout", 411: "Length Required", 413: "Content Too Large",
    431: "Request Header Fields Too Large", 500: "Internal Server Error",
}


class Controlled(Protocol):
    """What the control API needs from a proxy."""

    @property
    def settings(self) -> LinkSettings: ...

    def set_settings(self, settings: LinkSettings) -> None: ...

    def stats(self) -> ProxyStats: ...


@dataclass(frozen=True, slots=True)
class RequestHead:
    method: str
    path: str
    headers: dict[str, str]

    @property
    def content_length(self) -> int:
        """The declared body length; :class:`BadInput` if it is not a number."""
        value = self.headers.get("content-length", "0").strip()
        if not value.isdigit():
            raise BadInput(f"bad Content-Length {value[:40]!r}")
        return int(value)


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: dict[str, object]
    headers: tuple[tuple[str, str], ...] = ()

    def encode(self) -> bytes:
        payload = json.dumps(self.body, indent=2, sort_keys=False).encode() + b"\n"
        lines = [
            f"HTTP/1.1 {self.status} {_REASONS.get(self.status, 'Error')}",
            "Content-Type: application/json",
            f"Content-Length: {len(payload)}",
            "Connection: close",
            *(f"{name}: {value}" for name, value in self.headers),
        ]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + payload


def error(status: int, message: str, *headers: tuple[str, str]) -> Response:
    return Response(status, {"error": message}, headers)


def parse_head_untrusted(head: bytes) -> RequestHead:
    """The request line and headers (without the blank line); only raises BadInput."""
    try:
        text = head.decode("latin-1")
    except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes anything
        raise BadInput("undecodable request head") from None
    lines = text.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise BadInput(f"bad request line {lines[0][:80]!r}")
    method, target, _version = parts
    if not method.isalpha() or not method.isupper():
        raise BadInput(f"bad method {method[:20]!r}")
    if not target.startswith("/"):
        raise BadInput(f"bad request target {target[:80]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise BadInput(f"bad header line {line[:80]!r}")
        headers[name.lower()] = value.strip()
    path = target.split("?", 1)[0]
    return RequestHead(method, path, headers)


_ROUTES: dict[str, tuple[str, ...]] = {
    "/": ("GET",),
    "/stats": ("GET",),
    "/impairments": ("GET", "PUT", "PATCH"),
}


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
        return Response(200, {"endpoints": [
            "GET /stats", "GET /impairments", "PUT /impairments", "PATCH /impairments"]})
    if path == "/stats":
        return Response(200, proxy.stats().as_json())
    if method == "GET":
        return Response(200, proxy.settings.as_json())
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return error(400, f"body is not valid JSON: {exc}")
    except RecursionError:
        return error(400, "body is not valid JSON: nested too deeply")
    try:
        settings = update_from_json(proxy.settings, document, merge=method == "PATCH")
    except UsageError as exc:
        return error(400, str(exc))
    proxy.set_settings(settings)
    return Response(200, settings.as_json())


async def handle_connection(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    proxy: Controlled,
    *,
    on_error: Callable[[BaseException], None] | None = None,
) -> None:
    """Serve one request on one connection, then close it."""
    try:
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT):
                response = await _read_and_route(reader, proxy)
        except TimeoutError:
            response = error(408, f"request not complete within {REQUEST_TIMEOUT:.0f} s")
        writer.write(response.encode())
        async with asyncio.timeout(REQUEST_TIMEOUT):
            await writer.drain()
    except (OSError, TimeoutError, asyncio.IncompleteReadError):
        pass  # the client went away
    except Exception as exc:  # a bug: report it, keep the proxy running
        if on_error is not None:
            on_error(exc)
    finally:
        writer.close()


async def _read_and_route(reader: asyncio.StreamReader, proxy: Controlled) -> Response:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.LimitOverrunError:
        return error(431, f"request head longer than {MAX_HEAD} bytes")
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            raise
        return error(400, "request head ended early (no blank line)")
    try:
        request = parse_head_untrusted(head[:-4])
        if "chunked" in request.headers.get("transfer-encoding", "").lower():
            return error(411, "chunked bodies are not supported; send Content-Length")
        length = request.content_length
    except BadInput as exc:
        return error(400, str(exc))
    if length > MAX_BODY:
        return error(413, f"body of {length} bytes exceeds {MAX_BODY}")
    try:
        body = await reader.readexactly(length) if length else b""
    except asyncio.IncompleteReadError:
        return error(400, f"body shorter than its Content-Length of {length}")
    return route(request.method, request.path, body, proxy)
