"""Tier (a): Toxiproxy's toxics and proxy bodies, sans-IO, the clock passed by hand."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from udpkit.core.errors import UsageError
from udpkit.core.impairment import Impairments, LinkPolicy, seeded_rng
from udpkit.core.toxics import (
    TOXIC_TYPES,
    Close,
    DatagramToxics,
    EndOfStream,
    PolicyStream,
    Reset,
    StreamEvent,
    StreamToxics,
    Toxic,
    ToxicCounters,
    ToxicError,
    Write,
    toxic_from_json,
    updated_toxic,
)
from udpkit.core.toxiproxy import (
    ProxySpec,
    config_from_text,
    load_json_untrusted,
    prometheus_text,
    proxies_from_json,
    proxy_from_json,
    proxy_json,
    proxy_update,
)

# --------------------------------------------------------------------------- bodies


def test_a_toxic_gets_toxiproxys_defaults_and_shape() -> None:
    toxic = toxic_from_json({"type": "latency", "attributes": {"latency": 100}})
    assert toxic.as_json() == {"attributes": {"latency": 100, "jitter": 0},
                               "name": "latency_downstream", "type": "latency",
                               "stream": "downstream", "toxicity": 1.0}


@pytest.mark.parametrize(("body", "message"), [
    ({"type": "nope"}, "invalid toxic type"),
    ({}, "invalid toxic type"),
    ({"type": "latency", "stream": "sideways"},
     "stream was invalid, can be either upstream or downstream"),
    ({"type": "latency", "toxicity": 1.5}, "bad request body: toxicity must be a number in"),
    ({"type": "latency", "toxicity": True}, "bad request body: toxicity must be a number in"),
    ({"type": "latency", "attributes": {"latency": "1s"}},
     "bad request body: attribute latency must be a number"),
    ({"type": "latency", "attributes": {"latency": 1.5}},
     "bad request body: attribute latency must be a whole number"),
    ({"type": "latency", "attributes": {"latency": -1}},
     "bad request body: attribute latency must be in 0.."),
    ({"type": "latency", "attributes": {"latency": 10**30}}, "bad request body: attribute"),
    ({"type": "latency", "attributes": {"latency": 600_001}}, "bad request body: attribute"),
    ({"type": "latency", "attributes": {"delay": 1}},
     "bad request body: latency has no attribute 'delay'"),
    ({"type": "latency", "attributes": []}, "bad request body: attributes must be an object"),
    ({"type": "burst_loss", "attributes": {"p": 2}}, "bad request body: attribute p must be"),
    ([], "bad request body: a toxic must be a JSON object"),
])
def test_bad_toxics_are_400s_with_toxiproxys_words(body: object, message: str) -> None:
    protocols = ("udp",) if isinstance(body, dict) and body.get("type") == "burst_loss" else (
        "tcp",)
    with pytest.raises(ToxicError) as caught:
        toxic_from_json(body, protocols=protocols)
    assert caught.value.status == 400
    assert caught.value.message.startswith(message)


def test_a_toxic_must_fit_the_proxys_protocol() -> None:
    with pytest.raises(ToxicError, match="loss applies to udp only"):
        toxic_from_json({"type": "loss"}, protocols=("tcp",))
    with pytest.raises(ToxicError, match="slicer applies to tcp only"):
        toxic_from_json({"type": "slicer"}, protocols=("udp",))
    assert toxic_from_json({"type": "loss"}, protocols=("tcp", "udp")).type == "loss"


def test_an_update_changes_only_what_it_names() -> None:
    toxic = toxic_from_json({"type": "latency", "toxicity": 0.5,
                             "attributes": {"latency": 100, "jitter": 10}})
    changed = updated_toxic(toxic, {"attributes": {"jitter": 20}})
    assert changed.attribute("latency") == 100
    assert changed.attribute("jitter") == 20
    assert changed.toxicity == 0.5
    assert updated_toxic(changed, {"toxicity": 1}).toxicity == 1.0


def test_proxy_bodies() -> None:
    spec = proxy_from_json({"name": "db", "upstream": "127.0.0.1:5432"})
    assert spec == ProxySpec(name="db", listen="127.0.0.1:0", upstream="127.0.0.1:5432")
    assert proxy_json(spec, "127.0.0.1:4000", []) == {
        "name": "db", "listen": "127.0.0.1:4000", "upstream": "127.0.0.1:5432",
        "enabled": True, "protocol": "tcp", "toxics": []}
    with pytest.raises(ToxicError, match=r"^missing required field: name$"):
        proxy_from_json({"upstream": "127.0.0.1:1"})
    with pytest.raises(ToxicError, match=r"^missing required field: upstream at proxy 2$"):
        proxies_from_json([{"name": "a", "upstream": "127.0.0.1:1"}, {"name": "b"}],
                          allow_toxics=False)
    with pytest.raises(ToxicError, match="protocol must be one of"):
        proxy_from_json({"name": "a", "upstream": "127.0.0.1:1", "protocol": "sctp"})
    with pytest.raises(ToxicError, match="upstream"):
        proxy_from_json({"name": "a", "upstream": "no port"})
    # As Toxiproxy: other fields are ignored (its Go client sends "toxics" with a proxy)
    assert proxy_from_json({"name": "a", "upstream": "127.0.0.1:1", "toxics": None,
                            "colour": "red"}).toxics == ()
    assert toxic_from_json({"type": "latency", "colour": "red"}).type == "latency"
    with pytest.raises(ToxicError, match="unknown field"):
        proxy_from_json({"name": "a", "upstream": "127.0.0.1:1", "colour": "red"},
                        allow_toxics=True)
    with pytest.raises(ToxicError, match="unknown field"):
        proxy_from_json({"name": "a", "upstream": "127.0.0.1:1", "protocol": "udp",
                         "toxics": [{"type": "loss", "colour": "red"}]}, allow_toxics=True)
    assert proxy_update(spec, {"enabled": False}).enabled is False
    assert proxy_update(spec, {"enabled": False}).upstream == spec.upstream


def test_a_config_file_declares_proxies_with_toxics() -> None:
    specs = config_from_text("""[
      {"name": "dns", "listen": "127.0.0.1:0", "upstream": "127.0.0.1:53", "protocol": "udp",
       "toxics": [{"type": "loss", "stream": "upstream", "toxicity": 0.1}]},
      {"name": "db", "listen": "127.0.0.1:0", "upstream": "127.0.0.1:5432", "enabled": false}
    ]""")
    assert [s.name for s in specs] == ["dns", "db"]
    assert specs[0].toxics[0].name == "loss_upstream"
    assert specs[0].protocols == ("udp",)
    assert specs[1].enabled is False
    with pytest.raises(UsageError, match=r"^config: bad request body"):
        config_from_text("{")
    with pytest.raises(UsageError, match="twice"):
        config_from_text('[{"name": "a", "upstream": "h:1"}, {"name": "a", "upstream": "h:1"}]')


def test_untrusted_json_is_a_400() -> None:
    for body in (b"{", b"\xff", b"[" * 100_000, b"1" * 5000):
        with pytest.raises(ToxicError) as caught:
            load_json_untrusted(body)
        assert caught.value.status == 400


def test_prometheus_text() -> None:
    text = prometheus_text([("x_total", "counter", "Xs.", [({"proxy": 'a"b'}, 3)])])
    assert text == '# HELP x_total Xs.\n# TYPE x_total counter\nx_total{proxy="a\\"b"} 3\n'


# --------------------------------------------------------------------------- TCP chains


def chain(*bodies: dict[str, object], seed: int = 0) -> tuple[StreamToxics,
                                                                dict[str, ToxicCounters]]:
    toxics = [toxic_from_json(body) for body in bodies]
    counters = {t.name: ToxicCounters() for t in toxics}
    return StreamToxics(toxics, random.Random(seed), counters), counters


def writes(events: list[StreamEvent]) -> list[tuple[float, bytes]]:
    return [(round(e.at, 6), e.data) for e in events if isinstance(e, Write)]


def test_latency_keeps_order_and_adds_its_delay() -> None:
    stream, _ = chain({"type": "latency", "attributes": {"latency": 100}})
    assert writes(stream.feed(b"a", 1.0)) == [(1.1, b"a")]
    assert writes(stream.feed(b"b", 1.05)) == [(1.15, b"b")]
    assert stream.end(1.2) == [EndOfStream(1.2)]


def test_jitter_never_reorders_a_stream() -> None:
    stream, _ = chain({"type": "latency", "attributes": {"latency": 100, "jitter": 90}})
    sent = [i / 100 for i in range(50)]  # closer than the jitter: would overtake
    times = [writes(stream.feed(b"x", now))[0][0] for now in sent]
    assert times == sorted(times)
    assert all(t - now >= 0.01 - 1e-6 for t, now in zip(times, sent, strict=True))
    spread, _ = chain({"type": "latency", "attributes": {"latency": 100, "jitter": 90}})
    delays = {round(writes(spread.feed(b"x", float(i)))[0][0] - i, 3) for i in range(50)}
    assert len(delays) > 10  # it does vary
    assert all(0.01 <= delay < 0.19 for delay in delays)


def test_bandwidth_spaces_bytes_at_the_rate() -> None:
    stream, _ = chain({"type": "bandwidth", "attributes": {"rate": 10}})  # 10 000 bytes/s
    out = writes(stream.feed(b"x" * 5000, 0.0))
    assert [len(data) for _, data in out] == [1000] * 5  # 100 ms worth at a time
    assert out[-1][0] == 0.5
    assert writes(stream.feed(b"y" * 1000, 0.1))[-1][0] == 0.6  # queued behind


def test_slicer_cuts_as_toxiproxy_does() -> None:
    stream, _ = chain({"type": "slicer", "attributes": {"average_size": 10,
                                                        "size_variation": 0, "delay": 1000}})
    out = writes(stream.feed(bytes(range(80)), 0.0))
    assert [len(data) for _, data in out] == [10] * 8
    assert b"".join(data for _, data in out) == bytes(range(80))
    assert [t for t, _ in out] == [round(i * 0.001, 6) for i in range(8)]
    varied, _ = chain({"type": "slicer", "attributes": {"average_size": 10,
                                                        "size_variation": 4}})
    sizes = [len(d) for _, d in writes(varied.feed(b"x" * 1000, 0.0))]
    assert sum(sizes) == 1000
    assert max(sizes) <= 14


def test_limit_data_passes_the_limit_then_closes() -> None:
    stream, counters = chain({"type": "limit_data", "attributes": {"bytes": 15}})
    assert stream.feed(b"0123456789", 0.0) == [Write(0.0, b"0123456789")]
    assert stream.feed(b"abcdefghij", 1.0) == [Write(1.0, b"abcde"), Close(1.0)]
    assert stream.feed(b"more", 2.0) == []
    assert counters["limit_data_downstream"].closed == 1
    assert counters["limit_data_downstream"].dropped == 5


def test_timeout_drops_and_closes_after_its_time() -> None:
    stream, counters = chain({"type": "timeout", "attributes": {"timeout": 500}})
    assert stream.start(1.0) == [Close(1.5)]
    assert stream.feed(b"data", 1.1) == []
    assert counters["timeout_downstream"].dropped == 4
    forever, _ = chain({"type": "timeout"})
    assert forever.start(1.0) == []


def test_reset_peer_resets_after_the_first_data() -> None:
    stream, _ = chain({"type": "reset_peer", "attributes": {"timeout": 200}})
    assert stream.start(0.0) == []
    assert stream.feed(b"x", 1.0) == [Reset(1.2)]
    assert stream.feed(b"y", 1.1) == []


def test_slow_close_holds_the_close_back() -> None:
    stream, _ = chain({"type": "latency", "attributes": {"latency": 100}},
                      {"type": "slow_close", "attributes": {"delay": 300}})
    stream.feed(b"x", 0.0)
    assert stream.end(0.05) == [EndOfStream(0.4)]


def test_toxicity_is_rolled_per_connection_reproducibly() -> None:
    toxic = toxic_from_json({"type": "latency", "toxicity": 0.3, "attributes": {"latency": 1}})
    counters = {toxic.name: ToxicCounters()}
    got = [StreamToxics([toxic], seeded_rng(7, "p", str(n)), counters).feed(b"x", 0.0)[0].at
           > 0 for n in range(1000)]
    again = [StreamToxics([toxic], seeded_rng(7, "p", str(n)), counters).feed(b"x", 0.0)[0].at
             > 0 for n in range(1000)]
    assert got == again
    assert 230 <= sum(got) <= 370
    assert counters[toxic.name].applied + counters[toxic.name].skipped == 2000


def test_the_loss_engines_stream_as_events() -> None:
    stream = PolicyStream(LinkPolicy(Impairments(delay=0.1, reset_after=3, slow_close=0.2),
                                     rng=random.Random(0)))
    assert stream.feed(b"ab", 0.0) == [Write(0.1, b"ab")]
    assert stream.feed(b"cd", 0.0) == [Write(0.1, b"c"), Reset(0.1)]
    assert stream.end(1.0) == []
    closing = PolicyStream(LinkPolicy(Impairments(slow_close=0.2), rng=random.Random(0)))
    assert closing.end(1.0) == [EndOfStream(1.2)]


# --------------------------------------------------------------------------- UDP chains


def datagrams(*bodies: dict[str, object], seed: int = 0) -> tuple[DatagramToxics,
                                                                  dict[str, ToxicCounters]]:
    toxics = [toxic_from_json(body, protocols=("udp",)) for body in bodies]
    counters = {t.name: ToxicCounters() for t in toxics}
    return DatagramToxics(toxics, random.Random(seed), counters), counters


def test_each_datagram_toxic_does_its_part() -> None:
    duplicate, _ = datagrams({"type": "duplicate"})
    assert [d.data for d in duplicate.decide(b"x", 0.0).deliveries] == [b"x", b"x"]
    loss, counters = datagrams({"type": "loss"})
    assert loss.decide(b"x", 0.0).dropped == "loss"
    assert counters["loss_downstream"].dropped == 1
    reorder, _ = datagrams({"type": "reorder", "attributes": {"gap": 30}})
    assert reorder.decide(b"x", 1.0).deliveries[0].at == pytest.approx(1.03)
    corrupt, _ = datagrams({"type": "corrupt"})
    flipped = corrupt.decide(b"\x00" * 8, 0.0).deliveries[0].data
    assert sum(bin(byte).count("1") for byte in flipped) == 1
    truncate, _ = datagrams({"type": "truncate"})
    assert len(truncate.decide(b"abcdef", 0.0).deliveries[0].data) < 6
    latency, _ = datagrams({"type": "latency", "attributes": {"latency": 200}})
    assert latency.decide(b"x", 1.0).deliveries[0].at == pytest.approx(1.2)
    timeout, _ = datagrams({"type": "timeout"})
    assert timeout.decide(b"x", 0.0).deliveries == ()


def test_datagram_bandwidth_queues_at_the_rate() -> None:
    limited, _ = datagrams({"type": "bandwidth", "attributes": {"rate": 1}})  # 1000 B/s
    times = [limited.decide(b"x" * 100, 0.0).deliveries[0].at for _ in range(10)]
    assert times == pytest.approx([0.1 * (i + 1) for i in range(10)])


def test_toxicity_is_per_datagram_and_seeded() -> None:
    def run(seed: int) -> list[bool]:
        loss, _ = datagrams({"type": "loss", "toxicity": 0.25}, seed=seed)
        return [loss.decide(b"x", 0.0).dropped is None for _ in range(2000)]

    assert run(3) == run(3)
    assert run(3) != run(4)
    assert 1400 <= sum(run(3)) <= 1600


def test_burst_loss_follows_its_chain() -> None:
    bursts, counters = datagrams({"type": "burst_loss",
                                  "attributes": {"p": 0.05, "r": 0.5}})
    lost = [bursts.decide(b"x", 0.0).dropped is not None for _ in range(20_000)]
    rate = sum(lost) / len(lost)
    assert 0.06 <= rate <= 0.12  # p / (p + r) = 0.091
    runs = "".join("L" if x else "." for x in lost).split(".")
    assert max(len(run) for run in runs) >= 3  # losses come in bursts
    assert counters["burst_loss_downstream"].dropped == sum(lost)


def test_every_toxic_type_has_a_docstring_line() -> None:
    assert all(kind.doc for kind in TOXIC_TYPES.values())
    assert Toxic("t", "latency").attribute("jitter") == 0


# --------------------------------------------------------------------------- properties

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["name", "type", "stream", "toxicity", "attributes", "latency",
                         "rate", "listen", "upstream", "enabled", "protocol", "toxics",
                         "x"]), inner, max_size=6),
    max_leaves=20)


@given(_json)
def test_any_body_is_a_toxic_or_a_toxic_error(body: object) -> None:
    statuses = []
    for parse in (lambda: toxic_from_json(body, protocols=("tcp", "udp")),
                  lambda: proxy_from_json(body, allow_toxics=True),
                  lambda: proxies_from_json(body, allow_toxics=False),
                  lambda: updated_toxic(Toxic("t", "latency"), body)):
        try:
            parse()
        except ToxicError as exc:  # the one error a body may cause
            statuses.append(exc.status)
    assert all(400 <= status < 500 for status in statuses)


@given(st.lists(st.binary(min_size=1, max_size=3000), min_size=1, max_size=8),
       st.integers(0, 2**32))
def test_stream_toxics_keep_every_byte_in_order(chunks: list[bytes], seed: int) -> None:
    stream, _ = chain({"type": "latency", "attributes": {"latency": 30, "jitter": 20}},
                      {"type": "bandwidth", "attributes": {"rate": 50}},
                      {"type": "slicer", "attributes": {"average_size": 100,
                                                        "size_variation": 40, "delay": 10}},
                      seed=seed)
    out: list[tuple[float, bytes]] = []
    for index, chunk in enumerate(chunks):
        out += writes(stream.feed(chunk, index * 0.01))
    assert b"".join(data for _, data in out) == b"".join(chunks)
    times = [at for at, _ in out]
    assert times == sorted(times)
