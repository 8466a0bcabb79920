"""Toxiproxy's toxics, sans-IO: their attributes, their JSON, and what each does to data.

Rule: pure and deterministic.  A toxic is a frozen :class:`Toxic` (Toxiproxy's
``{"name", "type", "stream", "toxicity", "attributes"}``), validated here once
(:func:`toxic_from_json`, :func:`updated_toxic`) with Toxiproxy's attribute names
and units (milliseconds, KB/s, bytes).  What a toxic does is decided by a seeded
:class:`random.Random` and the time passed in:

* a TCP connection's direction runs a :class:`StreamToxics` chain (built per
  connection: ``toxicity`` is the probability that the connection gets the toxic,
  rolled once per connection and again when the toxic changes, as Toxiproxy's
  stubs do); chunks in, :data:`StreamEvent` values (write these bytes at this
  time, half-close, close, reset) out;
* a UDP proxy's direction runs a :class:`DatagramToxics` chain: ``toxicity`` is
  rolled per datagram; a datagram in, an :class:`~udpkit.core.impairment.Decision`
  (dropped, or copies to deliver at given times) out, the same type the
  ``--loss`` engine of :mod:`udpkit.core.impairment` returns, so the UDP glue
  runs either.

Toxics apply in the order they were added, each to what the previous one let
through (Toxiproxy's chain).  Every toxic counts what it did in a
:class:`ToxicCounters`.  Differences from Toxiproxy (stricter checks: negative
numbers, a toxicity outside ``[0, 1]`` and unknown attributes are 400s) are
listed in the README.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal, TypeAlias

from udpkit.core.errors import UdpkitError
from udpkit.core.impairment import Decision, Delivery, LinkPolicy, StreamState, flip_bit

Stream: TypeAlias = Literal["upstream", "downstream"]
"""Toxiproxy's names: ``upstream`` is client to server, ``downstream`` server to client."""
STREAMS: tuple[Stream, ...] = ("upstream", "downstream")


class ToxicError(UdpkitError):
    """A request about toxics or proxies that cannot be done (the client's mistake, or a
    port that cannot be had): HTTP ``status`` and a message worded as Toxiproxy words it
    (its ``{"error": ..., "status": ...}`` body)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


BAD_BODY = "bad request body"
INVALID_STREAM = "stream was invalid, can be either upstream or downstream"
INVALID_TYPE = "invalid toxic type"
TOXIC_EXISTS = "toxic already exists"
TOXIC_NOT_FOUND = "toxic not found"


@dataclass(frozen=True, slots=True)
class ToxicType:
    """One kind of toxic: its attributes with their defaults, the protocols it applies to."""

    name: str
    attributes: Mapping[str, float]
    """Attribute names (Toxiproxy's) and their default values."""
    protocols: frozenset[str]
    integer: frozenset[str] = frozenset()
    """Attributes that must be whole numbers (Toxiproxy's int64 fields)."""
    probability: frozenset[str] = frozenset()
    """Attributes that are probabilities in [0, 1]."""
    doc: str = ""


_BOTH = frozenset({"tcp", "udp"})
_TCP = frozenset({"tcp"})
_UDP = frozenset({"udp"})

TOXIC_TYPES: dict[str, ToxicType] = {
    t.name: t
    for t in (
        ToxicType("latency", {"latency": 0, "jitter": 0}, _BOTH,
                  integer=frozenset({"latency", "jitter"}),
                  doc="add latency ms, +- jitter ms (uniform)"),
        ToxicType("bandwidth", {"rate": 0}, _BOTH, integer=frozenset({"rate"}),
                  doc="limit to rate KB/s (1 KB = 1000 bytes); 0: unlimited"),
        ToxicType("slow_close", {"delay": 0}, _TCP, integer=frozenset({"delay"}),
                  doc="pass a close on delay ms late"),
        ToxicType("timeout", {"timeout": 0}, _BOTH, integer=frozenset({"timeout"}),
                  doc="drop all data; TCP: close after timeout ms (0: never)"),
        ToxicType("reset_peer", {"timeout": 0}, _TCP, integer=frozenset({"timeout"}),
                  doc="on data, reset the connection (RST) after timeout ms"),
        ToxicType("slicer", {"average_size": 0, "size_variation": 0, "delay": 0}, _TCP,
                  integer=frozenset({"average_size", "size_variation", "delay"}),
                  doc="slice data into average_size +- size_variation byte writes, "
                      "delay us apart"),
        ToxicType("limit_data", {"bytes": 0}, _TCP, integer=frozenset({"bytes"}),
                  doc="close the connection once bytes have passed"),
        ToxicType("loss", {}, _UDP, doc="drop the datagram (toxicity: the probability)"),
        ToxicType("duplicate", {}, _UDP, doc="deliver the datagram twice"),
        ToxicType("reorder", {"gap": 20}, _UDP, integer=frozenset({"gap"}),
                  doc="hold the datagram back gap ms so later ones overtake it"),
        ToxicType("corrupt", {}, _UDP, doc="flip one random bit of the datagram"),
        ToxicType("truncate", {}, _UDP, doc="cut the datagram to a random shorter length"),
        ToxicType("burst_loss", {"p": 0.0, "r": 1.0, "loss_bad": 1.0, "loss_good": 0.0}, _UDP,
                  probability=frozenset({"p", "r", "loss_bad", "loss_good"}),
                  doc="Gilbert-Elliott bursts: good->bad with p, bad->good with r per datagram"),
    )
}
"""Every toxic type udpkit knows, by Toxiproxy's name."""

MAX_MILLISECONDS = 600_000
"""Longest latency, jitter, timeout or delay (ms): the impairment engine's ``MAX_DELAY``."""
MAX_ATTRIBUTE = 2**53
"""Largest number an attribute may hold (exact in a double)."""


@dataclass(frozen=True, slots=True)
class Toxic:
    """One toxic of one proxy, as Toxiproxy's API shows it."""

    name: str
    type: str
    stream: Stream = "downstream"
    toxicity: float = 1.0
    attributes: Mapping[str, float] = field(default_factory=dict)

    def attribute(self, key: str) -> float:
        return self.attributes.get(key, TOXIC_TYPES[self.type].attributes[key])

    def as_json(self) -> dict[str, object]:
        """Toxiproxy's shape (``attributes`` first, every attribute of the type present)."""
        kind = TOXIC_TYPES[self.type]
        return {
            "attributes": {key: self.attributes.get(key, default)
                           for key, default in kind.attributes.items()},
            "name": self.name,
            "type": self.type,
            "stream": self.stream,
            "toxicity": self.toxicity,
        }


def _json_type(value: object) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "bool", int: "number",
             float: "number", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _attributes(kind: ToxicType, obj: object, base: Mapping[str, float]) -> dict[str, float]:
    if obj is None:
        return dict(base)
    if not isinstance(obj, dict):
        raise ToxicError(f"{BAD_BODY}: attributes must be an object, not {_json_type(obj)}")
    out = dict(base)
    for key, value in obj.items():
        if key not in kind.attributes:
            known = ", ".join(kind.attributes) or "none"
            raise ToxicError(f"{BAD_BODY}: {kind.name} has no attribute {str(key)[:40]!r} "
                             f"(known: {known})")
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(
                value):
            raise ToxicError(f"{BAD_BODY}: attribute {key} must be a number, not "
                             f"{_json_type(value)}")
        if key in kind.integer:
            if isinstance(value, float) and not value.is_integer():
                raise ToxicError(f"{BAD_BODY}: attribute {key} must be a whole number "
                                 f"(got {value})")
            value = int(value)
        if value < 0 or value > MAX_ATTRIBUTE:
            raise ToxicError(f"{BAD_BODY}: attribute {key} must be in 0..{MAX_ATTRIBUTE} "
                             f"(got {value:.6g})")
        if key in kind.probability and value > 1:
            raise ToxicError(f"{BAD_BODY}: attribute {key} must be a probability in [0, 1] "
                             f"(got {value})")
        out[key] = value
    _check_semantics(kind, out)
    return out


def _check_semantics(kind: ToxicType, attributes: Mapping[str, float]) -> None:
    for key in ("latency", "jitter", "timeout", "gap"):
        if attributes.get(key, 0) > MAX_MILLISECONDS:
            raise ToxicError(f"{BAD_BODY}: attribute {key} must be at most "
                             f"{MAX_MILLISECONDS} ms (got {attributes[key]})")
    if kind.name in ("slow_close", "slicer") and attributes.get("delay", 0) > (
            MAX_MILLISECONDS * (1 if kind.name == "slow_close" else 1000)):
        raise ToxicError(f"{BAD_BODY}: attribute delay is too long (got {attributes['delay']})")
    if kind.name == "burst_loss" and attributes.get("p", 0) + attributes.get("r", 1) == 0:
        raise ToxicError(f"{BAD_BODY}: burst_loss: p and r cannot both be 0")


def _toxicity(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not (0 <= value <= 1):
        raise ToxicError(f"{BAD_BODY}: toxicity must be a number in [0, 1] (got "
                         f"{value!r:.40})")
    return float(value)


def toxic_from_json(obj: object, *, protocols: Iterable[str] = ("tcp",),
                    strict: bool = False) -> Toxic:
    """A new toxic from the body of ``POST /proxies/{proxy}/toxics``.

    Toxiproxy's defaults: ``stream`` downstream, ``toxicity`` 1, ``name``
    ``{type}_{stream}``.  ``protocols``: what the proxy serves; a toxic that applies
    to none of them (``loss`` on a TCP proxy) is refused.  Other top-level fields are
    ignored, as Toxiproxy's JSON decoding does, unless ``strict`` (a config file, where
    a misspelt field is a mistake to report).
    """
    if not isinstance(obj, dict):
        raise ToxicError(f"{BAD_BODY}: a toxic must be a JSON object, not {_json_type(obj)}")
    stream = obj.get("stream", "downstream")
    if stream == "":
        stream = "downstream"
    if stream not in STREAMS:
        raise ToxicError(INVALID_STREAM)
    kind_name = obj.get("type")
    if not isinstance(kind_name, str) or kind_name not in TOXIC_TYPES:
        raise ToxicError(INVALID_TYPE)
    kind = TOXIC_TYPES[kind_name]
    if not kind.protocols & set(protocols):
        raise ToxicError(f"{INVALID_TYPE}: {kind_name} applies to "
                         f"{'/'.join(sorted(kind.protocols))} only, this proxy serves "
                         f"{'/'.join(sorted(protocols))}")
    name = obj.get("name") or f"{kind_name}_{stream}"
    if not isinstance(name, str) or len(name) > 200:
        raise ToxicError(f"{BAD_BODY}: name must be a string of at most 200 characters")
    unknown = set(obj) - {"name", "type", "stream", "toxicity", "attributes"}
    if unknown and strict:
        raise ToxicError(f"{BAD_BODY}: unknown field(s) {sorted(unknown)[:5]}")
    return Toxic(
        name=name,
        type=kind_name,
        stream=stream,
        toxicity=_toxicity(obj.get("toxicity", 1.0)),
        attributes=_attributes(kind, obj.get("attributes"), kind.attributes),
    )


def updated_toxic(toxic: Toxic, obj: object) -> Toxic:
    """``toxic`` changed by the body of ``PATCH /proxies/{proxy}/toxics/{toxic}``: the
    attributes given change, the others stay, ``toxicity`` too (type, stream and name
    do not change, as in Toxiproxy)."""
    if not isinstance(obj, dict):
        raise ToxicError(f"{BAD_BODY}: a toxic must be a JSON object, not {_json_type(obj)}")
    kind = TOXIC_TYPES[toxic.type]
    toxicity = _toxicity(obj["toxicity"]) if "toxicity" in obj else toxic.toxicity
    return replace(toxic, toxicity=toxicity,
                   attributes=_attributes(kind, obj.get("attributes"), toxic.attributes))


# --------------------------------------------------------------------------- counters


class ToxicCounters:
    """What one toxic did (plain ints, bumped on the hot path, read by /metrics)."""

    __slots__ = ("applied", "bytes", "closed", "corrupted", "delayed", "dropped", "duplicated",
                 "reordered", "reset", "skipped", "truncated")

    def __init__(self) -> None:
        self.applied = 0
        """TCP: connection directions that got the toxic; UDP: datagrams that got it."""
        self.skipped = 0
        """Likewise, spared by ``toxicity``."""
        self.bytes = 0
        """Bytes the toxic passed on."""
        self.dropped = 0
        """UDP: datagrams dropped; TCP: bytes thrown away (timeout, reset_peer, limit_data)."""
        self.delayed = 0
        """Chunks or datagrams handed on later than they came."""
        self.duplicated = 0
        self.reordered = 0
        self.corrupted = 0
        self.truncated = 0
        self.closed = 0
        """TCP connections the toxic closed."""
        self.reset = 0
        """TCP connections the toxic reset."""

    def as_json(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}


# --------------------------------------------------------------------------- TCP streams


@dataclass(frozen=True, slots=True)
class Write:
    at: float
    data: bytes


@dataclass(frozen=True, slots=True)
class EndOfStream:
    """The reading side closed: pass the close on (half-close) at ``at``."""

    at: float


@dataclass(frozen=True, slots=True)
class Close:
    """Close the whole connection (both sides, FIN) at ``at``."""

    at: float


@dataclass(frozen=True, slots=True)
class Reset:
    """Reset the whole connection (both sides, RST) at ``at``."""

    at: float


StreamEvent: TypeAlias = Write | EndOfStream | Close | Reset
Piece: TypeAlias = tuple[float, bytes]


class _Stage:
    """One toxic in one direction of one connection."""

    def __init__(self, toxic: Toxic, rng: random.Random, counters: ToxicCounters) -> None:
        self.toxic = toxic
        self.rng = rng
        self.counters = counters
        self.last = -math.inf

    def start(self, now: float) -> list[StreamEvent]:
        return []

    def pieces(self, pieces: list[Piece]) -> tuple[list[Piece], StreamEvent | None]:
        return pieces, None

    def end(self, at: float) -> float | StreamEvent:
        return max(at, self.last)

    def _count(self, out: list[Piece], before: list[Piece]) -> None:
        self.counters.bytes += sum(len(data) for _, data in out)
        self.counters.delayed += sum(1 for (a, _), (b, _) in zip(out, before, strict=False)
                                     if a > b)


class _Latency(_Stage):
    def pieces(self, pieces: list[Piece]) -> tuple[list[Piece], StreamEvent | None]:
        latency = self.toxic.attribute("latency") / 1000
        jitter = int(self.toxic.attribute("jitter"))
        out = []
        for at, data in pieces:
            delay = latency
            if jitter > 0:  # Toxiproxy: rand.Int63n(jitter*2) - jitter, in ms
                delay += (self.rng.randrange(jitter * 2) - jitter) / 1000
            self.last = max(self.last, at + max(0.0, delay))
            out.append((self.last, data))
        self._count(out, pieces)
        return out, None


class _Bandwidth(_Stage):
    def pieces(self, pieces: list[Piece]) -> tuple[list[Piece], StreamEvent | None]:
        rate = self.toxic.attribute("rate") * 1000  # KB/s, Toxiproxy's 1000 bytes
        if rate <= 0:
            self._count(pieces, pieces)
            return pieces, None
        step = max(1, int(rate / 10))  # Toxiproxy sends rate*100 bytes per 100 ms
        out = []
        for at, data in pieces:
            for offset in range(0, len(data), step):
                part = data[offset:offset + step]
                self.last = max(self.last, at) + len(part) / rate
                out.append((self.last, part))
        self.counters.bytes += sum(len(data) for _, data in out)
        self.counters.delayed += len(pieces)
        return out, None


class _SlowClose(_Stage):
    def pieces(self, pieces: list[Piece]) -> tuple[list[Piece], StreamEvent | None]:
        if pieces:
            self.last = max(self.last, pieces[-1][0])
        self._count(pieces, pieces)
        return pieces, None

    def end(self, at: float) -> float | StreamEvent:
        self.counters.delayed += 1
        return max(at, self.last) + self.toxic.attribute("delay") / 1000


class _Timeout(_Stage):
    def start(self, now: float) -> list[StreamEvent]:
        timeout = self.toxic.attribute("timeout")
        if timeout > 0:
            self.counters.closed += 1
            return [Close(now + timeout / 1000)]
        return []

    def pieces(self, pieces: list[Piece]) -> tuple[list[Piece], StreamEvent | None]:
        self.counters.dropped += sum(len(data) for _, data in pieces)
        return [], None


class _ResetPeer(_Stage):
    def pieces(self, pieces: list[Piece]) -> tuple[list[Piece], StreamEvent | None]:
        if not pieces:
            return [], None
        # Toxiproxy takes the first chunk off the stream, waits, resets.
        self.counters.dropped += sum(len(data) for _, data in pieces)
        self.counters.reset += 1
        return [], Reset(pieces[0][0] + self.toxic.attribute("timeout") / 1000)


class _Slicer(_Stage):
    def pieces(self, pieces: list[Piece]) -> tuple[list[Piece], StreamEvent | None]:
        delay = self.toxic.attribute("delay") / 1e6
        out = []
        for at, data in pieces:
            at = max(at, self.last)
            bounds = self.chunk(0, len(data))
            for index in range(0, len(bounds), 2):
                out.append((at, data[bounds[index]:bounds[index + 1]]))
                at += delay
            self.last = at
        self._count(out, out)
        self.counters.delayed += len(out) - len(pieces) if delay else 0
        return out, None

    def chunk(self, start: int, end: int) -> list[int]:
        """Toxiproxy's offsets: halve until within average_size + size_variation."""
        average = int(self.toxic.attribute("average_size"))
        variation = int(self.toxic.attribute("size_variation"))
        out: list[int] = []
        stack = [(start, end)]
        while stack:  # depth-first, left first, as Toxiproxy's recursion
            lo, hi = stack.pop()
            if (hi - lo) - average <= variation or hi - lo <= 1:
                out += [lo, hi]
                continue
            mid = lo + (hi - lo) // 2
            if variation > 0:
                mid += self.rng.randrange(variation * 2) - variation
            mid = min(max(mid, lo + 1), hi - 1)
            stack.append((mid, hi))
            stack.append((lo, mid))
        return out


class _LimitData(_Stage):
    def __init__(self, toxic: Toxic, rng: random.Random, counters: ToxicCounters) -> None:
        super().__init__(toxic, rng, counters)
        self.sent = 0

    def pieces(self, pieces: list[Piece]) -> tuple[list[Piece], StreamEvent | None]:
        limit = int(self.toxic.attribute("bytes"))
        out = []
        for at, data in pieces:
            room = max(0, limit - self.sent)
            if room < len(data):
                self.counters.dropped += len(data) - room
                data = data[:room]
            if data:
                out.append((at, data))
                self.sent += len(data)
            if self.sent >= limit:
                self._count(out, out)
                self.counters.closed += 1
                return out, Close(at)
        self._count(out, out)
        return out, None


class _Noop(_Stage):
    pass


_STREAM_STAGES: dict[str, type[_Stage]] = {
    "latency": _Latency, "bandwidth": _Bandwidth, "slow_close": _SlowClose,
    "timeout": _Timeout, "reset_peer": _ResetPeer, "slicer": _Slicer, "limit_data": _LimitData,
}


class StreamToxics:
    """The toxics of one direction of one TCP connection: chunks in, events out.

    ``rng`` rolls each toxic's ``toxicity`` now (once per connection and chain),
    then draws what the toxics need (jitter, slice sizes).  Events come out in
    time order per call, except :meth:`start`'s, which may lie ahead of later
    writes (a timeout's close): the glue keeps them in one time-ordered queue.
    """

    def __init__(self, toxics: Sequence[Toxic], rng: random.Random,
                 counters: Mapping[str, ToxicCounters]) -> None:
        self._stages: list[_Stage] = []
        for toxic in toxics:
            stage_type = _STREAM_STAGES.get(toxic.type)
            if stage_type is None:  # a UDP-only toxic on a TCP+UDP proxy
                continue
            count = counters[toxic.name]
            if rng.random() < toxic.toxicity:
                count.applied += 1
                self._stages.append(stage_type(toxic, rng, count))
            else:
                count.skipped += 1
        self.done = False
        """A close or reset was decided: nothing more goes this way."""

    def start(self, now: float) -> list[StreamEvent]:
        events: list[StreamEvent] = []
        for stage in self._stages:
            events += stage.start(now)
        return events

    def feed(self, chunk: bytes, now: float) -> list[StreamEvent]:
        """What to do with ``chunk``, read at ``now``."""
        if self.done:
            return []
        pieces: list[Piece] = [(now, chunk)]
        for stage in self._stages:
            pieces, final = stage.pieces(pieces)
            if final is not None:
                self.done = True
                return [*(Write(at, data) for at, data in pieces), final]
        return [Write(at, data) for at, data in pieces]

    def end(self, now: float) -> list[StreamEvent]:
        """The reading side closed at ``now``."""
        if self.done:
            return []
        self.done = True
        at = now
        for stage in self._stages:
            outcome = stage.end(at)
            if not isinstance(outcome, float):
                return [outcome]
            at = outcome
        return [EndOfStream(at)]


# --------------------------------------------------------------------------- datagrams


class DatagramToxics:
    """The toxics of one direction of one UDP proxy: per datagram, ``toxicity`` decides
    whether each toxic applies, then the toxic does its part.

    Each toxic draws a fixed number of random values per datagram whatever happens,
    so a seed gives the same decisions for the same datagrams.  State (bandwidth
    queue, the burst chain) lives as long as the chain: until a toxic of this
    proxy changes.
    """

    def __init__(self, toxics: Sequence[Toxic], rng: random.Random,
                 counters: Mapping[str, ToxicCounters]) -> None:
        self._toxics = [t for t in toxics if "udp" in TOXIC_TYPES[t.type].protocols]
        self._rng = rng
        self._counters = counters
        self._bad = dict.fromkeys((t.name for t in self._toxics), False)
        self._link_free = dict.fromkeys((t.name for t in self._toxics), -math.inf)

    def decide(self, data: bytes, now: float) -> Decision:
        copies: list[Piece] = [(now, data)]
        rng = self._rng
        reordered = corrupted = truncated = False
        for toxic in self._toxics:
            counters = self._counters[toxic.name]
            u_toxicity, u_a, u_b = rng.random(), rng.random(), rng.random()
            private_seed = rng.getrandbits(32)
            kind = toxic.type
            if kind == "burst_loss":  # the chain moves with every datagram
                lost = self._burst(toxic, u_a, u_b)
                if u_toxicity < toxic.toxicity and lost:
                    counters.applied += 1
                    counters.dropped += 1
                    return Decision((), dropped="burst")
                counters.skipped += u_toxicity >= toxic.toxicity
                counters.applied += u_toxicity < toxic.toxicity
                counters.bytes += sum(len(d) for _, d in copies)
                continue
            if u_toxicity >= toxic.toxicity:
                counters.skipped += 1
                counters.bytes += sum(len(d) for _, d in copies)
                continue
            counters.applied += 1
            if kind in ("loss", "timeout"):
                counters.dropped += 1
                return Decision((), dropped="loss")
            if kind == "latency":
                jitter = toxic.attribute("jitter") / 1000
                delay = toxic.attribute("latency") / 1000
                copies = [(at + max(0.0, delay + (2 * (u_a if index == 0 else u_b) - 1) * jitter),
                           d) for index, (at, d) in enumerate(copies)]
                counters.delayed += 1
            elif kind == "bandwidth":
                rate = toxic.attribute("rate") * 1000
                if rate > 0:
                    out = []
                    for at, d in copies:
                        free = max(at, self._link_free[toxic.name]) + len(d) / rate
                        self._link_free[toxic.name] = free
                        out.append((free, d))
                    copies = out
                    counters.delayed += 1
            elif kind == "duplicate":
                copies = copies + copies[:1]
                counters.duplicated += 1
            elif kind == "reorder":
                gap = toxic.attribute("gap") / 1000
                copies = [(at + gap, d) for at, d in copies]
                counters.reordered += 1
                reordered = True
            elif kind == "corrupt" and data:
                private = random.Random(private_seed)
                copies = [(at, flip_bit(d, private.randrange(len(d) * 8)) if d else d)
                          for at, d in copies]
                counters.corrupted += 1
                corrupted = True
            elif kind == "truncate":
                private = random.Random(private_seed)
                copies = [(at, d[:private.randrange(len(d))] if d else d) for at, d in copies]
                counters.truncated += 1
                truncated = True
            counters.bytes += sum(len(d) for _, d in copies)
        deliveries = tuple(Delivery(at, d, duplicate=index > 0)
                           for index, (at, d) in enumerate(copies))
        return Decision(deliveries, corrupted=corrupted, truncated=truncated,
                        reordered=reordered)

    def _burst(self, toxic: Toxic, u_loss: float, u_move: float) -> bool:
        bad = self._bad[toxic.name]
        lost = u_loss < toxic.attribute("loss_bad" if bad else "loss_good")
        if bad:
            self._bad[toxic.name] = u_move >= toxic.attribute("r")
        else:
            self._bad[toxic.name] = u_move < toxic.attribute("p")
        return lost


class PolicyStream:
    """The ``--loss ...`` engine's TCP side as a stream of events: one direction of one
    connection through a :class:`~udpkit.core.impairment.LinkPolicy` (latency, bandwidth,
    ``reset_after``, ``slow_close``), so one TCP glue runs both engines."""

    def __init__(self, policy: LinkPolicy) -> None:
        self._policy = policy
        self._state = StreamState()
        self.done = False

    def start(self, now: float) -> list[StreamEvent]:
        return []

    def feed(self, chunk: bytes, now: float) -> list[StreamEvent]:
        if self.done:
            return []
        decision = self._policy.decide_stream(chunk, now, self._state)
        events: list[StreamEvent] = [Write(decision.at, decision.data)]
        if decision.reset:
            self.done = True
            events.append(Reset(decision.at))
        return events

    def end(self, now: float) -> list[StreamEvent]:
        if self.done:
            return []
        self.done = True
        return [EndOfStream(max(now, self._state.last_at) + self._policy.settings.slow_close)]
