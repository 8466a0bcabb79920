"""Shared fixtures (servers on port 0, free ports, IPv4/IPv6 parametrisation) and
the test tiers.

Rule kept here: a test's tier is the directory it lives in.  Each directory
below ``tests/`` named in :data:`TIERS` is a tier and gives its name as a
marker to every test collected from it, so ``pytest -m unit`` runs the pure
core alone and ``pytest -m "not attacks and not integration"`` leaves out the
slow ones.  The markers are registered (with what each tier is) in
pyproject.toml under ``--strict-markers``; ``tests/unit/test_suite_rules.py``
fails when a test file lives outside a tier or a tier has no marker.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from udpkit.server import Server, ServerConfig

TESTS = Path(__file__).resolve().parent

#: The tiers, one directory each, in the order of the style guide's tiers (a)-(e)
#: and then the slow or special ones.  Marker name == directory name.
TIERS = (
    "unit",  # (a) the pure core, clock driven by hand
    "fakenet",  # (b) the client core over an in-memory lossy network
    "net",  # (c) real sockets on loopback
    "cli",  # (d) the command line in subprocesses
    "peers",  # (e) programs nobody here wrote
    "attacks",  # floods, slowloris, many idle connections
    "integration",  # nginx in front of several servers
    "fuzz",  # a bounded fuzz run
    "docs",  # the README's and docs/'s examples, executed
)


def tier_of(path: Path) -> str | None:
    """The tier of the test file at ``path``: the first directory below tests/."""
    try:
        parts = path.resolve().relative_to(TESTS).parts
    except ValueError:
        return None
    return parts[0] if len(parts) > 1 and parts[0] in TIERS else None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test with its directory's tier (explicit marks such as a net
    test's ``peers`` stay as well)."""
    for item in items:
        tier = tier_of(item.path)
        if tier is not None:
            item.add_marker(tier)


def _has_ipv6() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


HAS_IPV6 = _has_ipv6()

LOOPBACKS = [
    pytest.param("127.0.0.1", id="ipv4"),
    pytest.param(
        "::1", id="ipv6", marks=pytest.mark.skipif(not HAS_IPV6, reason="no IPv6 loopback")
    ),
]


def _fast_path_built() -> bool:
    from udpkit import _native

    return _native.built()


UDP_PATHS = [
    pytest.param(
        "fast",
        id="fast",
        marks=pytest.mark.skipif(not _fast_path_built(), reason="udpkit._fastpath not built"),
    ),
    pytest.param("pure", id="pure"),
]


@pytest.fixture(params=UDP_PATHS)
def udp_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a UDP server test on the C fast path and on the pure-Python path.

    Under ``UDPKIT_NO_FASTPATH=1`` (the second run of ``make test``) both
    params run the pure path, which is what that run is for.
    """
    path: str = request.param
    if path == "pure":
        monkeypatch.setenv("UDPKIT_NO_FASTPATH", "1")
    return path


def _tcp_fast_path_built() -> bool:
    from udpkit import _native

    return _native.built()


def _tcp_poller_built() -> bool:
    from udpkit import _native

    return _native.built()


TCP_PATHS = [
    pytest.param(
        "fast",
        id="fast",
        marks=pytest.mark.skipif(
            not _tcp_poller_built(), reason="udpkit._fastpath.LinePoller not built"
        ),
    ),
    pytest.param(
        "reader",
        id="reader",
        marks=pytest.mark.skipif(
            not _tcp_fast_path_built(), reason="udpkit._fastpath.LineReader not built"
        ),
    ),
    pytest.param("pure", id="pure"),
]


@pytest.fixture(params=TCP_PATHS)
def tcp_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a TCP server test on each path: ``fast`` (the default: the C poller reads
    connections, the C line reader splits lines), ``reader`` (the event loop reads,
    the C line reader splits, as after the poller hands a connection back) and
    ``pure`` (Python only).

    Under ``UDPKIT_NO_FASTPATH=1`` every param runs the pure path, as for UDP.
    """
    path: str = request.param
    if path == "pure":
        monkeypatch.setenv("UDPKIT_NO_FASTPATH", "1")
    elif path == "reader":
        monkeypatch.setenv("UDPKIT_NO_TCP_POLLER", "1")
    return path


@pytest.fixture(params=LOOPBACKS)
def loopback(request: pytest.FixtureRequest) -> str:
    """Each test runs on 127.0.0.1 and on ::1."""
    host: str = request.param
    return host


@pytest.fixture
async def server(loopback: str) -> AsyncIterator[Server]:
    """A greeting server on ``loopback``, UDP and TCP on one free port."""
    async with Server(ServerConfig(host=loopback, port=0)) as running:
        yield running


@pytest.fixture
def closed_udp_port() -> int:
    """A port on 127.0.0.1 with nothing bound (bound, read, released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture(autouse=True)
def _fresh_log_limits() -> None:
    """Each test starts with the whole burst of rate-limited log lines, as a new server
    process does: a test that asserts a line is logged must not depend on the order."""
    from udpkit.server.logs import reset_log_limits

    reset_log_limits()
