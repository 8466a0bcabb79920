"""Before and after, side by side in one run: this tree's udpkit against an earlier revision's.

Rule: a change that might cost speed is measured against what it replaces in the
same run, never against figures from another day.  The earlier revision is
checked out into a git worktree of its own (kept under ``benchmarks/c/build``,
reused while it exists) and its C extension built in place; each udpkit server
runs with ``PYTHONPATH`` pointing at one tree's ``src``, so both use this
virtualenv's Python and packages and differ only in udpkit's code.  The C
reference (UDP) and the uvloop Protocol server (TCP) run in every round too, and
rounds alternate the order, as in ``bench_suite.py``, whose servers, load
generators and pinning this reuses.

    .venv/bin/python benchmarks/bench_compare.py --baseline REV [--rounds 5] [--quick]
        [--doc]   # also write the table into docs/benchmarks.md

The table gives medians of the rounds, each udpkit figure as a ratio to the
reference of its round (C for UDP, uvloop for TCP), and after/before: the
figure to look at, since it compares the two revisions under the same noise.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_suite as suite  # the script's own directory, put on the path above

ROOT = suite.ROOT
WORKTREES = ROOT / "benchmarks" / "c" / "build" / "baseline"
START, END = "<!-- bench_compare: start -->", "<!-- bench_compare: end -->"


def git(*args: str, cwd: Path = ROOT) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                          text=True).stdout.strip()


def baseline_tree(revision: str) -> tuple[Path, str]:
    """A checkout of ``revision`` with its extension built in place; and its short hash."""
    commit = git("rev-parse", "--short", f"{revision}^{{commit}}")
    tree = WORKTREES / commit
    if not (tree / "src" / "udpkit").is_dir():
        tree.parent.mkdir(parents=True, exist_ok=True)
        git("worktree", "add", "--force", "--detach", str(tree), commit)
    subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--inplace"], cwd=tree,
                   check=True, capture_output=True)
    return tree, commit


def udpkit_peers(label: str, src: Path) -> tuple[suite.Peer, suite.Peer, suite.Peer]:
    env = {"PYTHONPATH": str(src)}
    return (
        suite.Peer(f"udpkit {label} UDP", [*suite.UDPKIT, "--no-tcp", "--port", "{port}"], env),
        suite.Peer(f"udpkit {label} TCP", [*suite.UDPKIT, "--no-udp", "--port", "{port}"], env),
        suite.Peer(f"udpkit {label} TCP (no poller)",
                   [*suite.UDPKIT, "--no-udp", "--port", "{port}"],
                   {**env, "UDPKIT_NO_TCP_POLLER": "1"}),
    )


def check_loads(peer: suite.Peer, src: Path) -> None:
    """Fail early if a peer would import udpkit from anywhere but its own tree."""
    found = subprocess.run(
        [sys.executable, "-c", "import udpkit, udpkit._fastpath as f; print(f.__file__)"],
        env={**suite.os.environ, **peer.env}, capture_output=True, text=True, check=True,
    ).stdout.strip()
    if not found.startswith(str(src)):
        raise SystemExit(f"{peer.name} would load {found}, not from {src}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default="HEAD", help="git revision to compare with")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="shorter runs (a smoke test)")
    parser.add_argument("--doc", action="store_true",
                        help="write the table into docs/benchmarks.md")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    args = parser.parse_args()
    tree, commit = baseline_tree(args.baseline)
    before = udpkit_peers(f"before ({commit})", tree / "src")
    after = udpkit_peers("after", ROOT / "src")
    for peer in before:
        check_loads(peer, tree / "src")
    for peer in after:
        check_loads(peer, ROOT / "src")
    c_ref, uvloop = suite.UDP_PEERS[0], suite.TCP_PEERS[0]
    udp_peers = [c_ref, before[0], after[0]]
    tcp_peers = [uvloop, before[1], after[1], before[2], after[2]]
    udp: dict[str, list[dict[str, float]]] = {p.name: [] for p in udp_peers}
    tcp: dict[str, list[dict[str, float]]] = {p.name: [] for p in tcp_peers}
    started = time.monotonic()
    for index in range(args.rounds):
        flip = index % 2 == 1
        for peer in udp_peers[::-1] if flip else udp_peers:
            result = suite.udp_round(peer, args.quick)
            udp[peer.name].append(result)
            print(f"round {index + 1}/{args.rounds} {peer.name}: {result['rps']:,.0f} req/s, "
                  f"p50 {result['p50_us']:.1f} us", flush=True)
        for peer in tcp_peers[::-1] if flip else tcp_peers:
            result = suite.tcp_round(peer, args.quick)
            tcp[peer.name].append(result)
            print(f"round {index + 1}/{args.rounds} {peer.name}: {result['piped']:,.0f} piped, "
                  f"{result['single']:,.0f} single lines/s", flush=True)
    seconds = time.monotonic() - started
    text = render(udp, tcp, c_ref.name, uvloop.name, before, after, commit, args.rounds, seconds)
    print(text)
    if args.json:
        args.json.write_text(json.dumps({"udp": udp, "tcp": tcp}, indent=1))
    if args.doc:
        suite.replace_section(text, START, END)
        print(f"wrote {suite.DOC.relative_to(ROOT)}")


def ratio(runs: list[dict[str, float]], refs: list[dict[str, float]], key: str) -> float:
    """Median over rounds of the figure divided by its round's reference figure."""
    return suite.median([run[key] / ref[key] for run, ref in zip(runs, refs, strict=True)])


def render(
    udp: dict[str, list[dict[str, float]]], tcp: dict[str, list[dict[str, float]]],
    c_name: str, uv_name: str, before: tuple[suite.Peer, ...], after: tuple[suite.Peer, ...],
    commit: str, rounds: int, seconds: float,
) -> str:
    head = git("rev-parse", "--short", "HEAD")
    dirty = " + uncommitted changes" if git("status", "--porcelain", "--untracked-files=no") else ""
    lines = [
        START,
        f"## Before and after (`benchmarks/bench_compare.py --baseline {commit}`)",
        "",
        f"{head}{dirty} against {commit}, {rounds} rounds, {seconds:.0f} s, "
        f"{time.strftime('%Y-%m-%d %H:%M')}; medians of per-round ratios, so both revisions "
        "are held to the same reference under the same noise.",
        "",
        "| measure | before | after | after / before |",
        "|---|---:|---:|---:|",
    ]
    c_runs = udp[c_name]
    rows = [
        ("UDP req/s x C (64 in flight)", udp[before[0].name], udp[after[0].name], c_runs, "rps"),
        ("UDP p50 x C (1 in flight)", udp[before[0].name], udp[after[0].name], c_runs, "p50_us"),
        ("TCP lines/s x uvloop, poller, 16 x 16", tcp[before[1].name], tcp[after[1].name],
         tcp[uv_name], "piped"),
        ("TCP lines/s x uvloop, poller, 16 x 1", tcp[before[1].name], tcp[after[1].name],
         tcp[uv_name], "single"),
        ("TCP lines/s x uvloop, no poller, 16 x 16", tcp[before[2].name], tcp[after[2].name],
         tcp[uv_name], "piped"),
        ("TCP lines/s x uvloop, no poller, 16 x 1", tcp[before[2].name], tcp[after[2].name],
         tcp[uv_name], "single"),
    ]
    for label, was, now, refs, key in rows:
        old, new = ratio(was, refs, key), ratio(now, refs, key)
        lines.append(f"| {label} | {old:.2f} | {new:.2f} | {new / old:.2f} |")
    lost = int(sum(r["lost"] for r in udp[after[0].name]))
    lines += ["", f"Datagrams lost by the after revision at 64 in flight: {lost}.", END]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
