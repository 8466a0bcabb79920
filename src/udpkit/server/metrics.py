"""Prometheus exposition of a running server's counters (``--metrics``).

Rule: nothing on the request path knows about Prometheus; a collector reads
the counters when scraped, so metrics cost nothing between scrapes.  Needs
the ``prometheus-client`` package (a dependency of the command line).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING

from udpkit.core.counters import OUTCOMES, CounterSnapshot
from udpkit.core.handler import format_address
from udpkit.core.histogram import LatencyHistogram
from udpkit.core.http_request import RequestHead, Response, error
from udpkit.http_server import HttpEndpoint, HttpLimits
from udpkit.server.logs import server_log

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric
    from prometheus_client.registry import Collector as _Collector
else:
    _Collector = object

METRICS_LIMITS = HttpLimits(max_body=0, request_timeout=5.0, max_connections=16)
"""A scrape is one small GET: no body, a few seconds, a handful at once."""

_TCP_ONLY = (
    "connections_opened",
    "connections_closed",
    "connections_rejected",
    "connections_denied",
    "closed_idle",
    "closed_slow",
    "closed_write_timeout",
    "closed_bad_proxy",
)


class ServerCollector(_Collector):
    """Reads ``stats()`` and the latency histogram at scrape time."""

    def __init__(
        self,
        stats: Callable[[], dict[str, CounterSnapshot]],
        open_connections: Callable[[], int],
        latency: LatencyHistogram,
        *,
        outcomes: Callable[[], Mapping[str, int]] | None = None,
    ) -> None:
        self._stats = stats
        self._open_connections = open_connections
        self._latency = latency
        self._outcomes = outcomes
        """The handler's own tally (``serve dns``: ``formerr``, ``refused``, ``rrl_drop``...)."""

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        stats = self._stats()
        received = CounterMetricFamily(
            "udpkit_requests_received", "Requests taken from the network", labels=["transport"]
        )
        outcomes = CounterMetricFamily(
            "udpkit_requests",
            "Requests by outcome (replied, no_reply, dropped_*, *_errors)",
            labels=["transport", "outcome"],
        )
        for transport, snapshot in stats.items():
            received.add_metric([transport], snapshot.received)
            for outcome in OUTCOMES:
                outcomes.add_metric([transport, outcome], getattr(snapshot, outcome))
        yield received
        yield outcomes
        kernel = CounterMetricFamily(
            "udpkit_udp_kernel_drops", "Datagrams dropped by the kernel for a full receive queue"
        )
        kernel.add_metric([], stats["udp"].kernel_drops)
        yield kernel
        tcp = CounterMetricFamily(
            "udpkit_tcp_connections", "TCP connection events", labels=["event"]
        )
        for name in _TCP_ONLY:
            tcp.add_metric([name], getattr(stats["tcp"], name))
        yield tcp
        gauge = GaugeMetricFamily("udpkit_tcp_open_connections", "Open TCP connections")
        gauge.add_metric([], self._open_connections())
        yield gauge
        tally = self._outcomes() if self._outcomes is not None else {}
        if tally:
            handler = CounterMetricFamily(
                "udpkit_handler_outcomes",
                "The handler's own tally of requests (serve dns: formerr, refused, rrl_drop...)",
                labels=["outcome"],
            )
            for name, count in tally.items():
                handler.add_metric([name], count)
            yield handler
        latency = self._latency
        histogram = HistogramMetricFamily(
            "udpkit_request_seconds", "Time from a request's arrival to its reply"
        )
        histogram.add_metric(
            [],
            [(_bound(bound), count) for bound, count in latency.cumulative()],
            sum_value=latency.total,
        )
        yield histogram


def _bound(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)


class MetricsServer:
    """``GET /metrics`` on ``host:port``, served from the event loop (:mod:`udpkit.http_server`:
    bounded connections and time, so idle scrapers cost neither threads nor descriptors)."""

    def __init__(
        self, host: str, port: int, collector: ServerCollector,
        *, limits: HttpLimits = METRICS_LIMITS,
    ) -> None:
        from prometheus_client import CollectorRegistry

        self._registry = CollectorRegistry(auto_describe=False)
        self._registry.register(collector)
        self.endpoint = HttpEndpoint(self._route, name="metrics", limits=limits,
                                     on_error=_log_bug)
        self.port = self.endpoint.listen(host, port)

    def _route(self, request: RequestHead, body: bytes) -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        if request.path != "/metrics":
            return error(404, f"no such endpoint {request.path!r}; try GET /metrics")
        if request.method != "GET":
            return error(405, f"{request.method} is not allowed on /metrics (allowed: GET)",
                         ("Allow", "GET"))
        return Response(200, generate_latest(self._registry), content_type=CONTENT_TYPE_LATEST)

    def close(self) -> None:
        self.endpoint.close()


def _log_bug(exc: BaseException) -> None:
    server_log.error("metrics endpoint: internal error", exc_info=exc)


def serve_metrics(host: str, port: int, collector: ServerCollector) -> MetricsServer:
    """Start a :class:`MetricsServer` on the running loop, say where, or raise
    :class:`UsageError`."""
    server = MetricsServer(host, port, collector)
    server_log.info("Serving metrics on http://%s/metrics", format_address((host, server.port)))
    return server
