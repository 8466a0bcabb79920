"""Tier (a): the one life cycle of the server, the supervisor and the proxy.

:class:`udpkit.service.Service` alone orders start-up, main loop and
shutdown and turns signals into a graceful or a forced stop.  A toy service
records what happened; signals are real (sent to this process while the
service's handlers are installed), and nothing waits on a clock: a forced
stop is recognised by a wait of an hour having returned.
"""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from udpkit.service import Service


class Recorder(Service):
    """A service that records its steps and signals, optionally signalling itself."""

    def __init__(self, *, signal_at_startup: int = 0, signal_at_shutdown: int = 0) -> None:
        super().__init__()
        self.steps: list[str] = []
        self.signal_at_startup = signal_at_startup
        self.signal_at_shutdown = signal_at_shutdown

    async def startup(self) -> None:
        self.steps.append("startup")
        for _ in range(self.signal_at_startup):
            os.kill(os.getpid(), signal.SIGTERM)

    async def shutdown(self) -> None:
        self.steps.append("shutdown")
        for _ in range(self.signal_at_shutdown):
            os.kill(os.getpid(), signal.SIGINT)
        if self.signal_at_shutdown:
            # In-flight work that never ends: only a forced stop cuts it short.
            await self.wait_or_force(asyncio.Event().wait(), timeout=3600)
            self.steps.append("forced" if self.forced else "drained")

    def stopped(self) -> None:
        self.steps.append("stopped")

    def signal_received(self, signal_name: str, *, again: bool) -> None:
        self.steps.append(f"{signal_name} again" if again else signal_name)


async def test_a_signal_stops_gracefully_after_startup_then_shuts_down() -> None:
    service = Recorder(signal_at_startup=1)
    assert await service.serve() == 0
    assert service.steps == ["startup", "SIGTERM", "shutdown", "stopped"]
    assert not service.forced


async def test_a_second_signal_forces_the_exit_while_shutdown_waits() -> None:
    service = Recorder(signal_at_startup=1, signal_at_shutdown=1)
    assert await service.serve() == 0
    assert service.steps == [
        "startup", "SIGTERM", "shutdown", "SIGINT again", "forced", "stopped",
    ]


async def test_every_signal_after_the_first_forces() -> None:
    service = Recorder(signal_at_startup=1, signal_at_shutdown=2)
    await service.serve()
    assert service.steps.count("SIGINT again") == 2
    assert "forced" in service.steps


async def test_request_exit_without_signals_and_the_exit_code() -> None:
    service = Recorder()
    serving = asyncio.ensure_future(service.serve(install_signals=False))
    await asyncio.sleep(0)
    assert service.steps == ["startup"]
    service.exit_code = 1
    service.request_exit()
    assert await serving == 1
    assert service.steps == ["startup", "shutdown", "stopped"]


async def test_async_with_is_startup_then_shutdown() -> None:
    async with Recorder() as service:
        assert service.steps == ["startup"]
    assert service.steps == ["startup", "shutdown"]


async def test_without_loop_signal_handlers_signals_still_stop_the_service(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Where ``loop.add_signal_handler`` is missing (not Unix), ``signal.signal``
    hands the signals to the loop: the same graceful, then forced, stop."""
    loop = asyncio.get_running_loop()

    def not_implemented(*args: object) -> None:
        raise NotImplementedError

    monkeypatch.setattr(loop, "add_signal_handler", not_implemented)
    monkeypatch.setattr(loop, "remove_signal_handler", not_implemented)
    before = signal.getsignal(signal.SIGTERM)
    service = Recorder(signal_at_startup=1, signal_at_shutdown=1)
    assert await service.serve() == 0
    assert service.steps == [
        "startup", "SIGTERM", "shutdown", "SIGINT again", "forced", "stopped",
    ]
    assert signal.getsignal(signal.SIGTERM) == before  # the previous handler is back


class Reloader(Recorder):
    """A service with something to reload: SIGHUP reloads it, and stops it no more."""

    @property
    def reloadable(self) -> bool:
        return True

    def reload(self) -> None:
        self.steps.append("reload")

    async def startup(self) -> None:
        await super().startup()
        os.kill(os.getpid(), signal.SIGHUP)
        os.kill(os.getpid(), signal.SIGHUP)
        os.kill(os.getpid(), signal.SIGTERM)


async def test_sighup_reloads_a_reloadable_service_and_stops_any_other() -> None:
    reloading = Reloader()
    assert await reloading.serve() == 0
    assert reloading.steps == ["startup", "reload", "reload", "SIGTERM", "shutdown", "stopped"]
    plain = Recorder()
    serving = asyncio.ensure_future(plain.serve())
    await asyncio.sleep(0)
    os.kill(os.getpid(), signal.SIGHUP)
    assert await serving == 0
    assert plain.steps == ["startup", "SIGHUP", "shutdown", "stopped"]
