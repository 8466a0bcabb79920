"""One HTTP/1.1 request head in, one response out: the shared core of udpkit's small HTTP
endpoints (the proxy's control API, the server's ``/metrics``).

Rule: the request head is untrusted bytes, decoded by :func:`parse_head_untrusted`, which
may raise only :class:`~udpkit.core.errors.BadInput`; every number in it is ASCII digits of
bounded length before it is a number (RFC 9110 §8.6: ``Content-Length = 1*DIGIT``, and
DIGIT is ASCII; Python's ``str.isdigit`` and ``int`` also take ``²`` or Arabic-Indic digits).
Responses are whole values, encoded once; one request per connection
(``Connection: close``), so nothing is kept between requests.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from udpkit.core.addresses import is_ascii_decimal
from udpkit.core.errors import BadInput

MAX_LENGTH_DIGITS = 9
"""Content-Length digits accepted (under 1 GB); the endpoints' own body limits are lower."""

REASONS = {
    200: "OK", 201: "Created", 204: "No Content", 400: "Bad Request", 404: "Not Found",
    405: "Method Not Allowed", 408: "Request Timeout", 409: "Conflict", 411: "Length Required",
    413: "Content Too Large",
    431: "Request Header Fields Too Large", 500: "Internal Server Error",
    503: "Service Unavailable",
}


def ascii_digits_untrusted(text: str, *, what: str, max_digits: int) -> int:
    """``text`` as a non-negative integer if it is 1 to ``max_digits`` ASCII digits."""
    if not (0 < len(text) <= max_digits and is_ascii_decimal(text)):
        raise BadInput(f"bad {what} {text[:40]!r} (expected 1 to {max_digits} digits 0-9)")
    return int(text)


@dataclass(frozen=True, slots=True)
class RequestHead:
    method: str
    path: str
    headers: dict[str, str]

    @property
    def content_length(self) -> int:
        """The declared body length (0 if none); :class:`BadInput` unless plain digits."""
        value = self.headers.get("content-length")
        if value is None:
            return 0
        return ascii_digits_untrusted(value, what="Content-Length",
                                      max_digits=MAX_LENGTH_DIGITS)


def parse_head_untrusted(head: bytes) -> RequestHead:
    """The request line and headers (without the blank line); only raises BadInput."""
    text = head.decode("latin-1")  # decodes any bytes
    lines = text.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise BadInput(f"bad request line {lines[0][:80]!r}")
    method, target, _version = parts
    if not (method.isascii() and method.isalpha() and method.isupper()):
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
        key = name.lower()
        if key == "content-length" and key in headers:
            raise BadInput("more than one Content-Length")  # RFC 9112 §6.3: a smuggling risk
        headers[key] = value.strip()
    path = target.split("?", 1)[0]
    return RequestHead(method, path, headers)


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()

    def encode(self) -> bytes:
        lines = [
            f"HTTP/1.1 {self.status} {REASONS.get(self.status, 'Error')}",
            f"Content-Type: {self.content_type}",
            f"Content-Length: {len(self.body)}",
            "Connection: close",
            *(f"{name}: {value}" for name, value in self.headers),
        ]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + self.body


def json_response(status: int, document: object, *headers: tuple[str, str]) -> Response:
    return Response(status, json.dumps(document, indent=2).encode() + b"\n",
                    headers=tuple(headers))


def error(status: int, message: str, *headers: tuple[str, str]) -> Response:
    """A JSON error body ``{"error": message}``: what was wrong, in words."""
    return json_response(status, {"error": message}, *headers)
