"""Tier (d): ``bench --json-stream``, ``ping --json-stream`` and ``bench merge`` as a
user runs them, in subprocesses, against one ``udpkit serve``."""

from __future__ import annotations

import json
import pathlib
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from tests.processes import UDPKIT, ServeProcess, _env, run_udpkit, serve

SHORT = ("-d", "0.6", "--warmup", "0.1", "--concurrency", "4", "--interval", "0.2")


@pytest.fixture(scope="module")
def server() -> Iterator[ServeProcess]:
    with serve("--host", "127.0.0.1") as running:
        yield running


def lines_of(stdout: bytes) -> list[dict[str, Any]]:
    """Every line is one JSON object (JSON Lines), or this fails."""
    text = stdout.decode()
    assert text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


def one_line_error(stderr: bytes, needle: str) -> None:
    message = stderr.decode().strip()
    assert len(message.splitlines()) == 1, message
    assert "Traceback" not in message
    assert needle in message, message


@pytest.mark.parametrize("transport", [[], ["--tcp"]], ids=["udp", "tcp"])
def test_bench_json_stream_is_json_lines_whose_intervals_add_up(
    server: ServeProcess, transport: list[str]
) -> None:
    done = run_udpkit("bench", f"127.0.0.1:{server.port}", *SHORT, *transport, "--json-stream",
                      "--slo", "loss<50%")
    assert done.returncode == 0, done.stderr.decode()
    lines = lines_of(done.stdout)
    *intervals, summary = lines
    assert summary["type"] == "summary"
    assert {line["type"] for line in intervals} == {"interval"}
    assert len(intervals) >= 3  # 0.6 s in 0.2 s intervals, and what closes at the end
    assert [line["index"] for line in intervals] == list(range(len(intervals)))
    for name in ("sent", "received", "lost"):
        assert sum(line[name] for line in intervals) == summary[name], name
    assert summary["received"] > 0
    assert summary["slo"][0]["passed"] is True
    # the summary is the --json document, tagged
    plain = run_udpkit("bench", f"127.0.0.1:{server.port}", *SHORT, *transport, "--json")
    assert set(json.loads(plain.stdout)) | {"type", "slo"} == set(summary)


def test_bench_json_stream_lines_come_while_the_run_goes(server: ServeProcess) -> None:
    """The first interval is on stdout before the run ends (flushed as it goes)."""
    process = subprocess.Popen(
        [*UDPKIT, "bench", f"127.0.0.1:{server.port}", "-d", "3", "--warmup", "0",
         "--concurrency", "2", "--interval", "0.2", "--json-stream"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env())
    try:
        assert process.stdout is not None
        first = json.loads(process.stdout.readline())
        assert first["type"] == "interval"
        assert process.poll() is None  # still running: the line did not wait for the end
    finally:
        process.terminate()
        process.communicate(timeout=20)


def test_bench_json_stream_stops_when_its_reader_goes_away(server: ServeProcess) -> None:
    """``udpkit bench --json-stream | head -1``: the run stops when head exits, as
    Ctrl-C would stop it, quietly, with the exit code of a tool killed by SIGPIPE."""
    process = subprocess.Popen(
        [*UDPKIT, "bench", f"127.0.0.1:{server.port}", "-d", "60", "--warmup", "0",
         "--concurrency", "2", "--interval", "0.1", "--json-stream"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env())
    assert process.stdout is not None
    assert json.loads(process.stdout.readline())["type"] == "interval"
    process.stdout.close()
    try:
        _, errors = process.communicate(timeout=30)  # far less than the 60 s asked for
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert errors == b""
    assert process.returncode == 141


@pytest.mark.parametrize(("args", "needle"), [
    (["--json", "--json-stream"], "choose one"),
    (["--json-stream", "--procs", "2"], "needs one generator process"),
    (["--interval", "0"], "interval must be > 0"),
])
def test_bench_json_stream_misuse_exits_2(args: list[str], needle: str) -> None:
    done = run_udpkit("bench", "127.0.0.1:9", *args)
    assert done.returncode == 2
    one_line_error(done.stderr, needle)


def test_ping_json_stream(server: ServeProcess) -> None:
    done = run_udpkit("ping", f"127.0.0.1:{server.port}", "-c", "3", "-i", "0.05",
                      "--json-stream")
    assert done.returncode == 0, done.stderr.decode()
    lines = lines_of(done.stdout)
    assert [line["type"] for line in lines] == ["start", "reply", "reply", "reply", "summary"]
    assert [line["seq"] for line in lines[1:4]] == [0, 1, 2]
    assert lines[-1]["received"] == 3
    assert all("event" not in line for line in lines)


def test_ping_json_stream_says_timeout() -> None:
    done = run_udpkit("ping", "127.0.0.1:9", "-c", "1", "--timeout", "0.2", "--json-stream")
    lines = lines_of(done.stdout)
    assert [line["type"] for line in lines][-1] == "summary"
    assert lines[1]["type"] in ("timeout", "refused")
    assert done.returncode == 1


# ------------------------------------------------------------------------- merge


@pytest.fixture(scope="module")
def two_runs(server: ServeProcess, tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Two generators loading the server at the same time, each saving its --json."""
    return bench_side_by_side(server, tmp_path_factory.mktemp("runs"), "--concurrency", "4")


def bench_side_by_side(server: ServeProcess, where: pathlib.Path, *flags: str) -> list[str]:
    """Two 2 s ``bench --json`` runs at once (they overlap even if one interpreter
    starts a second later); the paths of their results."""
    args = ["bench", f"127.0.0.1:{server.port}", "-d", "2", "--warmup", "0.1", *flags,
            "--json"]
    paths = [str(where / "a.json"), str(where / "b.json")]
    processes = []
    for path in paths:
        with open(path, "wb") as out:
            processes.append(subprocess.Popen([*UDPKIT, *args], stdout=out, env=_env()))
    for process in processes:
        assert process.wait(timeout=30) == 0
    return paths


def test_bench_merge_adds_up_two_runs(two_runs: list[str]) -> None:
    done = run_udpkit("bench", "merge", *two_runs, "--json", "--slo", "loss<50%")
    assert done.returncode == 0, done.stderr.decode()
    merged = json.loads(done.stdout)
    runs = [json.loads(pathlib.Path(path).read_text()) for path in two_runs]
    for name in ("sent", "received", "lost", "duplicates", "wrong"):
        assert merged[name] == sum(run[name] for run in runs), name
    assert merged["latency_us"]["max"] == max(run["latency_us"]["max"] for run in runs)
    assert merged["config"]["concurrency"] == 8
    assert merged["merged_from"] == two_runs
    assert merged["slo"][0]["passed"] is True
    table = run_udpkit("bench", "merge", *two_runs)
    assert table.returncode == 0
    assert b"merged 2 runs" in table.stdout
    assert b"latency p99" in table.stdout


def test_bench_merge_adds_up_the_send_lag_of_open_loop_runs(
        server: ServeProcess, tmp_path: pathlib.Path) -> None:
    """Regression: merge dropped the send-lag and arrival-to-read histograms of real
    open-loop results; now their counts add up and the flag is the merged run's."""
    paths = bench_side_by_side(server, tmp_path, "--rate", "300")
    runs = [json.loads(pathlib.Path(path).read_text()) for path in paths]
    done = run_udpkit("bench", "merge", *paths, "--json")
    assert done.returncode == 0, done.stderr.decode()
    merged = json.loads(done.stdout)
    assert merged["send_lag_us"]["count"] == sum(run["send_lag_us"]["count"] for run in runs)
    assert merged["send_lag_us"]["max"] == max(run["send_lag_us"]["max"] for run in runs)
    assert merged["paced_by"] == runs[0]["paced_by"] == runs[1]["paced_by"]
    if runs[0]["receive_lag_us"]:  # where the kernel timestamps arrivals
        assert merged["receive_lag_us"]["count"] == sum(
            run["receive_lag_us"]["count"] for run in runs)
    assert isinstance(merged["generator_flagged"], bool)
    table = run_udpkit("bench", "merge", *paths)
    assert b"send lag p50 / p99 / p99.9 / max" in table.stdout
    # every key of a real result has a declared fate, and a merge of the one run gives
    # each back (the config's duration becomes the measured span: derived)
    from udpkit.bench.merge import FIELDS, LEFT_OUT

    assert set(runs[0]) == set(FIELDS)
    alone = run_udpkit("bench", "merge", paths[0], "--json")
    again = json.loads(alone.stdout)
    assert again.pop("merged_from") == paths[:1]
    for key, fate in FIELDS.items():
        if fate == LEFT_OUT:
            continue
        if key == "config":
            assert again[key]["duration_s"] == pytest.approx(runs[0]["duration_s"])
            again[key]["duration_s"] = runs[0][key]["duration_s"]
        assert again[key] == runs[0][key], key


def test_bench_merge_slo_failure_exits_3(two_runs: list[str]) -> None:
    done = run_udpkit("bench", "merge", *two_runs, "--slo", "p50<0.001ms")
    assert done.returncode == 3
    one_line_error(done.stderr, "1 of 1 thresholds failed: p50<0.001ms")


def test_bench_merge_refuses_another_target(two_runs: list[str], tmp_path: pathlib.Path
                                            ) -> None:
    other = json.loads(pathlib.Path(two_runs[1]).read_text())
    other["target"]["port"] += 1
    moved = tmp_path / "moved.json"
    moved.write_text(json.dumps(other))
    done = run_udpkit("bench", "merge", two_runs[0], str(moved))
    assert done.returncode == 2
    one_line_error(done.stderr, "differ in target")


@pytest.mark.parametrize(("content", "needle"), [
    (b"{not json", "not JSON"),
    (b'{"sent": 1}', "no 'schema' field"),
    (b"\xff\xfe", "cannot read"),
])
def test_bench_merge_malformed_file_is_one_line(two_runs: list[str], tmp_path: pathlib.Path,
                                                content: bytes, needle: str) -> None:
    bad = tmp_path / "bad.json"
    bad.write_bytes(content)
    done = run_udpkit("bench", "merge", two_runs[0], str(bad))
    assert done.returncode == 2
    one_line_error(done.stderr, f"{bad}: {needle}")


def test_bench_merge_missing_file_and_no_file(tmp_path: pathlib.Path) -> None:
    done = run_udpkit("bench", "merge", str(tmp_path / "nope.json"))
    assert done.returncode == 2
    one_line_error(done.stderr, "nope.json: cannot read: No such file or directory")
    bare = run_udpkit("bench", "merge")
    assert bare.returncode == 2
    one_line_error(bare.stderr, "udpkit bench merge: missing argument")


def test_bench_merge_reads_a_json_stream_too(server: ServeProcess,
                                             tmp_path: pathlib.Path) -> None:
    done = run_udpkit("bench", f"127.0.0.1:{server.port}", *SHORT, "--json-stream")
    path = tmp_path / "stream.jsonl"
    path.write_bytes(done.stdout)
    merged = run_udpkit("bench", "merge", str(path), "--json")
    assert merged.returncode == 0, merged.stderr.decode()
    assert json.loads(merged.stdout)["sent"] == lines_of(done.stdout)[-1]["sent"]


def test_bench_target_still_works_beside_merge(server: ServeProcess) -> None:
    """``merge`` is reserved only as the first argument: targets and the
    UDPKIT_BENCH_* variables keep their meaning."""
    done = subprocess.run(
        [*UDPKIT, "bench", "-d", "0.3", "--warmup", "0", "--json"], capture_output=True,
        timeout=30, check=False,
        env={**_env(), "UDPKIT_BENCH_TARGET": f"127.0.0.1:{server.port}",
             "UDPKIT_BENCH_CONCURRENCY": "3"})
    assert done.returncode == 0, done.stderr.decode()
    assert json.loads(done.stdout)["config"]["concurrency"] == 3
    helped = run_udpkit("bench", "--help")
    assert b"udpkit bench merge RESULT.json" in helped.stdout


def test_import_udpkit_imports_no_locust() -> None:
    """Locust monkey-patches the process with gevent: only ``udpkit.locust`` may bring it."""
    code = ("import sys, udpkit, udpkit.bench, udpkit.client, udpkit.bench.merge, "
            "udpkit.bench.stream; print(sorted(m for m in ('locust', 'gevent') "
            "if m in sys.modules))")
    done = subprocess.run([*UDPKIT[:1], "-c", code], capture_output=True, timeout=30,
                          check=True)
    assert done.stdout.strip() == b"[]"
