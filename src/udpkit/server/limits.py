"""Operating-system limits the server depends on.

Rule: a server promised N connections asks the kernel for enough file
descriptors at start-up, and says so when it cannot get them, instead of
failing at connection N under load.
"""

from __future__ import annotations

try:
    import resource
except ImportError:  # pragma: no cover - not on Windows
    resource = None  # type: ignore[assignment]

from udpkit.server.logs import server_log


def ensure_open_files(wanted: int) -> int:
    """Raise the soft open-files limit towards ``wanted``; return the limit in force."""
    if resource is None:  # pragma: no cover
        return wanted
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return wanted
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    if soft < wanted:
        server_log.warning(
            "Open-files limit is %d, below the %d the TCP connection cap needs; "
            "raise it (ulimit -n) or lower --tcp-max-connections",
            soft,
            wanted,
        )
    return int(soft)
