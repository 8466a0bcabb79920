"""The sans-IO analysis of ``udpkit audit``: what was sent and what came back in,
amplification factors, limits and verdicts out.

Rule: no socket, asyncio or time import here.  The prober (``udpkit.audit``)
only counts datagrams and bytes; every figure and every verdict is computed
here from those counts, so a test can feed synthetic observations and check
exact numbers.

Bytes are UDP payload bytes, as RFC 9000 counts them; the on-wire factor adds
the IP and UDP headers (28 bytes over IPv4, 48 over IPv6) to both sides.

The verdicts:

* **RFC 8085** (UDP Usage Guidelines, section 3.1 on congestion control and
  the load an application puts on the path): an unauthenticated request
  should not make the service send more than it received, in bytes or in
  datagrams.  A service whose reply is larger is reported as *amplifies*,
  with its worst factor; it is then a reflector in the sense of the
  memcached, DNS and NTP attacks.
  https://www.rfc-editor.org/rfc/rfc8085#section-3.1
* **RFC 9000 section 8.1**: before it has validated a peer's address, a QUIC
  server must not send more than three times the bytes it has received from
  it.  A datagram service with no address validation is held to that bound
  for every request: reply bytes <= 3 x request bytes.
  https://www.rfc-editor.org/rfc/rfc9000#section-8.1
* **Rate limit**: the first step of the rate ramp whose answered fraction
  falls below the threshold (0.9 by default), provided the steps before it
  were answered; informational, no RFC mandates a figure.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

RFC_9000_FACTOR = 3.0
"""RFC 9000 section 8.1: at most three times the bytes received before validation."""

DEFAULT_LIMIT_THRESHOLD = 0.9
"""A ramp step answering less than this fraction of its requests is limited."""

IPV4_UDP_HEADERS = 28
"""IPv4 header (20) + UDP header (8), for the on-wire factor."""
IPV6_UDP_HEADERS = 48
"""IPv6 header (40) + UDP header (8)."""


# --------------------------------------------------------------------- observations


@dataclass(frozen=True, slots=True, kw_only=True)
class ProbeObservation:
    """What came back for the requests of one size (a window of the size sweep,
    or the empty / oversized datagrams)."""

    size: int
    """UDP payload bytes of each request."""
    sent: int
    """Requests that left the socket."""
    replies: int = 0
    """Datagrams received in this size's window."""
    reply_bytes: int = 0
    """Their total UDP payload bytes."""
    largest_reply: int = 0
    """The largest of them, in bytes."""
    send_error: str | None = None
    """Why requests could not be sent (``EMSGSIZE``...), ``None`` when all went."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RampObservation:
    """One step of the rate ramp: one source sending at one rate."""

    target_rate: float
    """Requests per second asked for."""
    duration: float
    """Seconds spent sending."""
    sent: int
    """Requests that left the socket."""
    replies: int
    """Datagrams received during the step and its drain window."""
    not_sent: int = 0
    """Requests the local socket refused (full buffer): not offered to the service."""


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditObservations:
    """Everything the prober saw, as counts."""

    target: str
    """``HOST:PORT`` of the audited service, as resolved."""
    header_bytes: int = IPV4_UDP_HEADERS
    """IP + UDP header bytes per datagram on this path (28 IPv4, 48 IPv6)."""
    sizes: tuple[ProbeObservation, ...] = ()
    """The size sweep, one entry per request size."""
    empty: ProbeObservation | None = None
    """Empty datagrams (``None`` when not probed)."""
    oversize: tuple[ProbeObservation, ...] = ()
    """Oversized datagrams (1500, 9000, 65507 bytes...)."""
    ramp_request_size: int | None = None
    """Bytes of each ramp request; ``None`` when the ramp did not run."""
    ramp: tuple[RampObservation, ...] = ()
    """The rate ramp, in the order run (rising rates)."""
    notes: tuple[str, ...] = ()
    """What the prober could not do (time budget spent, ramp skipped...)."""


# ------------------------------------------------------------------------- results

Status = Literal["ok", "amplifies", "exceeds", "limited", "unlimited", "unknown"]


@dataclass(frozen=True, slots=True)
class SizeResult:
    """The amplification of one request size."""

    size: int
    sent: int
    replies: int
    reply_bytes: int
    largest_reply: int
    byte_factor: float | None
    """Reply bytes / request bytes; ``inf`` for bytes in reply to an empty
    request; ``None`` when nothing was sent or 0 bytes answered 0 bytes."""
    packet_factor: float | None
    """Reply datagrams / request datagrams; ``None`` when nothing was sent."""
    wire_factor: float | None
    """Like ``byte_factor`` with the IP and UDP headers counted on both sides."""
    within_rfc9000: bool | None
    """Reply bytes <= 3 x request bytes; ``None`` when nothing was sent."""
    amplifies: bool
    """More bytes or more datagrams came back than went out."""
    send_error: str | None = None

    @property
    def answered(self) -> bool:
        return self.replies > 0

    @property
    def mean_reply(self) -> float:
        return self.reply_bytes / self.replies if self.replies else 0.0


@dataclass(frozen=True, slots=True)
class RampStepResult:
    """One step of the ramp, with its answered fraction."""

    target_rate: float
    achieved_rate: float
    """Requests actually sent per second."""
    sent: int
    not_sent: int
    replies: int
    answered_fraction: float | None
    """Replies / (sent x replies per request seen in the sweep); ``None`` when
    nothing was sent."""
    limited: bool
    """Answered fraction below the threshold."""


@dataclass(frozen=True, slots=True)
class RateLimitResult:
    """Where the service stopped answering one source."""

    status: Literal["limited", "unlimited", "unknown"]
    limit_rate: float | None
    """Target rate of the first limited step."""
    last_full_rate: float | None
    """Target rate of the last step answered in full before it (``None`` when
    the first step was already limited)."""
    answered_fraction: float | None
    """Answered fraction at ``limit_rate``."""
    highest_rate: float | None
    """Highest achieved rate of any step."""
    ramp_requests: int = 0
    """Requests the whole ramp sent: a limiter whose burst is larger cannot show."""


@dataclass(frozen=True, slots=True)
class Verdict:
    """One line of the conclusion."""

    rule: str
    status: Status
    detail: str


@dataclass(frozen=True, slots=True)
class AuditReport:
    """The figures and verdicts of one audit."""

    target: str
    header_bytes: int
    sizes: tuple[SizeResult, ...]
    empty: SizeResult | None
    oversize: tuple[SizeResult, ...]
    ramp_request_size: int | None
    ramp: tuple[RampStepResult, ...]
    rate_limit: RateLimitResult
    max_byte_factor: float | None
    """Worst byte factor over every request sent (sweep, empty, oversize)."""
    worst_size: int | None
    """The request size of that worst factor."""
    max_packet_factor: float | None
    verdicts: tuple[Verdict, ...]
    notes: tuple[str, ...] = field(default=())

    def verdict(self, rule: str) -> Verdict:
        """The verdict whose rule starts with ``rule`` (``"RFC 8085"``...)."""
        for verdict in self.verdicts:
            if verdict.rule.startswith(rule):
                return verdict
        raise KeyError(rule)

    def size(self, size: int) -> SizeResult:
        """The sweep result for requests of ``size`` bytes."""
        for result in self.sizes:
            if result.size == size:
                return result
        raise KeyError(size)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: infinite factors become the string ``"inf"``."""
        return _json_safe(asdict(self))  # type: ignore[no-any-return]


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(item) for item in value]
    return value


# ------------------------------------------------------------------------ analysis


def size_result(observation: ProbeObservation, *, header_bytes: int) -> SizeResult:
    """The factors of one size window."""
    sent, size = observation.sent, observation.size
    replies, reply_bytes = observation.replies, observation.reply_bytes
    request_bytes = sent * size
    byte_factor: float | None
    if sent == 0:
        byte_factor = None
    elif request_bytes == 0:
        byte_factor = math.inf if reply_bytes > 0 else None
    else:
        byte_factor = reply_bytes / request_bytes
    packet_factor = replies / sent if sent else None
    wire_factor = (
        (reply_bytes + replies * header_bytes) / (sent * (size + header_bytes)) if sent else None
    )
    within = reply_bytes <= RFC_9000_FACTOR * request_bytes if sent else None
    amplifies = sent > 0 and (reply_bytes > request_bytes or replies > sent)
    return SizeResult(
        size=size,
        sent=sent,
        replies=replies,
        reply_bytes=reply_bytes,
        largest_reply=observation.largest_reply,
        byte_factor=byte_factor,
        packet_factor=packet_factor,
        wire_factor=wire_factor,
        within_rfc9000=within,
        amplifies=amplifies,
        send_error=observation.send_error,
    )


def ramp_results(
    steps: tuple[RampObservation, ...],
    *,
    replies_per_request: float = 1.0,
    threshold: float = DEFAULT_LIMIT_THRESHOLD,
) -> tuple[tuple[RampStepResult, ...], RateLimitResult]:
    """Each step's answered fraction, and the rate where a limit kicks in.

    ``replies_per_request`` is what the sweep saw for the ramp's request size
    (a service answering each request with two datagrams answers "in full"
    with two replies per request).  The limit is the first step whose
    fraction is below ``threshold``; ``last_full_rate`` the step before it.
    """
    per_request = replies_per_request if replies_per_request > 0 else 1.0
    results: list[RampStepResult] = []
    for step in steps:
        fraction = step.replies / (step.sent * per_request) if step.sent else None
        achieved = step.sent / step.duration if step.duration > 0 else 0.0
        results.append(RampStepResult(
            target_rate=step.target_rate,
            achieved_rate=achieved,
            sent=step.sent,
            not_sent=step.not_sent,
            replies=step.replies,
            answered_fraction=fraction,
            limited=fraction is not None and fraction < threshold,
        ))
    measured = [result for result in results if result.answered_fraction is not None]
    highest = max((result.achieved_rate for result in measured), default=None)
    if not measured:
        return tuple(results), RateLimitResult("unknown", None, None, None, None)
    last_full: float | None = None
    for result in measured:
        if result.limited:
            return tuple(results), RateLimitResult(
                "limited", result.target_rate, last_full, result.answered_fraction, highest
            )
        last_full = result.target_rate
    total = sum(result.sent for result in measured)
    return tuple(results), RateLimitResult("unlimited", None, last_full, None, highest, total)


def analyse(
    observations: AuditObservations, *, threshold: float = DEFAULT_LIMIT_THRESHOLD
) -> AuditReport:
    """Turn the prober's counts into an :class:`AuditReport`."""
    headers = observations.header_bytes
    sizes = tuple(size_result(obs, header_bytes=headers) for obs in observations.sizes)
    empty = (
        size_result(observations.empty, header_bytes=headers)
        if observations.empty is not None else None
    )
    oversize = tuple(size_result(obs, header_bytes=headers) for obs in observations.oversize)
    every = [*sizes, *([empty] if empty is not None else []), *oversize]

    worst: SizeResult | None = None
    for result in every:
        if result.byte_factor is None:
            continue
        if worst is None or worst.byte_factor is None or result.byte_factor > worst.byte_factor:
            worst = result
    packet_factors = [r.packet_factor for r in every if r.packet_factor is not None]
    max_packet = max(packet_factors, default=None)

    per_request = 1.0
    if observations.ramp_request_size is not None:
        for result in sizes:
            if result.size == observations.ramp_request_size and result.packet_factor:
                # Only a service that sends several datagrams per request raises the
                # bar; loss in the sweep must not lower it.
                per_request = max(1.0, result.packet_factor)
                break
    ramp, limit = ramp_results(
        observations.ramp, replies_per_request=per_request, threshold=threshold
    )
    verdicts = (
        _rfc8085_verdict(every, worst, max_packet),
        _rfc9000_verdict(every),
        _rate_limit_verdict(limit, threshold),
    )
    return AuditReport(
        target=observations.target,
        header_bytes=headers,
        sizes=sizes,
        empty=empty,
        oversize=oversize,
        ramp_request_size=observations.ramp_request_size,
        ramp=ramp,
        rate_limit=limit,
        max_byte_factor=worst.byte_factor if worst is not None else None,
        worst_size=worst.size if worst is not None else None,
        max_packet_factor=max_packet,
        verdicts=verdicts,
        notes=observations.notes,
    )


def format_factor(factor: float | None) -> str:
    """``9.00x``, ``inf`` or ``-``."""
    if factor is None:
        return "-"
    if math.isinf(factor):
        return "inf"
    return f"{factor:.2f}x"


def _bytes_label(size: int) -> str:
    return "empty" if size == 0 else f"{size}-byte"


def _sizes(results: list[SizeResult]) -> str:
    """``1, 2, 4`` or, for many, ``1 to 1024 (11 sizes)``."""
    if len(results) <= 4:
        return ", ".join(str(result.size) for result in results)
    return f"{results[0].size} to {results[-1].size} ({len(results)} sizes)"


def _rfc8085_verdict(
    every: list[SizeResult], worst: SizeResult | None, max_packet: float | None
) -> Verdict:
    rule = "RFC 8085 s3.1 (reply no larger than an unauthenticated request)"
    if not any(result.sent for result in every):
        return Verdict(rule, "unknown", "no request could be sent")
    amplifying = [result for result in every if result.amplifies]
    if not amplifying:
        if not any(result.replies for result in every):
            return Verdict(rule, "ok", "no request was answered: nothing to reflect")
        return Verdict(rule, "ok", "no reply was larger than its request, in bytes or datagrams")
    parts = []
    if worst is not None and worst.byte_factor is not None and worst.byte_factor > 1:
        parts.append(f"up to {format_factor(worst.byte_factor)} the bytes "
                     f"({_bytes_label(worst.size)} requests)")
    if max_packet is not None and max_packet > 1:
        parts.append(f"up to {max_packet:.2f} datagrams per request")
    return Verdict(rule, "amplifies", "; ".join(parts) + f"; request sizes {_sizes(amplifying)}")


def _rfc9000_verdict(every: list[SizeResult]) -> Verdict:
    rule = "RFC 9000 s8.1 (at most 3x the bytes received before validation)"
    sent = [result for result in every if result.sent]
    if not sent:
        return Verdict(rule, "unknown", "no request could be sent")
    over = [result for result in sent if result.within_rfc9000 is False]
    if not over:
        return Verdict(rule, "ok", "every reply was at most 3x its request")
    worst = max(over, key=lambda r: r.byte_factor if r.byte_factor is not None else 0.0)
    return Verdict(rule, "exceeds",
                   f"above 3x for request sizes {_sizes(over)} (worst "
                   f"{format_factor(worst.byte_factor)} with {_bytes_label(worst.size)} requests)")


def _rate_limit_verdict(limit: RateLimitResult, threshold: float) -> Verdict:
    rule = "Rate limit (one source)"
    if limit.status == "unknown":
        return Verdict(rule, "unknown", "the rate ramp did not run")
    if limit.status == "unlimited":
        return Verdict(rule, "unlimited",
                       f"every step answered (>= {threshold:.0%}) up to "
                       f"{limit.highest_rate or 0:.0f} req/s sent ({limit.ramp_requests:,} "
                       "requests in all: a limit with a larger burst would not show)")
    fraction = limit.answered_fraction or 0.0
    if limit.last_full_rate is None:
        return Verdict(rule, "limited",
                       f"at or below {limit.limit_rate:.0f} req/s: only {fraction:.1%} answered "
                       "at the first step")
    return Verdict(rule, "limited",
                   f"kicks in between {limit.last_full_rate:.0f} and {limit.limit_rate:.0f} req/s "
                   f"({fraction:.1%} answered at {limit.limit_rate:.0f} req/s)")
