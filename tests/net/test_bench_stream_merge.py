"""Tier (c): the Python side of ``--json-stream`` and ``bench merge``: two generators
side by side against the in-process server, each interval handed over as it closes,
the two results added up and compared with what the server counted."""

from __future__ import annotations

import asyncio
import json

from udpkit.bench import BenchConfig, merge_results, run_async
from udpkit.bench.merge import result_from_document
from udpkit.core.load_stats import IntervalStats
from udpkit.server import Server


async def test_two_generators_stream_their_intervals_and_merge(
    server: Server, loopback: str
) -> None:
    streams: list[list[IntervalStats]] = [[], []]
    config = BenchConfig(host=loopback, port=server.port, duration=0.6, warmup=0.1,
                         interval=0.2, concurrency=4)
    configs = [config, config]
    results = await asyncio.gather(*(
        run_async(config, on_interval=stream.append)
        for config, stream in zip(configs, streams, strict=True)))
    for result, stream in zip(results, streams, strict=True):
        assert len(stream) >= 3
        assert tuple(stream) == result.summary.intervals  # each exactly once, in order
        assert sum(item.sent for item in stream) == result.sent
        assert sum(item.received for item in stream) == result.received
        assert result.summary.started_at is not None
    # through their JSON documents, as `udpkit bench merge` reads them
    merged = merge_results([result_from_document(json.loads(json.dumps(r.as_dict())))
                            for r in results])
    assert merged.sent == sum(result.sent for result in results)
    assert merged.received == sum(result.received for result in results)
    assert merged.hdr_histogram().get_total_count() == merged.received
    assert merged.percentiles_us["max"] == max(r.percentiles_us["max"] for r in results)
    assert server.stats()["udp"].replied >= merged.received > 0
