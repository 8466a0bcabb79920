"""Tier docs: the collector's own rules, on small Markdown written here.

The examples pass today; these show the collector would fail them the day
they go stale.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.docs.markdown import blocks, commands, matches, normalise
from tests.docs.shell import Ports, bounded

SERVE_LOG = """\
2026-12-01 13:20:38,696 INFO Event loop: uvloop
2026-12-01 13:20:38,698 INFO UDP fast path: recvmmsg/sendmmsg (C extension)
2026-12-01 13:20:38,698 INFO Bind UDP on 127.0.0.1:9999...
2026-12-01 13:20:38,698 INFO Bind TCP on 127.0.0.1:9999..."""


def test_blocks_carry_their_line_language_and_directive(tmp_path: Path) -> None:
    document = tmp_path / "doc.md"
    document.write_text(
        "# Title\n\n<!-- not executed: an example of a config -->\n```nginx\nstream {}\n```\n\n"
        "```console\n$ udpkit send \\\n    Michael\nHello, Michael!\n\n$ udpkit send\n```\n"
        "- a list\n\n  ```python\n  print(1)\n  ```\n"
    )
    nginx, console, python = blocks(document)
    assert (nginx.line, nginx.language, nginx.reason_not_executed) == (
        4, "nginx", "not executed: an example of a config")
    assert (console.language, console.directive, console.reason_not_executed) == (
        "console", None, None)
    assert [(step.text, step.line, step.shown) for step in commands(console)] == [
        ("udpkit send Michael", 9, ["Hello, Michael!"]),
        ("udpkit send", 13, []),
    ]
    assert python.text == "print(1)\n"


def test_a_zone_file_block_is_a_file_for_the_other_examples(tmp_path: Path) -> None:
    document = tmp_path / "doc.md"
    document.write_text("```dns-zone\n; example.zone\n@ IN A 192.0.2.1\n```\n\n"
                        "```dns-zone\n@ IN A 192.0.2.1\n```\n")
    named, anonymous = blocks(document)
    assert (named.file_name, named.reason_not_executed) == ("example.zone", None)
    assert anonymous.file_name is None
    assert anonymous.reason_not_executed == "not executed: a ```dns-zone block"


def test_dig_port_is_rewritten_like_the_others() -> None:
    ports = Ports(20000, ["udpkit serve dns --zone z --port 5353 &"])
    assert ports.rewrite("dig @127.0.0.1 -p 5353 example.com") == (
        f"dig @127.0.0.1 -p {ports.real(5353)} example.com")


def test_a_block_in_another_language_is_reported_as_not_executed(tmp_path: Path) -> None:
    document = tmp_path / "doc.md"
    document.write_text("```yaml\nkind: Service\n```\n```\nplain\n```\n```bash\nls\n```\n")
    yaml, plain, bash = blocks(document)
    assert yaml.reason_not_executed == "not executed: a ```yaml block"
    assert plain.reason_not_executed is None  # no language: the test fails, say which
    assert bash.reason_not_executed is None  # shell by another name: would silently not run


def test_output_that_gained_lines_does_not_match() -> None:
    """The README showed serve's two Bind lines; serve prints more now."""
    shown = SERVE_LOG.splitlines()[2:]
    assert not matches(shown, SERVE_LOG)
    assert matches(["...", *shown], SERVE_LOG)


def test_times_pids_and_measured_values_are_normalised() -> None:
    shown = ["14 bytes from 127.0.0.1:9999: seq=0 time=0.412 ms",
             "3 probes sent, 3 received, 0.0% loss, time 402 ms",
             "2026-11-25 15:19:58,643 INFO Serving with 4 workers (pids 812 813), SO_REUSEPORT"]
    actual = ("14 bytes from 127.0.0.1:9999: seq=0 time=1.5 ms\n"
              "3 probes sent, 3 received, 0.0% loss, time 398 ms\n"
              "2026-12-01T13:20:38.696Z INFO Serving with 4 workers (pids 7 8), SO_REUSEPORT\n")
    assert matches(shown, actual)
    assert not matches(shown, actual.replace("3 received", "2 received"))
    assert not matches(shown, actual.replace("4 workers", "2 workers"))
    assert matches(shown, actual.replace("4 workers", "2 workers"), numbers_vary=True)
    assert normalise("a  b\t c") == "a b c"


def test_an_ellipsis_inside_a_line_stands_for_any_text() -> None:
    assert matches(["Summary: UDP received=3 ...; TCP ..."],
                   "Summary: UDP received=3 replied=3; TCP received=0 replied=0")
    assert not matches(["Summary: UDP received=3 ..."], "Summary: UDP received=4 replied=4")


def test_ports_listened_on_get_their_own_and_9999_is_the_shared_server() -> None:
    ports = Ports(40000, ["udpkit proxy --listen 127.0.0.1:9000 --upstream 127.0.0.1:9999"])
    assert ports.real(9999) == 40000
    assert ports.real(9000) not in (9000, 40000)
    command = ports.rewrite(
        "udpkit send --port 9000 x; curl localhost:8080/stats; nc -u 127.0.0.1 9999")
    assert f"--port {ports.real(9000)}" in command
    assert f"localhost:{ports.real(8080)}/stats" in command
    assert command.endswith("nc -u 127.0.0.1 40000")
    assert ports.back(f"listening on 127.0.0.1:{ports.real(9000)}") == "listening on 127.0.0.1:9000"


def test_a_server_of_the_block_gets_its_own_port() -> None:
    ports = Ports(40000, ["udpkit serve --limit-exempt none &", "udpkit audit 127.0.0.1:9999"])
    assert ports.real(9999) != 40000


@pytest.mark.parametrize(
    ("command", "bounded_command"),
    [
        ("udpkit bench 127.0.0.1:9999 --duration 10  # closed loop",
         "udpkit bench --warmup 0.1 127.0.0.1:9999 --duration 0.5  # closed loop"),
        ("udpkit bench 127.0.0.1:9999 --json",
         "udpkit bench --duration 0.5 --warmup 0.1 127.0.0.1:9999 --json"),
        ("udpkit bench 127.0.0.1:9999 --requests 300",
         "udpkit bench --warmup 0.1 127.0.0.1:9999 --requests 300"),
        ("udpkit send Michael", "udpkit send Michael"),
        # merge runs no load, and 'merge' must stay bench's first argument
        ("udpkit bench merge a.json b.json", "udpkit bench merge a.json b.json"),
    ],
)
def test_bench_is_bounded_in_time(command: str, bounded_command: str) -> None:
    assert bounded(command) == bounded_command
