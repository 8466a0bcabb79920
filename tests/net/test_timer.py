"""The one-timer glue shared by the client, the generators, the proxy and the fake net."""

from __future__ import annotations

import asyncio

from udpkit.timer import DeadlineTimer


async def test_fires_once_at_the_last_deadline_armed() -> None:
    loop = asyncio.get_running_loop()
    fired: list[float] = []
    timer = DeadlineTimer(loop, fired.append)
    soon = loop.time() + 0.01
    timer.arm(soon + 10)
    timer.arm(soon)  # replaces the later one
    timer.arm(soon)  # same deadline: nothing new
    await asyncio.sleep(0.05)
    assert fired == [soon]
    assert timer.when is None


async def test_arm_earlier_keeps_an_earlier_deadline_and_cancel_disarms() -> None:
    loop = asyncio.get_running_loop()
    fired: list[float] = []
    timer = DeadlineTimer(loop, fired.append)
    soon = loop.time() + 0.01
    timer.arm_earlier(soon)
    timer.arm_earlier(soon + 5)  # later: ignored
    assert timer.when == soon
    await asyncio.sleep(0.05)
    assert fired == [soon]
    timer.arm(loop.time() + 0.01)
    timer.cancel()
    timer.arm(None)
    await asyncio.sleep(0.05)
    assert fired == [soon]
