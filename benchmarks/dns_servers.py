"""NSD and Knot as reference DNS servers: their configuration and their life, written
once for ``bench_dns.py`` and ``tests/peers/test_dns_peers.py``.

Each runs in the foreground on one loopback port with one worker, its files in a
directory of its own, no RRL: NSD with ``minimal-responses: yes`` (no NS records
added to the authority section of positive answers, which is what udpkit
answers, and Knot's default).  Imported as ``dns_servers`` by the benchmark (run
as a script from ``benchmarks/``) and as ``benchmarks.dns_servers`` by the tests.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

NSD = shutil.which("nsd") or "/usr/sbin/nsd"
KNOTD = shutil.which("knotd") or "/usr/sbin/knotd"


def nsd_command(zone: Path, origin: str, run: Path, port: int, *,
                rrl: str = "rrl-ratelimit: 0") -> list[str]:
    """Write ``run``/nsd.conf serving ``zone`` for ``origin``; the command that runs it."""
    config = run / "nsd.conf"
    config.write_text(f"""\
server:
  ip-address: 127.0.0.1@{port}
  server-count: 1
  pidfile: {run}/nsd.pid
  database: ""
  zonelistfile: {run}/zone.list
  xfrdfile: {run}/xfrd.state
  xfrdir: {run}
  username: ""
  chroot: ""
  logfile: {run}/nsd.log
  {rrl}
  minimal-responses: yes
  refuse-any: no
remote-control:
  control-enable: no
zone:
  name: {origin}
  zonefile: {zone}
""")
    return [NSD, "-d", "-c", str(config)]


def knot_command(zone: Path, origin: str, run: Path, port: int) -> list[str]:
    """Write ``run``/knot.conf serving ``zone`` for ``origin``; the command that runs it."""
    config = run / "knot.conf"
    config.write_text(f"""\
server:
    listen: 127.0.0.1@{port}
    rundir: {run}
    pidfile: {run}/knot.pid
    udp-workers: 1
    tcp-workers: 1
    background-workers: 1
database:
    storage: {run}
log:
  - target: stderr
    any: error
template:
  - id: default
    storage: {run}
    file: {zone}
    zonefile-sync: -1
    journal-content: none
zone:
  - domain: {origin}
""")
    return [KNOTD, "-c", str(config)]


@contextlib.contextmanager
def running(command: list[str]) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``command`` (output discarded); SIGTERM to its PID at the end, then a kill
    if it has not gone within 10 s."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
