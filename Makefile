# The README's two commands: `make demo` and `make test`.  Both create .venv
# on a fresh machine and need nothing else from the user.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test bench bench-dns bench-compare bench-latency bench-load venv lint typecheck clean

$(STAMP): pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	# The coverage-guided fuzzer, where a wheel exists for this Python; without it
	# tests/fuzz runs the same checks under hypothesis.
	$(BIN)/pip install --quiet 'atheris>=2.3' || echo "atheris unavailable: hypothesis fuzzes instead"
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/python scripts/demo.py

test: $(STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/mypy
	$(BIN)/pytest --cov --cov-report=term -q
	# The UDP and TCP server tests once more with the C fast path forced off, as
	# on a machine where the extension did not build (the pure path, announced).
	UDPKIT_NO_FASTPATH=1 $(BIN)/pytest -q -p no:cacheprovider \
		tests/net/test_fast_path.py tests/net/test_server_udp.py tests/net/test_shutdown.py \
		tests/net/test_server_tcp.py tests/net/test_server_tcp_len16.py tests/net/test_hardening.py \
		tests/net/test_proxy_protocol_server.py

# Side by side, in one run, with repeats: the C reference, the usual Python
# servers and udpkit over UDP and TCP, plus udpkit's RSS with 10,000 idle TCP
# connections; then latency at 1 in flight (bench-latency, below).  Rewrites their
# sections of docs/benchmarks.md and docs/benchmarks.png.
bench: $(STAMP)
	$(MAKE) -C benchmarks/c
	$(BIN)/pip install --quiet -e '.[bench]'
	$(BIN)/python benchmarks/bench_suite.py --rounds 5
	$(MAKE) bench-dns
	$(MAKE) bench-load
	$(BIN)/python benchmarks/bench_latency.py --rounds 10 --doc

# DNS: NSD, Knot and `udpkit serve dns` (fast and pure path) under dnsperf and udpkit bench,
# server on core 0, load on core 1 (needs nsd, knot, dnsperf: see .ci/run).
bench-dns: $(STAMP)
	$(BIN)/python benchmarks/bench_dns.py --duration 10 --rounds 3

# Latency under load (open-loop Poisson at 10/50/80/95% of each server's capacity, UDP
# and TCP) and how close `udpkit bench` comes to the C generator (issue 15).  Rewrites
# its section of docs/benchmarks.md and docs/latency_load.png.
bench-load: $(STAMP)
	$(MAKE) -C benchmarks/c
	$(BIN)/pip install --quiet -e '.[bench]'
	$(BIN)/python benchmarks/bench_pacing.py --seconds 2
	$(BIN)/python benchmarks/bench_latency_load.py --seconds 3

# Before and after a change, side by side in one run: this tree against BASELINE (a git
# revision, default HEAD, i.e. the uncommitted changes).  `make bench-compare BASELINE=main~3`
bench-compare: $(STAMP)
	$(MAKE) -C benchmarks/c
	$(BIN)/pip install --quiet -e '.[bench]'
	$(BIN)/python benchmarks/bench_compare.py --baseline $(or $(BASELINE),HEAD) --rounds 5

# Latency at 1 in flight, 10 rounds side by side: the C reference, udpkit and udpkit
# --busy-poll 50us, by the C generator and by sockperf (apt-get install sockperf), with
# throughput at 64 in flight and the server's CPU under load and idle.  Prints the table;
# LATENCY_ARGS="--doc --curve" also writes it into docs/benchmarks.md, with the curve.
bench-latency: $(STAMP)
	$(MAKE) -C benchmarks/c
	$(BIN)/python benchmarks/bench_latency.py --rounds 10 $(LATENCY_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests

typecheck: $(STAMP)
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .coverage .coverage.* .pytest_cache .mypy_cache .ruff_cache
