"""The seeded decision policy of a bad network: what happens to each packet.

Rule: pure and deterministic.  No ``socket``, ``asyncio`` or ``time``: the
settings of one direction, a seeded :class:`random.Random`, the packet and the
current time go in; a :class:`Decision` (drop, or deliver these bytes at these
times) comes out.  The same seed and the same sequence of packets give the
same decisions, whatever the clock says.  The proxy (:mod:`udpkit.proxy`) and
the in-memory fake network (:mod:`udpkit.testing.fake_net`) both run this one
policy, so a test on the fake network and a run through the proxy mean the
same thing by "10 % loss".

Every datagram draws the same fixed number of random values, in a fixed order,
whatever the settings; so packet *k*'s loss decision does not move when, say,
jitter is switched on, and settings changed mid-run do not shift the stream.
Variable-length work (which bit to flip, where to cut) uses a private
generator seeded from one of those draws.

Per datagram, in this order (netem's order, see tc-netem(8)):

1. loss: Gilbert-Elliott burst loss (a two-state Markov chain, the state
   decides the loss probability, then the state moves), then independent loss;
2. bandwidth: a token bucket on bytes (``rate`` bytes/s, ``rate_burst`` bytes
   deep) with a queue of ``queue_limit`` bytes; a packet that would overflow
   the queue is dropped (tail drop), the others wait their turn;
3. corruption (one bit flipped) and truncation (cut to a random shorter length);
4. delay: ``delay`` plus a uniform jitter in ``[-jitter, +jitter]``; a
   reordered packet is held back ``reorder_gap`` longer, so the packets sent
   just after it overtake it;
5. duplication: a second copy with its own jitter.

A TCP byte stream cannot lose, duplicate or reorder bytes; for streams the
policy applies latency (order kept), bandwidth, and ``reset_after`` bytes.
``slow_close`` is a setting the glue reads when a side closes.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Literal, TypeAlias

from udpkit.core.errors import UsageError

Direction: TypeAlias = Literal["up", "down"]
"""``up``: client to server (upstream); ``down``: server to client."""

DIRECTIONS: tuple[Direction, ...] = ("up", "down")

DropReason: TypeAlias = Literal["loss", "burst", "queue"]


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True, slots=True, kw_only=True)
class GilbertElliott:
    """Burst loss: a Markov chain with a *good* and a *bad* state.

    Each packet is lost with the probability of the current state; then the
    chain moves: good to bad with probability ``p``, bad to good with ``r``.
    Bursts last ``1 / r`` packets on average; the long-run loss rate is
    :attr:`mean_loss`.
    """

    p: float
    """Probability of moving from the good state to the bad one, per packet."""
    r: float
    """Probability of moving from the bad state back to the good one, per packet."""
    loss_bad: float = 1.0
    """Loss probability in the bad state (``1 - h`` in the literature)."""
    loss_good: float = 0.0
    """Loss probability in the good state (``1 - k``)."""

    def __post_init__(self) -> None:
        for name in ("p", "r", "loss_bad", "loss_good"):
            _check_probability(f"burst_loss.{name}", getattr(self, name))
        if self.p + self.r == 0:
            raise UsageError("burst_loss: p and r cannot both be 0")

    @property
    def bad_fraction(self) -> float:
        """Long-run fraction of packets seen in the bad state: ``p / (p + r)``."""
        return self.p / (self.p + self.r)

    @property
    def mean_loss(self) -> float:
        """Long-run loss rate."""
        bad = self.bad_fraction
        return bad * self.loss_bad + (1 - bad) * self.loss_good


MAX_DELAY = 600.0
"""Longest delay, jitter, reorder gap or slow close (s): a test that needs more is asking
for a black hole, and every delayed datagram is memory held until then."""
MIN_RATE = 1.0
"""Slowest bandwidth (bytes/s) other than 0 (unlimited); below it waits overflow."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Impairments:
    """What one direction of the link does to traffic.  All off by default.

    Probabilities are in ``[0, 1]``; times in seconds; sizes in bytes; rates
    in bytes per second.
    """

    loss: float = 0.0
    """Probability that a datagram is lost, independently of the others."""
    burst_loss: GilbertElliott | None = None
    """Gilbert-Elliott burst loss, applied before ``loss``; ``None``: off."""
    delay: float = 0.0
    """Added one-way delay (datagrams and TCP data)."""
    jitter: float = 0.0
    """Delay varies uniformly in ``[delay - jitter, delay + jitter]`` (never below 0).
    Datagrams may then overtake each other, as on a real network; TCP data never does."""
    duplicate: float = 0.0
    """Probability that a datagram is delivered twice."""
    reorder: float = 0.0
    """Probability that a datagram is held back ``reorder_gap`` seconds so later ones
    overtake it."""
    reorder_gap: float = 0.02
    """How long a reordered datagram is held back."""
    corrupt: float = 0.0
    """Probability that one random bit of a datagram is flipped."""
    truncate: float = 0.0
    """Probability that a datagram is cut to a random shorter length (possibly empty)."""
    rate: float = 0.0
    """Bandwidth in bytes per second (datagrams and TCP data); 0: unlimited."""
    rate_burst: int = 0
    """Bytes that may pass at once after an idle spell (token bucket depth)."""
    queue_limit: int = 65536
    """Bytes of datagrams that may wait for bandwidth; beyond it they are dropped."""
    reset_after: int | None = None
    """TCP: reset the connection after this many bytes went this way; ``None``: never."""
    slow_close: float = 0.0
    """TCP: wait this long before passing a close on."""

    def __post_init__(self) -> None:
        for name in ("loss", "duplicate", "reorder", "corrupt", "truncate"):
            _check_probability(name, getattr(self, name))
        for name in ("delay", "jitter", "reorder_gap", "slow_close", "rate"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                raise UsageError(f"{name} must be a finite number >= 0 (got {value!r})")
        for name in ("delay", "jitter", "reorder_gap", "slow_close"):
            if getattr(self, name) > MAX_DELAY:
                raise UsageError(f"{name} must be at most {MAX_DELAY:g} s "
                                 f"(got {getattr(self, name)!r})")
        if 0 < self.rate < MIN_RATE:
            raise UsageError(f"rate must be 0 (unlimited) or at least {MIN_RATE:g} byte/s "
                             f"(got {self.rate!r})")
        for name in ("rate_burst", "queue_limit"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise UsageError(f"{name} must be a whole number of bytes >= 0 (got {value!r})")
        if self.reset_after is not None and (
            not isinstance(self.reset_after, int) or self.reset_after < 0
        ):
            raise UsageError(f"reset_after must be bytes >= 0 or None (got {self.reset_after!r})")

    @property
    def active(self) -> bool:
        """Whether anything at all is impaired."""
        return self != NO_IMPAIRMENTS

    def as_json(self) -> dict[str, object]:
        """A JSON-ready dict: numbers in seconds, bytes and bytes/s."""
        out: dict[str, object] = {}
        for spec in fields(self):
            value = getattr(self, spec.name)
            if isinstance(value, GilbertElliott):
                value = {"p": value.p, "r": value.r, "loss_bad": value.loss_bad,
                         "loss_good": value.loss_good}
            out[spec.name] = value
        return out


def _check_probability(name: str, value: object) -> None:
    if not (isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value <= 1):
        raise UsageError(f"{name} must be a probability in [0, 1] (got {value!r})")


NO_IMPAIRMENTS = Impairments()


# --------------------------------------------------------------------------- decisions


@dataclass(frozen=True, slots=True)
class Delivery:
    """One copy of a packet to hand over at time ``at``."""

    at: float
    data: bytes
    duplicate: bool = False
    """This is the extra copy of a duplicated datagram."""


@dataclass(frozen=True, slots=True)
class Decision:
    """What happens to one datagram: dropped (no deliveries) or delivered."""

    deliveries: tuple[Delivery, ...]
    dropped: DropReason | None = None
    corrupted: bool = False
    truncated: bool = False
    reordered: bool = False

    @property
    def duplicated(self) -> bool:
        return len(self.deliveries) > 1


@dataclass(frozen=True, slots=True)
class StreamDecision:
    """What happens to one chunk of a TCP stream."""

    at: float
    """When to write ``data`` (never before the previous chunk's time)."""
    data: bytes
    """The bytes to write; shorter than the chunk when the reset limit cuts it."""
    reset: bool = False
    """After writing ``data``, reset the connection (both sides)."""


@dataclass(frozen=True, slots=True)
class LinkStats:
    """What one direction did, a frozen record tests compare exactly.

    Datagrams: ``received == forwarded + dropped``; copies handed over are
    ``forwarded + duplicated``.
    """

    received: int = 0
    """Datagrams offered to this direction."""
    forwarded: int = 0
    """Datagrams delivered (at least once)."""
    dropped_loss: int = 0
    """Lost by independent loss."""
    dropped_burst: int = 0
    """Lost by Gilbert-Elliott burst loss."""
    dropped_queue: int = 0
    """Dropped because the bandwidth queue was full."""
    duplicated: int = 0
    """Extra copies delivered."""
    reordered: int = 0
    """Datagrams held back so later ones overtake them."""
    corrupted: int = 0
    """Datagrams with a bit flipped."""
    truncated: int = 0
    """Datagrams cut short."""
    delayed: int = 0
    """Datagrams delivered later than they arrived (delay, jitter, bandwidth, reorder)."""
    bytes_received: int = 0
    """Bytes of datagrams offered."""
    bytes_forwarded: int = 0
    """Bytes of datagram copies handed over (after truncation, duplicates included)."""
    stream_chunks: int = 0
    """TCP reads passed through this direction."""
    stream_bytes: int = 0
    """TCP bytes passed through this direction."""
    resets: int = 0
    """TCP connections reset by ``reset_after``."""

    @property
    def dropped(self) -> int:
        return self.dropped_loss + self.dropped_burst + self.dropped_queue

    def as_json(self) -> dict[str, int]:
        out = {spec.name: getattr(self, spec.name) for spec in fields(self)}
        out["dropped"] = self.dropped
        return out


class StreamState:
    """Per-connection, per-direction state of a TCP stream through a policy."""

    __slots__ = ("last_at", "sent", "was_reset")

    def __init__(self) -> None:
        self.last_at = -math.inf
        self.sent = 0
        self.was_reset = False


class LinkPolicy:
    """One direction of an impaired link: settings, random stream, state, counters.

    ``decide(data, now)`` for a datagram; ``decide_stream(chunk, now, state)``
    for TCP data.  Settings may be replaced at any time (:attr:`settings`);
    the burst-loss state, the token bucket and the random stream carry on.
    """

    def __init__(self, settings: Impairments = NO_IMPAIRMENTS, *, rng: random.Random) -> None:
        self._settings = settings
        self._rng = rng
        self._bad_state = False
        self._tokens = float(settings.rate_burst)
        self._bucket_time: float | None = None
        self._counts = dict.fromkeys(LinkStats.__slots__, 0)

    @property
    def settings(self) -> Impairments:
        return self._settings

    @settings.setter
    def settings(self, settings: Impairments) -> None:
        self._settings = settings

    @property
    def in_bad_state(self) -> bool:
        """Whether the Gilbert-Elliott chain is in its bad (bursty) state."""
        return self._bad_state

    def stats(self) -> LinkStats:
        return LinkStats(**self._counts)

    # -- datagrams -------------------------------------------------------------

    def decide(self, data: bytes, now: float) -> Decision:
        """The fate of one datagram arriving at ``now``."""
        s = self._settings
        rng = self._rng
        # Fixed draws, fixed order: see the module docstring.
        u_burst_loss = rng.random()
        u_burst_move = rng.random()
        u_loss = rng.random()
        u_corrupt = rng.random()
        u_truncate = rng.random()
        u_reorder = rng.random()
        u_duplicate = rng.random()
        u_jitter = rng.random()
        u_jitter_copy = rng.random()
        private_seed = rng.getrandbits(64)

        counts = self._counts
        counts["received"] += 1
        counts["bytes_received"] += len(data)

        burst = s.burst_loss
        if burst is not None:
            lost = u_burst_loss < (burst.loss_bad if self._bad_state else burst.loss_good)
            if self._bad_state:
                self._bad_state = u_burst_move >= burst.r
            else:
                self._bad_state = u_burst_move < burst.p
            if lost:
                counts["dropped_burst"] += 1
                return Decision((), dropped="burst")
        if u_loss < s.loss:
            counts["dropped_loss"] += 1
            return Decision((), dropped="loss")

        wait = self._bandwidth_wait(len(data), now, may_drop=True)
        if wait is None:
            counts["dropped_queue"] += 1
            return Decision((), dropped="queue")

        private: random.Random | None = None
        corrupted = truncated = False
        if u_corrupt < s.corrupt and data:
            private = random.Random(private_seed)
            data = flip_bit(data, private.randrange(len(data) * 8))
            corrupted = True
        if u_truncate < s.truncate and data:
            private = private or random.Random(private_seed)
            data = data[: private.randrange(len(data))]
            truncated = True

        reordered = u_reorder < s.reorder
        at = now + wait + _jittered(s.delay, s.jitter, u_jitter)
        if reordered:
            at += s.reorder_gap
        deliveries = [Delivery(at, data)]
        if u_duplicate < s.duplicate:
            copy_at = now + wait + _jittered(s.delay, s.jitter, u_jitter_copy)
            deliveries.append(Delivery(copy_at, data, duplicate=True))

        counts["forwarded"] += 1
        counts["duplicated"] += len(deliveries) - 1
        counts["bytes_forwarded"] += len(data) * len(deliveries)
        counts["corrupted"] += corrupted
        counts["truncated"] += truncated
        counts["reordered"] += reordered
        counts["delayed"] += at > now
        return Decision(
            tuple(deliveries), corrupted=corrupted, truncated=truncated, reordered=reordered
        )

    # -- TCP streams -----------------------------------------------------------

    def decide_stream(self, chunk: bytes, now: float, state: StreamState) -> StreamDecision:
        """When to write one chunk of a TCP stream, and whether to reset after it."""
        s = self._settings
        u_jitter = self._rng.random()
        counts = self._counts
        reset = False
        limit = s.reset_after
        if limit is not None and state.sent + len(chunk) >= limit:
            chunk = chunk[: max(0, limit - state.sent)]
            reset = True
        wait = self._bandwidth_wait(len(chunk), now, may_drop=False) or 0.0
        at = max(state.last_at, now + wait + _jittered(s.delay, s.jitter, u_jitter))
        state.last_at = at
        state.sent += len(chunk)
        counts["stream_chunks"] += 1
        counts["stream_bytes"] += len(chunk)
        if reset and not state.was_reset:
            state.was_reset = True
            counts["resets"] += 1
        return StreamDecision(at, chunk, reset=reset)

    # -- bandwidth -------------------------------------------------------------

    def _bandwidth_wait(self, size: int, now: float, *, may_drop: bool) -> float | None:
        """Seconds ``size`` bytes wait for the token bucket; ``None``: queue full."""
        s = self._settings
        if s.rate <= 0:
            return 0.0
        burst = float(s.rate_burst)
        if self._bucket_time is None:
            tokens = burst
            self._bucket_time = now
        else:
            elapsed = max(0.0, now - self._bucket_time)
            tokens = min(burst, self._tokens + elapsed * s.rate)
            self._bucket_time = max(now, self._bucket_time)
        # Negative tokens are bytes queued ahead, waiting for the link.
        if may_drop and tokens < 0 and -tokens + size > s.queue_limit:
            self._tokens = tokens
            return None
        tokens -= size
        self._tokens = tokens
        return 0.0 if tokens >= 0 else -tokens / s.rate


def _jittered(delay: float, jitter: float, u: float) -> float:
    if not jitter:
        return delay
    return max(0.0, delay + (2 * u - 1) * jitter)


def flip_bit(data: bytes, bit: int) -> bytes:
    """``data`` with bit number ``bit`` (0 = the first byte's lowest bit) inverted."""
    index, offset = divmod(bit, 8)
    out = bytearray(data)
    out[index] ^= 1 << offset
    return bytes(out)


def seeded_rng(seed: int | str, *labels: str) -> random.Random:
    """A generator for one named stream of decisions under ``seed``.

    ``seeded_rng(7, "up")`` and ``seeded_rng(7, "down")`` are independent;
    both are the same on every run and every platform.
    """
    return random.Random(":".join([str(seed), *labels]))


# --------------------------------------------------------------------------- parsing

_NUMBER = r"[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?"
_DURATION_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0}
_RATE_UNITS = {
    "bit": 1 / 8, "kbit": 1e3 / 8, "mbit": 1e6 / 8, "gbit": 1e9 / 8,
    "b": 1.0, "kb": 1e3, "mb": 1e6, "gb": 1e9,
}
_SIZE_UNITS = {"": 1, "b": 1, "kb": 1000, "kib": 1024, "mb": 1000**2, "mib": 1024**2}


def parse_probability(text: str) -> float:
    """``0.1`` or ``10%``."""
    value = text.strip()
    scale = 1.0
    if value.endswith("%"):
        value, scale = value[:-1], 0.01
    if not re.fullmatch(_NUMBER, value):
        raise UsageError(f"{text!r} is not a probability (write 0.1 or 10%)")
    probability = float(value) * scale
    if not 0 <= probability <= 1:
        raise UsageError(f"{text!r} is not a probability in [0, 1]")
    return probability


def parse_duration(text: str) -> float:
    """``50ms``, ``0.05s``, ``500us``: seconds.  A unit is required."""
    match = re.fullmatch(rf"({_NUMBER})\s*([a-z]*)", text.strip().lower())
    if not match or match.group(2) not in _DURATION_UNITS:
        raise UsageError(f"{text!r} is not a duration (write e.g. 50ms, 0.5s or 200us)")
    return float(match.group(1)) * _DURATION_UNITS[match.group(2)]


def parse_rate(text: str) -> float:
    """``1mbit``, ``500kbit``, ``100kB`` (an optional ``/s``): bytes per second.

    Bits are ``bit``/``kbit``/``mbit``/``gbit``; bytes ``B``/``kB``/``MB``/``GB``.
    """
    cleaned = text.strip().lower().removesuffix("/s")
    match = re.fullmatch(rf"({_NUMBER})\s*([a-z]*)", cleaned)
    if not match or match.group(2) not in _RATE_UNITS:
        raise UsageError(f"{text!r} is not a rate (write e.g. 1mbit, 500kbit or 100kB)")
    return float(match.group(1)) * _RATE_UNITS[match.group(2)]


def parse_size(text: str) -> int:
    """``1500``, ``64kB``, ``1MiB``: bytes."""
    match = re.fullmatch(r"([0-9]+)\s*([a-z]*)", text.strip().lower())
    if not match or match.group(2) not in _SIZE_UNITS:
        raise UsageError(f"{text!r} is not a size in bytes (write e.g. 1500, 64kB or 1MiB)")
    return int(match.group(1)) * _SIZE_UNITS[match.group(2)]


def parse_burst_loss(text: str) -> GilbertElliott | None:
    """``p/r[/loss_bad[/loss_good]]``, e.g. ``0.01/0.3``; ``off`` for none."""
    if text.strip().lower() in ("off", "none"):
        return None
    parts = text.split("/")
    if not 2 <= len(parts) <= 4:
        raise UsageError(
            f"{text!r} is not a burst loss (write p/r[/loss_bad[/loss_good]], e.g. 0.01/0.3)"
        )
    values = [parse_probability(part) for part in parts]
    names = ("p", "r", "loss_bad", "loss_good")
    return GilbertElliott(**dict(zip(names, values, strict=False)))


def _parse_optional_size(text: str) -> int | None:
    if text.strip().lower() in ("off", "none", "never"):
        return None
    return parse_size(text)


_Parser = Callable[[str], object]

FIELD_PARSERS: dict[str, tuple[_Parser, str]] = {
    "loss": (parse_probability, "probability"),
    "burst_loss": (parse_burst_loss, "p/r[/loss_bad[/loss_good]]"),
    "delay": (parse_duration, "duration"),
    "jitter": (parse_duration, "duration"),
    "duplicate": (parse_probability, "probability"),
    "reorder": (parse_probability, "probability"),
    "reorder_gap": (parse_duration, "duration"),
    "corrupt": (parse_probability, "probability"),
    "truncate": (parse_probability, "probability"),
    "rate": (parse_rate, "rate"),
    "rate_burst": (parse_size, "size"),
    "queue_limit": (parse_size, "size"),
    "reset_after": (_parse_optional_size, "size"),
    "slow_close": (parse_duration, "duration"),
}
"""Every impairment by name, with the parser of its text form."""

_INT_FIELDS = frozenset({"rate_burst", "queue_limit", "reset_after"})


def field_name(key: str) -> str:
    """``reorder-gap`` or ``reorder_gap`` to ``reorder_gap``; unknown names are an error."""
    name = key.strip().replace("-", "_")
    if name not in FIELD_PARSERS:
        known = ", ".join(name.replace("_", "-") for name in FIELD_PARSERS)
        raise UsageError(f"unknown impairment {key!r} (known: {known})")
    return name


def parse_field(key: str, text: str) -> tuple[str, object]:
    """One ``key=value`` pair in text form, parsed: ``("delay", 0.05)``."""
    name = field_name(key)
    parser, _kind = FIELD_PARSERS[name]
    try:
        return name, parser(text)
    except UsageError as exc:
        raise UsageError(f"{key.strip()}: {exc}") from None


def parse_spec(text: str, *, base: Impairments = NO_IMPAIRMENTS) -> Impairments:
    """``loss=0.1,delay=50ms,jitter=10ms`` applied over ``base``.

    Raises :class:`UsageError` naming the offending item.
    """
    changes: dict[str, object] = {}
    for item in text.split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        if not sep:
            raise UsageError(f"{item.strip()!r} is not key=value (e.g. loss=0.1,delay=50ms)")
        name, parsed = parse_field(key, value)
        changes[name] = parsed
    return build(base, changes)


def build(base: Impairments, changes: Mapping[str, object]) -> Impairments:
    """``base`` with ``changes`` applied, validated (:class:`UsageError` if not)."""
    try:
        return replace(base, **changes)  # type: ignore[arg-type]
    except TypeError as exc:  # pragma: no cover - names are checked before
        raise UsageError(str(exc)) from None


def from_json(obj: object, *, base: Impairments = NO_IMPAIRMENTS) -> Impairments:
    """Settings from a JSON object, strictly: unknown keys and wrong types are errors.

    Values are numbers in base units (seconds, bytes, bytes/s, probabilities),
    or strings in the command line's form (``"50ms"``, ``"10%"``, ``"1mbit"``);
    ``burst_loss`` is ``null``, an object ``{"p", "r", "loss_bad", "loss_good"}``
    or a string ``"p/r"``; ``reset_after`` may be ``null``.
    """
    if not isinstance(obj, dict):
        raise UsageError(f"impairments must be a JSON object, not {_json_type(obj)}")
    changes: dict[str, object] = {}
    for key, value in obj.items():
        name = field_name(str(key))
        changes[name] = _json_value(name, value)
    return build(base, changes)


def _json_value(name: str, value: object) -> object:
    if isinstance(value, str):
        return parse_field(name, value)[1]
    if value is None:
        if name in ("burst_loss", "reset_after"):
            return None
        raise UsageError(f"{name} cannot be null")
    if name == "burst_loss":
        if not isinstance(value, dict):
            raise UsageError(f"burst_loss must be an object, a string or null, not "
                             f"{_json_type(value)}")
        unknown = set(value) - {"p", "r", "loss_bad", "loss_good"}
        if unknown or not {"p", "r"} <= set(value):
            raise UsageError("burst_loss needs p and r, and may have loss_bad and loss_good "
                             f"(got keys {sorted(value)})")
        for key, number in value.items():
            if isinstance(number, bool) or not isinstance(number, int | float):
                raise UsageError(f"burst_loss.{key} must be a number, not {_json_type(number)}")
        return GilbertElliott(**value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise UsageError(f"{name} must be a number or a string, not {_json_type(value)}")
    if name in _INT_FIELDS:
        if isinstance(value, float) and not value.is_integer():
            raise UsageError(f"{name} must be a whole number of bytes (got {value})")
        return int(value)
    return float(value)


def _json_type(value: object) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean",
             int: "a number", float: "a number", type(None): "null"}
    return names.get(type(value), type(value).__name__)


@dataclass(frozen=True, slots=True)
class LinkSettings:
    """The settings of both directions of a link."""

    up: Impairments = field(default_factory=Impairments)
    """Client to server."""
    down: Impairments = field(default_factory=Impairments)
    """Server to client."""

    def get(self, direction: Direction) -> Impairments:
        return self.up if direction == "up" else self.down

    def as_json(self) -> dict[str, object]:
        return {"up": self.up.as_json(), "down": self.down.as_json()}


def update_from_json(current: LinkSettings, obj: object, *, merge: bool) -> LinkSettings:
    """Apply a control request ``{"up": {...}, "down": {...}, "both": {...}}``.

    ``merge=False`` (HTTP PUT): each named direction is replaced by exactly the
    given fields (the rest off).  ``merge=True`` (PATCH): the given fields change,
    the rest stay.  ``both`` applies to both directions before ``up``/``down``.
    """
    if not isinstance(obj, dict):
        raise UsageError(f"body must be a JSON object, not {_json_type(obj)}")
    unknown = set(obj) - {"up", "down", "both"}
    if unknown:
        raise UsageError(f"unknown direction(s) {sorted(unknown)} (use up, down or both)")
    if not obj:
        raise UsageError("nothing to change: give up, down or both")
    up, down = current.up, current.down
    if "both" in obj:
        up = from_json(obj["both"], base=up if merge else NO_IMPAIRMENTS)
        down = from_json(obj["both"], base=down if merge else NO_IMPAIRMENTS)
    if "up" in obj:
        up = from_json(obj["up"], base=up if merge or "both" in obj else NO_IMPAIRMENTS)
    if "down" in obj:
        down = from_json(obj["down"], base=down if merge or "both" in obj else NO_IMPAIRMENTS)
    return LinkSettings(up=up, down=down)
