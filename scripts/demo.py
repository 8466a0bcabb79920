"""`make demo`: the tutorial's system, end to end.

Starts `udpkit serve` on UDP+TCP 127.0.0.1:9999, sends Michael, Tracy and
Sarah over UDP and over TCP with `udpkit send`, prints the replies and the
server's log lines, stops the server with SIGINT and exits 0 (non-zero if any
step failed).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

HOST = "127.0.0.1"
PORT = os.environ.get("UDPKIT_DEMO_PORT", "9999")
NAMES = ["Michael", "Tracy", "Sarah"]
UDPKIT = [sys.executable, "-m", "udpkit"]


def wait_for_bind(server: subprocess.Popen[str], deadline: float) -> list[str]:
    lines: list[str] = []
    assert server.stderr is not None
    while time.monotonic() < deadline:
        line = server.stderr.readline()
        if not line:
            break
        lines.append(line.rstrip("\n"))
        if "Bind TCP" in line:
            return lines
    raise SystemExit("demo: the server did not start:\n" + "\n".join(lines))


def main() -> int:
    print(f"$ udpkit serve --host {HOST} --port {PORT} --access-log", flush=True)
    server = subprocess.Popen(
        [*UDPKIT, "serve", "--host", HOST, "--port", PORT, "--access-log"],
        stderr=subprocess.PIPE,
        text=True,
    )
    failed = False
    try:
        log = wait_for_bind(server, time.monotonic() + 10)
        for flags in ([], ["--tcp"]):
            command = ["send", "--host", HOST, "--port", PORT, *flags, *NAMES]
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
    print("\nServer log:")
    for line in [*log, *rest.splitlines()]:
        print("  " + line)
    failed |= server.returncode != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
