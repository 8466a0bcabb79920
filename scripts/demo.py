"""`make demo`: the tutorial's system, end to end.

Starts `udpkit serve --access-log` on UDP+TCP 127.0.0.1:9999 (another port
with `UDPKIT_DEMO_PORT`; 0 picks a free one), sends Michael, Tracy and Sarah
over UDP and over TCP with `udpkit send`, prints the replies, stops the server
with SIGINT and prints what it logged: the binds, one line per request and the
summary.  Start-up details (event loop, fast path: the access log keeps the
pure-Python path) are left out of that view, not hidden: `udpkit serve` prints
them.  Exits 0, non-zero if any step failed.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

HOST = "127.0.0.1"
PORT = os.environ.get("UDPKIT_DEMO_PORT", "9999")
NAMES = ["Michael", "Tracy", "Sarah"]
UDPKIT = [sys.executable, "-m", "udpkit"]
_BOUND = re.compile(r"Bind TCP on \S+:(\d+)\.\.\.")
_DETAIL = re.compile(r"INFO (Event loop|TCP fast path|UDP fast path)")
"""Start-up lines about how, not what: not the first thing to show a newcomer."""


def wait_for_bind(server: subprocess.Popen[str], deadline: float) -> tuple[list[str], str]:
    """The server's lines up to its TCP bind, and the port it bound."""
    lines: list[str] = []
    assert server.stderr is not None
    while time.monotonic() < deadline:
        line = server.stderr.readline()
        if not line:
            break
        lines.append(line.rstrip("\n"))
        bound = _BOUND.search(line)
        if bound:
            return lines, bound.group(1)
    raise SystemExit("demo: the server did not start:\n" + "\n".join(lines))


def main() -> int:
    print(f"udpkit demo: the greeting service on UDP and TCP {HOST}, three names over each.\n")
    print(f"$ udpkit serve --host {HOST} --port {PORT} --access-log &", flush=True)
    server = subprocess.Popen(
        [*UDPKIT, "serve", "--host", HOST, "--port", PORT, "--access-log"],
        stderr=subprocess.PIPE,
        text=True,
    )
    failed = False
    log: list[str] = []
    try:
        log, port = wait_for_bind(server, time.monotonic() + 10)
        for flags in ([], ["--tcp"]):
            command = ["send", "--to", f"{HOST}:{port}", *flags, *NAMES]
            print("$ udpkit " + " ".join(command), flush=True)
            result = subprocess.run([*UDPKIT, *command], timeout=30, check=False)
            failed |= result.returncode != 0
    finally:
        server.send_signal(signal.SIGINT)
        try:
            _, rest = server.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            _, rest = server.communicate()
            failed = True
    print("\nThe server's log:")
    for line in [*log, *rest.splitlines()]:
        if not _DETAIL.search(line):
            print("  " + line)
    failed |= server.returncode != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
