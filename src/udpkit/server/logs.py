"""Server log lines: start-up, access, errors, the shutdown summary.

Rule: every byte that came from the network goes through
:func:`~udpkit.core.escaping.escape_untrusted` before it is logged, and
per-request lines are only formatted when the access log is on.  A line that
describes an event carries its facts as record attributes (``event``,
``peer``, ``transport``, ``bytes``, ``outcome``: :data:`FIELDS`), so the JSON
format gives them as keys, not only inside ``message``; its ``time`` is RFC
3339 in UTC (https://www.rfc-editor.org/rfc/rfc3339#section-5.6).
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

from udpkit.core.escaping import escape_untrusted
from udpkit.core.handler import Peer
from udpkit.core.loglimit import LogLimiter

server_log = logging.getLogger("udpkit.server")
access_log = logging.getLogger("udpkit.access")


FIELDS = ("event", "peer", "transport", "bytes", "outcome")
"""Record attributes the JSON format lifts to keys of their own."""


def log_access(peer: Peer, request: bytes) -> None:
    access_log.info(
        "Received from %s over %s (%d bytes): %s",
        peer,
        peer.transport,
        len(request),
        escape_untrusted(request),
        extra={"event": "request", "peer": str(peer), "transport": peer.transport,
               "bytes": len(request)},
    )


_ABUSE_TEXT = {
    "denied": "Dropping requests from %s: denied by the access lists",
    "rate_limited": "Rate limiting %s",
    "amplification": "Dropping a reply to %s: larger than max_amplification times the request",
    "busy": "Refusing a TCP connection from %s: connection limit reached",
    "idle": "Closing idle TCP connection from %s",
    "slow": "Closing TCP connection from %s: request line too slow",
    "write_timeout": "Closing TCP connection from %s: it does not read its replies",
    "bad_proxy": "Closing TCP connection from %s: malformed PROXY protocol header",
    "overload": "Dropping a request from %s: too many async handler calls running "
                "(max_pending, max_pending_per_source)",
}
_abuse_limiter = LogLimiter(per_second=1.0, burst=5)
handler_error_limiter = LogLimiter(per_second=1.0, burst=5)
"""Handler tracebacks (:func:`udpkit.server.dispatch.log_handler_error`): as abuse lines."""


def reset_log_limits() -> None:
    """Forget what was logged, so the next lines get the whole burst again (a new process
    starts so; tests call it between servers of one process)."""
    global _abuse_limiter, handler_error_limiter
    _abuse_limiter = LogLimiter(per_second=1.0, burst=5)
    handler_error_limiter = LogLimiter(per_second=1.0, burst=5)


def log_abuse(reason: str, peer: Peer, now: float) -> None:
    """Log an abuse event, at most about one line a second per reason."""
    suppressed = _abuse_limiter.admit(reason, now)
    if suppressed is None:
        return
    text = _ABUSE_TEXT.get(reason, reason + " from %s")
    fields = {"event": "abuse", "peer": str(peer), "transport": peer.transport,
              "outcome": reason}
    if suppressed:
        server_log.warning(text + " (%d more like this not logged)", peer, suppressed,
                           extra={**fields, "suppressed": suppressed})
    else:
        server_log.warning(text, peer, extra=fields)


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time (RFC 3339, UTC), level, logger, event, the
    event's fields (:data:`FIELDS`, ``suppressed``), message (and exception)."""

    def format(self, record: logging.LogRecord) -> str:
        time = datetime.fromtimestamp(record.created, tz=UTC)
        entry: dict[str, object] = {
            "time": time.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": getattr(record, "event", "log"),
        }
        for key in (*FIELDS[1:], "suppressed"):
            value = getattr(record, key, None)
            if value is not None:
                entry[key] = value
        entry["message"] = record.getMessage()
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=True)


def configure(level: int = logging.INFO, *, fmt: str = "text") -> None:
    """Send udpkit's logs to stderr, one line each (used by the CLI).

    ``fmt`` is ``text`` (human) or ``json`` (one object a line, for collectors).
    """
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    root = logging.getLogger("udpkit")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
