"""Tier (c): what --workers binds with: SO_REUSEPORT, the port lock, the free-port check."""

from __future__ import annotations

import asyncio
import os
import pathlib
import socket

import pytest

from udpkit.core.handler import Peer
from udpkit.core.restarts import RestartPolicy
from udpkit.server import ServerConfig
from udpkit.server.binding import ReusePortUnsupported, bind
from udpkit.server.supervisor import PortInUse, PortLock, Supervisor, reserve_port


def test_reuse_port_sockets_share_the_port_and_others_are_refused() -> None:
    first = bind("127.0.0.1", 0, udp=True, tcp=True, reuse_port=True)
    try:
        second = bind("127.0.0.1", first.port, udp=True, tcp=True, reuse_port=True)
        second.close()
        with pytest.raises(Exception, match="Address already in use"):
            bind("127.0.0.1", first.port, udp=True, tcp=True)
        [udp] = first.udp
        assert udp.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) == 0
        assert udp.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) == 1
    finally:
        first.close()


def test_missing_so_reuseport_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(socket, "SO_REUSEPORT")
    with pytest.raises(ReusePortUnsupported, match="--workers needs SO_REUSEPORT"):
        bind("127.0.0.1", 0, udp=True, tcp=True, reuse_port=True)


async def test_supervisor_says_so_reuseport_is_missing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path
) -> None:
    monkeypatch.delattr(socket, "SO_REUSEPORT")
    supervisor = Supervisor(ServerConfig(port=0), workers=2, lock_dir=tmp_path)
    with pytest.raises(ReusePortUnsupported, match="run without --workers"):
        await supervisor.startup()


def test_the_port_lock_is_exclusive_and_names_its_holder(tmp_path: pathlib.Path) -> None:
    lock = PortLock.acquire(12345, tmp_path)
    try:
        with pytest.raises(PortInUse, match=f"pid {os.getpid()}"):
            PortLock.acquire(12345, tmp_path)
        PortLock.acquire(12346, tmp_path).release()  # other ports are free
    finally:
        lock.release()
    PortLock.acquire(12345, tmp_path).release()


def test_reserve_port_holds_the_port_without_taking_connections(tmp_path: pathlib.Path) -> None:
    placeholder, lock = reserve_port(ServerConfig(port=0), lock_dir=tmp_path)
    try:
        with pytest.raises(PortInUse, match="already served"):
            reserve_port(ServerConfig(port=placeholder.port), lock_dir=tmp_path)
        with pytest.raises(ConnectionRefusedError):  # TCP placeholder is not listening
            socket.create_connection(("127.0.0.1", placeholder.port), timeout=5).close()
    finally:
        placeholder.close()
        lock.release()


def test_a_lock_directory_of_another_kind_is_refused(tmp_path: pathlib.Path) -> None:
    not_a_directory = tmp_path / "file"
    not_a_directory.write_text("")
    with pytest.raises(Exception, match=r"lock directory|cannot create"):
        PortLock.acquire(1, not_a_directory)


def die_on_request(request: bytes, peer: Peer) -> bytes:
    """A handler that takes its worker process down (for the restart tests)."""
    os._exit(7)


async def test_a_crash_loop_is_restarted_then_given_up_with_exit_code_1(
    tmp_path: pathlib.Path,
) -> None:
    policy = RestartPolicy(max_restarts=1, first_delay=0.01)
    config = ServerConfig(app=die_on_request, port=0, tcp=False, fast_path=False)
    supervisor = Supervisor(config, workers=1, restart_policy=policy, lock_dir=tmp_path)
    serving = asyncio.create_task(supervisor.serve(install_signals=False))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        async with asyncio.timeout(60):
            while not serving.done():
                if supervisor.addresses:
                    sender.sendto(b"die", ("127.0.0.1", supervisor.port))
                await asyncio.sleep(0.1)
    assert serving.result() == 1
    assert supervisor.restarts == 1
