"""Shared fixtures: servers on port 0, free ports, IPv4/IPv6 parametrisation."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import pytest

from udpkit.server import Server, ServerConfig


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
