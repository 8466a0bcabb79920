"""udpkit away from Linux, as far as it can be tried here: the Linux- and POSIX-only
modules are made unavailable in a subprocess, and everything must still import and the
pure path must still serve (issue 12: ``import fcntl`` at the top of one module once made
every command fail at import)."""

from __future__ import annotations

import subprocess
import sys

HIDE = """
import sys
for name in ("fcntl", "resource", "udpkit._fastpath"):
    sys.modules[name] = None  # an import of it now raises ImportError
"""

IMPORT_ALL = HIDE + """
import importlib, pkgutil, udpkit
failed, count = [], 0
for module in pkgutil.walk_packages(udpkit.__path__, "udpkit."):
    if module.name in ("udpkit._fastpath", "udpkit.__main__"):
        continue
    if module.name == "udpkit.locust":
        # Locust (through gevent) imports fcntl itself on a POSIX Python, so hiding it
        # here hides Locust; what is tried is that udpkit's own modules need neither.
        continue
    count += 1
    try:
        importlib.import_module(module.name)
    except Exception as exc:
        failed.append(f"{module.name}: {exc!r}")
print(count)
print("\\n".join(failed))
"""

SERVE_AND_ASK = HIDE + """
import asyncio
from udpkit import AsyncClient
from udpkit import _native
from udpkit.server import Server, ServerConfig

async def main():
    async with Server(ServerConfig(port=0)) as server:
        assert not server.udp_fast_path
        async with AsyncClient("127.0.0.1", server.port) as client:
            print((await client.request(b"Michael")).decode())
        async with AsyncClient("127.0.0.1", server.port, transport="tcp") as client:
            print((await client.request(b"Tracy")).decode())
    print(_native.unavailable())

asyncio.run(main())
"""


def run(script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60, check=False)


def test_every_module_imports_without_the_linux_only_ones() -> None:
    result = run(IMPORT_ALL)
    assert result.returncode == 0, result.stderr
    count, *failed = result.stdout.splitlines()
    assert int(count) > 50
    assert [line for line in failed if line] == []


def test_the_pure_path_serves_udp_and_tcp_without_them() -> None:
    result = run(SERVE_AND_ASK)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[:2] == ["Hello, Michael!", "Hello, Tracy!"]
    assert lines[2].startswith("C extension not built")
