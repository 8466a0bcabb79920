"""``udpkit bench`` and ``udpkit ping`` as a library: load-test and probe any
request/response service over UDP or TCP.

Rule: importing this package needs only the standard library; ``hdrhistogram``
is imported when a result is built, ``rich`` and ``matplotlib`` only by the
report and plot modules the command line loads.

``result = udpkit.bench("127.0.0.1", 9999, concurrency=64, duration=5)``;
``merge_files(["a.json", "b.json"])`` adds up runs of several hosts (``bench merge``).
"""

from udpkit.bench.config import BenchConfig
from udpkit.bench.merge import MergeError, load_result, merge_files, merge_results
from udpkit.bench.result import BenchResult
from udpkit.bench.runner import BenchProgress, bench, run_async, run_config

__all__ = [
    "BenchConfig",
    "BenchProgress",
    "BenchResult",
    "MergeError",
    "bench",
    "load_result",
    "merge_files",
    "merge_results",
    "run_async",
    "run_config",
]
