"""Tier (a): the pure impairment policy, hand-driven time, no sockets."""

from __future__ import annotations

import contextlib
import itertools
import random
import statistics
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.binomial import assert_binomial, binomial_bounds
from udpkit.core.errors import UsageError
from udpkit.core.impairment import (
    NO_IMPAIRMENTS,
    Decision,
    GilbertElliott,
    Impairments,
    LinkPolicy,
    LinkSettings,
    StreamState,
    flip_bit,
    from_json,
    parse_duration,
    parse_rate,
    parse_size,
    parse_spec,
    seeded_rng,
    update_from_json,
)

EVERYTHING = Impairments(
    loss=0.1, burst_loss=GilbertElliott(p=0.02, r=0.3), delay=0.05, jitter=0.01,
    duplicate=0.05, reorder=0.1, corrupt=0.05, truncate=0.05, rate=1e6, rate_burst=3000,
)


def run(settings: Impairments, n: int, *, seed: int = 1, size: int = 100,
        step: float = 0.001) -> tuple[LinkPolicy, list[Decision]]:
    policy = LinkPolicy(settings, rng=seeded_rng(seed, "test"))
    packets = [i.to_bytes(4, "big") * (size // 4) for i in range(n)]
    return policy, [policy.decide(packet, i * step) for i, packet in enumerate(packets)]


# --------------------------------------------------------------------------- determinism


def test_same_seed_same_packets_same_decisions() -> None:
    _, first = run(EVERYTHING, 2000, seed=7)
    _, again = run(EVERYTHING, 2000, seed=7)
    _, other = run(EVERYTHING, 2000, seed=8)
    assert first == again
    assert first != other


def test_loss_decisions_do_not_move_when_other_impairments_change() -> None:
    """Each datagram draws a fixed set of numbers, so switching jitter, duplication
    or corruption on does not shift which datagrams are lost."""
    _, plain = run(Impairments(loss=0.2), 3000)
    _, busy = run(Impairments(loss=0.2, jitter=0.01, delay=0.02, duplicate=0.3, corrupt=0.5,
                              truncate=0.2, reorder=0.3), 3000)
    assert [d.dropped for d in plain] == [d.dropped for d in busy]


def test_changing_settings_mid_run_keeps_the_random_stream() -> None:
    policy = LinkPolicy(NO_IMPAIRMENTS, rng=seeded_rng(3, "x"))
    for i in range(500):
        assert policy.decide(b"p", i).deliveries
    policy.settings = Impairments(loss=0.5)
    later = [policy.decide(b"p", i).dropped for i in range(500, 1000)]
    reference_policy = LinkPolicy(Impairments(loss=0.5), rng=seeded_rng(3, "x"))
    expected = [reference_policy.decide(b"p", i).dropped for i in range(1000)][500:]
    assert later == expected


def test_named_streams_are_independent_and_stable() -> None:
    assert seeded_rng(5, "up").random() == seeded_rng(5, "up").random()
    assert seeded_rng(5, "up").random() != seeded_rng(5, "down").random()


# --------------------------------------------------------------------------- rates


N = 20_000


@pytest.mark.parametrize(
    ("name", "p"), [("loss", 0.1), ("duplicate", 0.05), ("reorder", 0.2), ("corrupt", 0.01),
                    ("truncate", 0.03), ("loss", 0.5)])
def test_rates_are_within_exact_binomial_bounds(name: str, p: float) -> None:
    policy, _ = run(replace(NO_IMPAIRMENTS, **{name: p}), N)  # type: ignore[arg-type]
    stats = policy.stats()
    counted = {"loss": stats.dropped_loss, "duplicate": stats.duplicated,
               "reorder": stats.reordered, "corrupt": stats.corrupted,
               "truncate": stats.truncated}[name]
    assert_binomial(counted, N, p, what=name)


def test_the_bounds_helper_is_exact_enough() -> None:
    lo, hi = binomial_bounds(1000, 0.1, alpha=0.05)
    assert (lo, hi) == (82, 119)  # the textbook exact 95 % interval of B(1000, 0.1)
    assert binomial_bounds(10, 0.0) == (0, 0)
    assert binomial_bounds(10, 1.0) == (10, 10)


def test_counters_add_up() -> None:
    policy, decisions = run(EVERYTHING, 5000)
    stats = policy.stats()
    assert stats.received == 5000
    assert stats.received == stats.forwarded + stats.dropped
    assert stats.dropped_loss + stats.dropped_burst + stats.dropped_queue == stats.dropped
    assert stats.duplicated == sum(d.duplicated for d in decisions)
    assert stats.forwarded == sum(bool(d.deliveries) for d in decisions)
    copies = [c for d in decisions for c in d.deliveries]
    assert stats.bytes_forwarded == sum(len(c.data) for c in copies)
    assert stats.forwarded + stats.duplicated == len(copies)
    assert stats.as_json()["dropped"] == stats.dropped


# --------------------------------------------------------------------------- Gilbert-Elliott


def test_gilbert_elliott_bursts_have_the_expected_length_and_rate() -> None:
    """Bursts (runs of losses) are geometric with mean 1/r; gaps with mean 1/p;
    the loss rate tends to p / (p + r)."""
    model = GilbertElliott(p=0.05, r=0.25)
    policy, decisions = run(Impairments(burst_loss=model), 200_000)
    lost = [d.dropped == "burst" for d in decisions]
    runs: list[int] = []
    gaps: list[int] = []
    length = 0
    previous = lost[0]
    for flag in lost:
        if flag == previous:
            length += 1
            continue
        (runs if previous else gaps).append(length)
        previous, length = flag, 1
    mean_run = statistics.fmean(runs)
    mean_gap = statistics.fmean(gaps)
    # Standard errors: sqrt(1-r)/r/sqrt(n) ~ 0.05 and sqrt(1-p)/p/sqrt(n) ~ 0.28; 6 of them.
    assert abs(mean_run - 1 / model.r) < 6 * (1 - model.r) ** 0.5 / model.r / len(runs) ** 0.5
    assert abs(mean_gap - 1 / model.p) < 6 * (1 - model.p) ** 0.5 / model.p / len(gaps) ** 0.5
    assert model.mean_loss == pytest.approx(1 / 6)
    assert abs(sum(lost) / len(lost) - model.mean_loss) < 0.01
    assert policy.stats().dropped_burst == sum(lost)
    # Losses cluster: after a loss another follows with probability 1 - r, not 1/6.
    after_loss = [b for a, b in itertools.pairwise(lost) if a]
    assert abs(sum(after_loss) / len(after_loss) - (1 - model.r)) < 0.02


def test_gilbert_elliott_good_and_bad_state_loss() -> None:
    model = GilbertElliott(p=0.1, r=0.1, loss_bad=0.5, loss_good=0.02)
    policy, _ = run(Impairments(burst_loss=model), 100_000)
    assert model.mean_loss == pytest.approx(0.26)
    assert abs(policy.stats().dropped_burst / 100_000 - model.mean_loss) < 0.02


# --------------------------------------------------------------------------- delay, bandwidth


def test_delay_and_jitter_stay_in_range_and_centre_on_the_delay() -> None:
    _, decisions = run(Impairments(delay=0.05, jitter=0.01), 5000, step=1.0)
    delays = [d.deliveries[0].at - i for i, d in enumerate(decisions)]
    assert all(0.04 - 1e-9 <= x <= 0.06 + 1e-9 for x in delays)
    assert statistics.median(delays) == pytest.approx(0.05, abs=0.001)
    assert min(delays) < 0.041
    assert max(delays) > 0.059


def test_jitter_never_makes_a_negative_delay() -> None:
    _, decisions = run(Impairments(delay=0.001, jitter=0.01), 1000, step=1.0)
    assert all(d.deliveries[0].at >= i for i, d in enumerate(decisions))


def test_reordered_datagrams_are_held_back_by_the_gap() -> None:
    _, decisions = run(Impairments(reorder=1.0, reorder_gap=0.03, delay=0.01), 10, step=1.0)
    assert all(d.reordered and d.deliveries[0].at == pytest.approx(i + 0.04)
               for i, d in enumerate(decisions))


def test_bandwidth_paces_bytes_from_the_clock() -> None:
    policy = LinkPolicy(Impairments(rate=1000.0), rng=random.Random(0))
    times = [policy.decide(b"x" * 100, 0.0).deliveries[0].at for _ in range(5)]
    assert times == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5])
    # After an idle spell the bucket holds rate_burst (0) bytes: one packet's time again.
    assert policy.decide(b"x" * 100, 10.0).deliveries[0].at == pytest.approx(10.1)


def test_token_bucket_burst_passes_at_once() -> None:
    policy = LinkPolicy(Impairments(rate=1000.0, rate_burst=300), rng=random.Random(0))
    times = [policy.decide(b"x" * 100, 0.0).deliveries[0].at for _ in range(5)]
    assert times == pytest.approx([0.0, 0.0, 0.0, 0.1, 0.2])
    assert policy.decide(b"x" * 100, 1.0).deliveries[0].at == pytest.approx(1.0)


def test_full_bandwidth_queue_drops_the_tail() -> None:
    policy = LinkPolicy(Impairments(rate=1000.0, queue_limit=250), rng=random.Random(0))
    first = [policy.decide(b"x" * 100, 0.0) for _ in range(3)]
    assert [d.dropped for d in first] == [None, None, "queue"]
    later = policy.decide(b"x" * 100, 0.15)
    assert later.deliveries[0].at == pytest.approx(0.3)
    assert policy.stats().dropped_queue == 1


# --------------------------------------------------------------------------- corruption


def test_corruption_flips_exactly_one_bit() -> None:
    packets = [bytes(random.Random(i).randbytes(1 + i % 40)) for i in range(500)]
    policy = LinkPolicy(Impairments(corrupt=1.0), rng=random.Random(4))
    for packet in packets:
        decision = policy.decide(packet, 0.0)
        out = decision.deliveries[0].data
        assert decision.corrupted
        assert len(out) == len(packet)
        assert sum(bin(a ^ b).count("1") for a, b in zip(packet, out, strict=True)) == 1


def test_flip_bit_is_its_own_inverse() -> None:
    assert flip_bit(b"\x00\x00", 9) == b"\x00\x02"
    assert flip_bit(flip_bit(b"abc", 17), 17) == b"abc"


def test_truncation_keeps_a_strict_prefix() -> None:
    policy = LinkPolicy(Impairments(truncate=1.0), rng=random.Random(2))
    lengths = set()
    for _ in range(300):
        decision = policy.decide(b"0123456789", 0.0)
        out = decision.deliveries[0].data
        assert decision.truncated
        assert b"0123456789".startswith(out)
        assert len(out) < 10
        lengths.add(len(out))
    assert lengths == set(range(10))


def test_empty_datagrams_pass_untouched() -> None:
    policy = LinkPolicy(Impairments(corrupt=1.0, truncate=1.0), rng=random.Random(0))
    decision = policy.decide(b"", 0.0)
    assert decision.deliveries[0].data == b""
    assert not decision.corrupted


def test_duplicates_carry_the_same_bytes() -> None:
    policy = LinkPolicy(Impairments(duplicate=1.0, corrupt=1.0), rng=random.Random(0))
    decision = policy.decide(b"abc", 0.0)
    original, copy = decision.deliveries
    assert copy.duplicate
    assert not original.duplicate
    assert original.data == copy.data


# --------------------------------------------------------------------------- TCP streams


def test_stream_latency_keeps_the_byte_order_under_jitter() -> None:
    policy = LinkPolicy(Impairments(delay=0.05, jitter=0.04), rng=random.Random(0))
    state = StreamState()
    times = [policy.decide_stream(b"chunk", i * 0.001, state).at for i in range(500)]
    assert times == sorted(times)
    assert all(t >= i * 0.001 + 0.01 - 1e-9 for i, t in enumerate(times))


def test_stream_reset_after_n_bytes_cuts_at_the_limit() -> None:
    policy = LinkPolicy(Impairments(reset_after=10), rng=random.Random(0))
    state = StreamState()
    first = policy.decide_stream(b"123456", 0.0, state)
    second = policy.decide_stream(b"789abc", 0.0, state)
    assert (first.data, first.reset) == (b"123456", False)
    assert (second.data, second.reset) == (b"789a", True)
    assert policy.stats().resets == 1
    assert policy.stats().stream_bytes == 10


def test_stream_bandwidth() -> None:
    policy = LinkPolicy(Impairments(rate=1000.0), rng=random.Random(0))
    state = StreamState()
    times = [policy.decide_stream(b"x" * 500, 0.0, state).at for _ in range(4)]
    assert times == pytest.approx([0.5, 1.0, 1.5, 2.0])


# --------------------------------------------------------------------------- parsing


def test_spec_parsing() -> None:
    settings = parse_spec("loss=10%,delay=50ms, jitter=10ms,burst-loss=0.01/0.3/0.9,"
                          "rate=8mbit,reset-after=1kB,slow_close=1s,reorder-gap=500us")
    assert settings == Impairments(
        loss=0.1, delay=0.05, jitter=0.01, burst_loss=GilbertElliott(p=0.01, r=0.3, loss_bad=0.9),
        rate=1e6, reset_after=1000, slow_close=1.0, reorder_gap=0.0005)
    assert parse_spec("") == NO_IMPAIRMENTS
    assert parse_spec("loss=0.2", base=Impairments(delay=1.0)) == Impairments(loss=0.2, delay=1.0)


@pytest.mark.parametrize(("spec", "message"), [
    ("los=0.1", "unknown impairment 'los'"),
    ("loss", "is not key=value"),
    ("loss=1.5", "not a probability in [0, 1]"),
    ("loss=abc", "not a probability"),
    ("delay=50", "not a duration"),
    ("delay=-5ms", "not a duration"),
    ("rate=fast", "not a rate"),
    ("burst-loss=0.1", "not a burst loss"),
    ("burst-loss=0/0", "p and r cannot both be 0"),
    ("reset-after=1.5", "not a size"),
])
def test_bad_specs_say_what_is_wrong(spec: str, message: str) -> None:
    with pytest.raises(UsageError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_spec(spec)


def test_units() -> None:
    assert parse_duration("2s") == 2.0
    assert parse_duration("250us") == pytest.approx(0.00025)
    assert parse_rate("1mbit/s") == 125000
    assert parse_rate("2kB") == 2000
    assert parse_size("1MiB") == 1 << 20
    assert parse_size("64kB") == 64000


def test_json_is_strict() -> None:
    assert from_json({"loss": 0.1, "delay": "50ms", "reset_after": None}) == Impairments(
        loss=0.1, delay=0.05)
    assert from_json({"burst_loss": {"p": 0.1, "r": 0.5}}).burst_loss == GilbertElliott(
        p=0.1, r=0.5)
    for bad, message in [
        ([], "must be a JSON object"),
        ({"loss": True}, "must be a number or a string, not a boolean"),
        ({"loss": [1]}, "not an array"),
        ({"loss": None}, "cannot be null"),
        ({"lose": 0.1}, "unknown impairment"),
        ({"loss": 2}, r"probability in \[0, 1\]"),
        ({"delay": -1}, "finite number >= 0"),
        ({"queue_limit": 1.5}, "whole number"),
        ({"burst_loss": {"p": 0.1}}, "needs p and r"),
        ({"burst_loss": {"p": "x", "r": 0.1}}, "must be a number"),
    ]:
        with pytest.raises(UsageError, match=message):
            from_json(bad)


def test_put_replaces_and_patch_merges() -> None:
    current = LinkSettings(up=Impairments(loss=0.1, delay=0.01), down=Impairments(delay=0.02))
    put = update_from_json(current, {"up": {"duplicate": 0.5}}, merge=False)
    assert put == LinkSettings(up=Impairments(duplicate=0.5), down=current.down)
    patch = update_from_json(current, {"up": {"duplicate": 0.5}}, merge=True)
    assert patch.up == Impairments(loss=0.1, delay=0.01, duplicate=0.5)
    both = update_from_json(current, {"both": {"loss": 1}, "down": {"delay": 0.5}}, merge=False)
    assert both == LinkSettings(up=Impairments(loss=1.0), down=Impairments(loss=1.0, delay=0.5))
    with pytest.raises(UsageError, match="unknown direction"):
        update_from_json(current, {"sideways": {}}, merge=False)
    with pytest.raises(UsageError, match="nothing to change"):
        update_from_json(current, {}, merge=False)


@given(st.text(max_size=80))
def test_any_spec_text_parses_or_raises_usage_error(text: str) -> None:
    with contextlib.suppress(UsageError):
        assert isinstance(parse_spec(text), Impairments)


_json = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=True) | st.integers() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=12), inner,
                                                                  max_size=3),
    max_leaves=8,
)
_fields = st.sampled_from(["loss", "delay", "burst_loss", "rate", "reset_after", "queue_limit",
                           "jitter"])


@given(st.dictionaries(_fields, _json, max_size=4) | _json)
def test_any_json_parses_or_raises_usage_error(document: object) -> None:
    with contextlib.suppress(UsageError):
        assert isinstance(update_from_json(LinkSettings(), {"up": document}, merge=True),
                          LinkSettings)
