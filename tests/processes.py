"""Run `udpkit serve` as a user would: a subprocess on a free port."""

from __future__ import annotations

import os
import queue
import re
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

UDPKIT = [sys.executable, "-m", "udpkit"]
_BIND = re.compile(r"Bind (UDP|TCP) on (\S+):(\d+)\.\.\.")


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1"}


@dataclass
class ServeProcess:
    process: subprocess.Popen[bytes]
    port: int
    log: list[str] = field(default_factory=list)
    _lines: queue.Queue[str | None] = field(default_factory=queue.Queue)
    _reader: threading.Thread | None = None

    def wait_for_line(self, pattern: str, timeout: float = 20.0) -> re.Match[str]:
        """The first log line (already seen or to come) matching ``pattern``."""
        compiled = re.compile(pattern)
        for line in self.log:
            if match := compiled.search(line):
                return match
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                next_line = self._lines.get(timeout=remaining)
            except queue.Empty:
                break
            if next_line is None:
                break
            self.log.append(next_line)
            if match := compiled.search(next_line):
                return match
        raise AssertionError(f"no log line matching {pattern!r}:\n" + "\n".join(self.log))

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> tuple[int, str]:
        """Signal the server, wait for it, return (exit code, its log after start-up)."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
        code = self.process.wait(timeout=timeout)
        if self._reader is not None:
            self._reader.join(timeout)
        rest: list[str] = []
        while (line := self._lines.get_nowait() if not self._lines.empty() else None) is not None:
            rest.append(line)
        self.log.extend(rest)
        return code, "\n".join(rest)


def free_port() -> int:
    """A port free on 127.0.0.1 for both UDP and TCP (bound, read, released), for a
    program that binds both."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind(("127.0.0.1", 0))
            port: int = tcp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind(("127.0.0.1", port))
                except OSError:
                    continue
        return port
    raise RuntimeError("no port free for both UDP and TCP")


def run_udpkit(*args: str, input: bytes | None = None,
               timeout: float = 30.0) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([*UDPKIT, *args], input=input, capture_output=True, timeout=timeout,
                          check=False, env=_env())


def _pump(stream: object, lines: queue.Queue[str | None]) -> None:
    for raw in stream:  # type: ignore[attr-defined]
        lines.put(raw.decode("utf-8", "replace").rstrip("\n"))
    lines.put(None)


@contextmanager
def serve(*args: str, startup_timeout: float = 15.0, open_files: int | None = None,
          measured: bool = True, env: dict[str, str] | None = None) -> Iterator[ServeProcess]:
    """Start `udpkit serve --port 0 ARGS`, wait for its bind lines, kill it at the end.

    ``open_files`` caps the server's RLIMIT_NOFILE (soft and hard) before it starts.
    ``measured=False`` runs the server without coverage tracing, at production speed,
    for tests whose assertion depends on the server keeping up (floods).
    ``env``: more environment variables for the server.
    """
    def cap() -> None:
        if open_files is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (open_files, open_files))

    env = {**_env(), **(env or {})}
    if not measured:
        env.pop("COVERAGE_PROCESS_CONFIG", None)
        env.pop("COVERAGE_PROCESS_START", None)
    process = subprocess.Popen([*UDPKIT, "serve", "--port", "0", *args],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
                               preexec_fn=cap if open_files is not None else None)
    running = ServeProcess(process, 0)
    running._reader = threading.Thread(target=_pump, args=(process.stderr, running._lines),
                                       daemon=True)
    running._reader.start()
    wants = {t for t in ("UDP", "TCP") if f"--no-{t.lower()}" not in args}
    seen: set[str] = set()
    deadline = time.monotonic() + startup_timeout
    try:
        while seen != wants:
            try:
                line = running._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                line = None
            if line is None:
                raise RuntimeError("udpkit serve did not start:\n" + "\n".join(running.log))
            running.log.append(line)
            if match := _BIND.search(line):
                seen.add(match.group(1))
                running.port = int(match.group(3))
        yield running
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stderr is not None:
            running._reader.join(5)
            process.stderr.close()


@contextmanager
def proxy_process(
    *args: str, ready: re.Pattern[str]
) -> Iterator[tuple[subprocess.Popen[bytes], re.Match[str], list[str]]]:
    """Start ``udpkit proxy ARGS`` (stdout a pipe, for its JSON summary), wait for the
    first log line matching ``ready``, kill it at the end: the process, that match,
    and its log (which keeps growing while it runs)."""
    process = subprocess.Popen([*UDPKIT, "proxy", *args],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    log: list[str] = []
    found: list[re.Match[str]] = []
    started = threading.Event()

    def read_log() -> None:
        assert process.stderr is not None
        for raw in process.stderr:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            log.append(line)
            if match := ready.search(line):
                found.append(match)
                started.set()
        started.set()

    reader = threading.Thread(target=read_log, daemon=True)
    reader.start()
    try:
        if not started.wait(15) or not found:
            raise RuntimeError("udpkit proxy did not start:\n" + "\n".join(log))
        yield process, found[0], log
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(15)
        reader.join(5)
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


_COUNTER = re.compile(r"(\w+)=(\d+)")


def parse_summary(log: str) -> dict[str, dict[str, int]]:
    """The counters of the shutdown summary line, per transport (``udp``, ``tcp``)."""
    line = next(line for line in reversed(log.splitlines()) if "Summary:" in line)
    out: dict[str, dict[str, int]] = {}
    for part in line.split("Summary:", 1)[1].split(";"):
        part = part.strip()
        if part[:4] in ("UDP ", "TCP "):
            out[part[:3].lower()] = {name: int(value) for name, value in _COUNTER.findall(part)}
    return out


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")
