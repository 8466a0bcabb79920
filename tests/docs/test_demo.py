"""Tier docs: ``make demo``, the README's first command, does what the README says.

``make demo`` is ``make venv`` (which ``make test`` has just done) and then
``scripts/demo.py``; the README's block of the two commands is marked not
executed, and this runs the demo's body on a free port (``UDPKIT_DEMO_PORT``,
which the README documents).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.processes import free_port

DEMO = Path(__file__).resolve().parents[2] / "scripts" / "demo.py"


def test_the_demo_sends_the_three_names_over_udp_and_tcp_and_stops_the_server() -> None:
    port = free_port()
    result = subprocess.run([sys.executable, str(DEMO)], capture_output=True, text=True,
                            timeout=60, check=False,
                            env={**os.environ, "UDPKIT_DEMO_PORT": str(port)})
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert f"$ udpkit serve --host 127.0.0.1 --port {port} --access-log &" in lines
    assert f"$ udpkit send --to 127.0.0.1:{port} --tcp Michael Tracy Sarah" in lines
    assert lines.count("Hello, Michael!") == lines.count("Hello, Sarah!") == 2
    (summary,) = [line for line in lines if "INFO Summary:" in line]
    assert "UDP received=3 replied=3 " in summary
    assert "TCP received=3 replied=3 " in summary
