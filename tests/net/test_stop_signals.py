"""Tier (c): a SIGTERM that arrives the moment a service is up still stops it gracefully.

Regression: ``Proxy.serve`` installed its signal handlers only after start-up,
so a SIGTERM right after the ``Proxy ... on ...`` line met the default action
and killed the process, with nothing drained and no summary (the server had
been fixed for the same race, the proxy not).  Each service now takes its
handlers from :class:`udpkit.signals.StopSignals` before start-up.  The
services run in a subprocess whose start-up signals its own process as soon
as it has bound: deterministic, and a regression kills only that subprocess.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import asyncio, logging, os, signal, sys
    from udpkit.proxy import Proxy, ProxyConfig
    from udpkit.server import Server, ServerConfig

    logging.basicConfig(level=logging.INFO)
    kind = sys.argv[1]
    service = (Server(ServerConfig(host="127.0.0.1", port=0)) if kind == "server"
               else Proxy(ProxyConfig(port=0)))
    started = service.startup

    async def startup_then_signal():
        await started()
        os.kill(os.getpid(), signal.SIGTERM)  # delivered before serve() goes on
        await asyncio.sleep(0)

    service.startup = startup_then_signal
    asyncio.run(service.serve())
    print("stopped cleanly")
    """
)


@pytest.mark.parametrize("kind", ["server", "proxy"])
def test_a_sigterm_right_after_start_up_is_a_graceful_stop(kind: str) -> None:
    done = subprocess.run([sys.executable, "-c", SCRIPT, kind], capture_output=True,
                          text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "stopped cleanly\n"
    assert "Received SIGTERM" in done.stderr
