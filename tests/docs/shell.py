"""Run a console or sh example of the docs as a user would type it, on loopback.

Rules kept here, so that an example runs as written and still cannot disturb
anything else on the machine:

* Ports.  The documents use fixed ports (9999, 9000, 8080, 9100).  A port that
  a command of the block listens on (``udpkit serve``'s ``--port``, default
  9999, and ``--metrics``; ``udpkit proxy``'s ``--listen`` and ``--control``)
  gets a free port of its own; 9999 otherwise means the shared greeting server
  the tests start; each other port a free one.  Commands are rewritten
  (``HOST:PORT``, ``--port PORT``, ``HOST PORT``), ``UDPKIT_SERVE_PORT`` and
  ``UDPKIT_SEND_PORT`` point the defaults at the right one (``dig -p PORT`` too), and in the output
  the chosen ports are mapped back before comparing.
* Time.  ``udpkit serve``, ``udpkit proxy`` and ``... &`` run in the background
  until ``^C`` or the end of the block, then get SIGINT and must exit 0; the
  next command waits until they printed the lines the block shows and listen.
  ``udpkit bench`` measures at most 0.5 s after a 0.1 s warm-up.
* Tools.  A command that needs a program that is not installed (nc, curl)
  skips its block with that reason; CI installs them.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.docs.markdown import NUMBERS_VARY, Block, Command, commands, matches
from tests.processes import free_port

BIN = Path(sys.executable).parent
DEFAULT_PORT = 9999
#: Programs the examples use that a machine may lack.
OPTIONAL_TOOLS = ("nc", "curl", "socat", "tcpdump", "dig")
_PORT_IN_COMMAND = re.compile(
    r"(?:(?<=[\w\]]:)|(?<=--port )|(?<=--port=)|(?<=--replay-port )|(?<=127\.0\.0\.1 )"
    r"|(?<=localhost )|(?<= -p ))(\d{2,5})\b"
)
_LISTENING_FLAGS = re.compile(r"--(?:listen|control|metrics)[ =]\S*:(\d+)")
_PORT_FLAG = re.compile(r"--port[ =](\d+)")
_LONG_RUNNING = re.compile(r"^udpkit (?:serve|proxy)\b")
#: Examples that listen on every interface listen on loopback here.
EVERY_INTERFACE, LOOPBACK = "0.0.0.0", "127.0.0.1"
READY_TIMEOUT = 15.0
TCP_LISTEN = "0A"  # the state column of /proc/net/tcp
#: Seconds a ``udpkit bench`` of the docs measures at most.
MAX_BENCH = 0.5
STOP_TIMEOUT = 15.0


def users_environment() -> dict[str, str]:
    """The environment of a user who has just installed udpkit: this Python's
    scripts first on PATH, no ``UDPKIT_*`` settings of the test run (such as
    ``UDPKIT_NO_FASTPATH``) leaking into what the docs show."""
    return {
        **{name: value for name, value in os.environ.items() if not name.startswith("UDPKIT_")},
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONUNBUFFERED": "1",
        "NO_COLOR": "1",
    }


def listened_ports(text: str) -> set[int]:
    """The ports a long-running command of the docs listens on."""
    ports = {int(port) for port in _LISTENING_FLAGS.findall(text)}
    if text.startswith("udpkit serve"):
        explicit = _PORT_FLAG.search(text)
        ports.add(int(explicit[1]) if explicit else DEFAULT_PORT)
    return ports - {0}


def on_every_interface(text: str) -> set[int]:
    """The ports a command of the docs listens on with every interface's address."""
    ports = {int(port) for port in re.findall(rf"{re.escape(EVERY_INTERFACE)}:(\d+)", text)}
    if text.startswith("udpkit serve") and f"--host {EVERY_INTERFACE}" in text:
        explicit = _PORT_FLAG.search(text)
        ports.add(int(explicit[1]) if explicit else DEFAULT_PORT)
    return ports


def is_long_running(text: str) -> bool:
    return text.endswith("&") or _LONG_RUNNING.match(text) is not None


class Ports:
    """The documents' ports and the ones this run uses instead."""

    def __init__(self, shared_port: int, texts: list[str]) -> None:
        listened = set().union(*(listened_ports(text) for text in texts if is_long_running(text)))
        self._real = {port: free_port() for port in listened}
        self._real.setdefault(DEFAULT_PORT, shared_port)

    def real(self, doc_port: int) -> int:
        if doc_port not in self._real:
            self._real[doc_port] = free_port()
        return self._real[doc_port]

    def rewrite(self, text: str) -> str:
        def replace(match: re.Match[str]) -> str:
            port = int(match[1])
            return str(self.real(port)) if port >= 1024 else match[1]

        return _PORT_IN_COMMAND.sub(replace, text)

    def back(self, output: str) -> str:
        for doc_port, real_port in self._real.items():
            output = re.sub(rf"\b{real_port}\b", str(doc_port), output)
        return output

    def is_listening(self, doc_port: int) -> bool:
        """Whether a TCP socket listens on the port, read from /proc so that checking
        does not count as a client.  (Every listener of the docs has TCP, and
        udpkit serve binds it after UDP.)"""
        local = f":{self.real(doc_port):04X}"
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            with contextlib.suppress(OSError):
                for row in Path(table).read_text().splitlines()[1:]:
                    fields = row.split()
                    if fields[1].endswith(local) and fields[3] == TCP_LISTEN:
                        return True
        return False


def bounded(text: str) -> str:
    """A ``udpkit bench`` command with its measurement bounded (see the module)."""
    if not text.startswith("udpkit bench") or text.startswith("udpkit bench merge"):
        return text  # merge runs no load (and its first argument must stay first)
    words = shlex.split(text, comments=True)
    if "--replay" in words:
        return text  # a replay is as long as its capture file
    extra = []
    if not {"-d", "--duration", "-n", "--requests"} & set(words):
        extra.append(f"--duration {MAX_BENCH}")
    if "--warmup" not in words:
        extra.append("--warmup 0.1")
    text = re.sub(r"(--duration|-d) (\d+(?:\.\d+)?)",
                  lambda match: f"{match[1]} {min(float(match[2]), MAX_BENCH)}", text)
    return text.replace("udpkit bench", " ".join(["udpkit bench", *extra]), 1)


@dataclass
class Background:
    """A long-running command: its process and everything it printed so far."""

    command: Command
    process: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)
    shown_upto: int = 0
    reader: threading.Thread | None = None

    def start_reading(self) -> None:
        def pump() -> None:
            assert self.process.stdout is not None
            for line in self.process.stdout:
                self.lines.append(line.rstrip("\n"))

        self.reader = threading.Thread(target=pump, daemon=True)
        self.reader.start()

    def interrupt(self) -> int:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)
        try:
            code = self.process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            code = self.process.wait()
        if self.reader is not None:
            self.reader.join(STOP_TIMEOUT)
        if self.process.stdout is not None:
            self.process.stdout.close()
        return code


class Session:
    """One console or sh block run as a terminal session in ``workdir``."""

    def __init__(self, block: Block, workdir: Path, shared_port: int) -> None:
        self.block = block
        self.workdir = workdir
        self.steps = commands(block)
        self.ports = Ports(shared_port, [step.text for step in self.steps if not step.interrupt])
        self.background: list[Background] = []
        self.env = {
            **users_environment(),
            "COLUMNS": "120",
            # A command that names no port must reach this block's server, not a real 9999.
            "UDPKIT_SERVE_PORT": str(self.ports.real(DEFAULT_PORT)),
            "UDPKIT_SEND_PORT": str(self.ports.real(DEFAULT_PORT)),
            **{f"UDPKIT_{command}_TARGET": f"127.0.0.1:{self.ports.real(DEFAULT_PORT)}"
               for command in ("PING", "BENCH", "AUDIT")},
        }

    def skip_for_missing_tools(self) -> None:
        for step in self.steps:
            for tool in OPTIONAL_TOOLS:
                if re.search(rf"(?:^|\|)\s*{tool}\b", step.text) and shutil.which(tool) is None:
                    pytest.skip(f"{self.block.name}: needs {tool}, which is not installed")

    def run(self) -> None:
        self.skip_for_missing_tools()
        try:
            for step in self.steps:
                if step.interrupt:
                    self._interrupt(step)
                elif is_long_running(step.text):
                    self._start(step)
                else:
                    self._run(step)
        finally:
            failures = []
            for job in self.background:
                if job.process.poll() is None:
                    code = job.interrupt()
                    if code != 0:
                        failures.append(f"`{job.command.text}` exited {code} on SIGINT:\n"
                                        + "\n".join(job.lines))
            assert not failures, "\n".join(failures)

    @property
    def _numbers_vary(self) -> bool:
        return self.block.directive == NUMBERS_VARY

    def _command_line(self, step: Command) -> str:
        line = bounded(self.ports.rewrite(step.text.removesuffix("&").strip()))
        return line.replace(EVERY_INTERFACE, LOOPBACK)

    def _output(self, step: Command, output: str) -> str:
        """What ``step`` printed, in the document's terms: its ports, and for a
        server told to listen on every interface, that address."""
        for port in on_every_interface(step.text):
            real = self.ports.real(port)
            output = output.replace(f"{LOOPBACK}:{real}", f"{EVERY_INTERFACE}:{real}")
        return self.ports.back(output)

    def _compare(self, step: Command, output: str, ran: str) -> None:
        if not step.shown:
            return
        actual = self._output(step, output)
        assert matches(step.shown, actual, numbers_vary=self._numbers_vary), (
            f"{self.block.path.name}:{step.line}: the output of `{step.text}` is not what the "
            f"document shows (ran: {ran})\n--- shown\n" + "\n".join(step.shown)
            + "\n--- actual\n" + actual
        )

    def _run(self, step: Command) -> None:
        line = self._command_line(step)
        result = subprocess.run(["bash", "-c", line], cwd=self.workdir, env=self.env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                timeout=45, check=False)
        assert result.returncode == 0, (
            f"{self.block.path.name}:{step.line}: `{step.text}` exited {result.returncode} "
            f"(ran: {line}):\n{result.stdout}"
        )
        self._compare(step, result.stdout, line)

    def _start(self, step: Command) -> None:
        line = self._command_line(step)
        process = subprocess.Popen(["bash", "-c", "exec " + line], cwd=self.workdir,
                                   env=self.env, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True, start_new_session=True)
        job = Background(step, process)
        self.background.append(job)
        job.start_reading()
        ports = listened_ports(step.text.removesuffix("&").strip())
        deadline = time.monotonic() + READY_TIMEOUT
        while not self._ready(job, ports):
            if process.poll() is not None:
                job.interrupt()
                raise AssertionError(f"{self.block.path.name}:{step.line}: `{step.text}` "
                                     f"exited {process.returncode}:\n" + "\n".join(job.lines))
            if time.monotonic() > deadline:
                break  # the comparison below says what is missing
            time.sleep(0.02)
        time.sleep(0.2)  # a line more than the document shows fails the comparison
        job.shown_upto = len(job.lines)
        self._compare(step, "\n".join(job.lines[:job.shown_upto]), line)
        assert process.poll() is None, f"`{step.text}` exited {process.returncode}"

    def _ready(self, job: Background, ports: set[int]) -> bool:
        """Whether ``job`` printed what the block shows for it (at least a line) and
        listens on its ports."""
        output = self._output(job.command, "\n".join(job.lines))
        shown = job.command.shown
        printed = matches(shown, output, numbers_vary=self._numbers_vary) if shown else bool(
            job.lines)
        return printed and all(self.ports.is_listening(port) for port in ports)

    def _interrupt(self, step: Command) -> None:
        running = [job for job in self.background if job.process.poll() is None]
        assert running, f"{self.block.path.name}:{step.line}: ^C with nothing running"
        job = running[-1]
        code = job.interrupt()
        rest = "\n".join(job.lines[job.shown_upto:])
        assert code == 0, f"`{job.command.text}` exited {code} on SIGINT:\n{rest}"
        self._compare(step, rest, "SIGINT")
