"""Which reply answers which request.

Rule: a reply is accepted only when it matches a request in flight; anything
else (stray, late, duplicated, wrong) is counted and ignored, never an error
of the request it does not belong to.

One abstraction says what "answers" means, :class:`ReplyRule`, in three kinds:

* :class:`ExpectReply`: the reply is a known function of the request
  (``greeting``: ``Hello, <name>!``; ``echo``: the same bytes), so matching
  is a dictionary look-up;
* :class:`NumberedReply`: a regular expression whose ``{seq}`` captures the
  number of the request a reply answers (load tests number their payloads);
* :class:`Predicate`: the caller's test, scanned over the requests in
  flight, oldest first.

An exact rule may look a reply up by a key rather than by all its bytes
(:meth:`ReplyRule.reply_key_untrusted`: DNS, whose reply is known only by
the id and question it repeats).

Which app replies how is not known here: the app registry
(:mod:`udpkit.apps`) passes each app's reply function in.  Everything here is
pure: no sockets, no clock.
"""

from __future__ import annotations

import re
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable, Iterator
from typing import Generic, TypeVar

from udpkit.core.errors import UsageError
from udpkit.core.payloads import RequestSource

Token = TypeVar("Token", bound=Hashable)

_DIGITS = re.compile(rb"[0-9]+")
_MAX_CANDIDATES = 64
_PROBE_NUMBERS = (0, 7, 42, 99999)
"""Request numbers :meth:`ReplyRule.check` renders to see that replies name them."""


class ReplyRule:
    """Decides which request a reply answers.

    Every rule answers :meth:`matches`.  An ``exact`` rule also knows the one
    reply to a request (:meth:`expected`: matching is a dictionary look-up);
    a ``numbered`` rule reads the request's number out of a reply
    (:meth:`seq_of_untrusted`).  A load test needs one or the other
    (:meth:`check`).  Subclass and override :meth:`matches`, or
    :meth:`expected` with ``exact = True``.
    """

    exact: bool = False
    numbered: bool = False
    name: str = ""
    """How ``--expect`` names the rule, or ``""``."""

    keyed: bool = False
    """Exact rules only: a reply is looked up by :meth:`reply_key_untrusted`, and
    :meth:`expected` gives the key of the reply, not the reply."""

    def expected(self, request: bytes) -> bytes:
        """The one reply that answers ``request`` (exact rules only), or its key."""
        raise NotImplementedError

    def reply_key_untrusted(self, reply: bytes) -> bytes | None:
        """What an exact rule looks ``reply`` up by: the reply itself unless ``keyed``."""
        return reply

    def matches(self, request: bytes, reply: bytes) -> bool:
        return self.expected(request) == self.reply_key_untrusted(reply)

    def seq_of_untrusted(self, reply: bytes) -> int | None:
        """The number a reply claims to answer, or ``None`` (numbered rules only)."""
        raise NotImplementedError

    def find_seq_untrusted(self, reply: bytes, template: RequestSource, sent: int) -> int | None:
        """The number ``< sent`` whose request ``reply`` answers, or ``None``.

        The slow path of a load test, for replies that matched nothing in
        flight: tells a duplicate or late reply (it answers a number) from a
        wrong one.  A numbered rule reads the number; any other rule tries
        every number written in the reply.
        """
        if self.numbered:
            seq = self.seq_of_untrusted(reply)
            return seq if seq is not None and seq < sent else None
        for seq in _candidate_numbers(reply):
            if seq < sent and self.matches(template.render(seq), reply):
                return seq
        return None

    def check(self, template: RequestSource) -> None:
        """Refuse a load test whose replies this rule cannot tell apart.

        A numbered rule always can; an exact rule can when the reply to each
        request names its number; a predicate cannot (nothing to look up).
        """
        if self.numbered:
            return
        if self.exact:
            for seq in _PROBE_NUMBERS:
                reply = self.expected(template.render(seq))
                if self.find_seq_untrusted(reply, template, seq + 1) != seq:
                    raise UsageError(
                        f"payload template {template.template!r} cannot be matched: the reply "
                        f"to request {seq} does not name it"
                    )
            return
        raise UsageError(
            f"--expect {self.name or type(self).__name__!r} cannot tell which request a reply "
            "answers (give an app whose reply is known, or a regular expression containing "
            "{seq} exactly once)"
        )

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>" if self.name else super().__repr__()


class ExpectReply(ReplyRule):
    """The reply must equal ``reply_for(request)``."""

    exact = True

    def __init__(self, reply_for: Callable[[bytes], bytes], *, name: str = "") -> None:
        self.reply_for = reply_for
        self.name = name

    def expected(self, request: bytes) -> bytes:
        return self.reply_for(request)


class NumberedReply(ReplyRule):
    """The reply answers the request whose number ``{seq}`` captures (``re.search``).

    ``pattern`` is a regular expression over the reply's bytes in which
    ``{seq}`` (exactly once) stands for the request's number.
    """

    numbered = True

    def __init__(self, pattern: str) -> None:
        if pattern.count("{seq}") != 1:
            raise UsageError(f"reply pattern {pattern!r} must contain {{seq}} exactly once")
        before, after = pattern.split("{seq}")
        try:
            self.pattern = re.compile((before + "(?P<seq>[0-9]+)" + after).encode())
        except re.error as exc:
            raise UsageError(f"bad --expect regular expression {pattern!r}: {exc}") from None
        self.name = pattern

    def seq_of_untrusted(self, reply: bytes) -> int | None:
        found = self.pattern.search(reply)
        if found is None:
            return None
        return int(found.group("seq"))

    def matches(self, request: bytes, reply: bytes) -> bool:
        """The reply names a number written in the request."""
        seq = self.seq_of_untrusted(reply)
        return seq is not None and any(int(run) == seq for run in _DIGITS.findall(request))


class Predicate(ReplyRule):
    """The reply is accepted when ``accept(request, reply)`` is true."""

    def __init__(self, accept: Callable[[bytes, bytes], bool], *, name: str = "") -> None:
        self.accept = accept
        self.name = name

    def matches(self, request: bytes, reply: bytes) -> bool:
        return self.accept(request, reply)


ANY = Predicate(lambda request, reply: True, name="any")
"""Accept any reply: for lock-step services whose replies cannot be predicted."""


def _candidate_numbers(reply: bytes) -> Iterator[int]:
    """Every number written in ``reply`` (each run of digits and its sub-runs)."""
    tried = 0
    for run in _DIGITS.finditer(reply):
        digits = run.group()
        for start in range(len(digits)):
            for end in range(len(digits), start, -1):
                if tried >= _MAX_CANDIDATES:
                    return
                tried += 1
                yield int(digits[start:end])


class PendingTable(Generic[Token]):
    """Requests in flight, found again by their reply.

    ``recent`` remembers the replies to the last answered requests, and (for
    exact rules) the expected replies of the last abandoned ones, so that a
    second reply (duplicate) or a reply after the give-up (late) is told apart
    from a reply to nothing.
    """

    def __init__(self, rule: ReplyRule, *, recent: int = 1024) -> None:
        self.rule = rule
        self._by_reply: dict[bytes, deque[Token]] = {}
        self._requests: dict[Token, bytes] = {}
        self._recent_size = recent
        self._answered: OrderedDict[bytes, None] = OrderedDict()
        self._abandoned: OrderedDict[bytes, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._requests)

    def __contains__(self, token: object) -> bool:
        return token in self._requests

    def add(self, token: Token, request: bytes) -> None:
        self._requests[token] = request
        if self.rule.exact:
            self._by_reply.setdefault(self.rule.expected(request), deque()).append(token)

    def remove(self, token: Token) -> None:
        request = self._requests.pop(token, None)
        if request is None or not self.rule.exact:
            return
        key = self.rule.expected(request)
        waiting = self._by_reply.get(key)
        if waiting is not None:
            waiting.remove(token)
            if not waiting:
                del self._by_reply[key]

    def match(self, reply: bytes) -> Token | None:
        """The oldest request ``reply`` answers, removed from the table; or ``None``."""
        token: Token | None = None
        if self.rule.exact:
            key = self.rule.reply_key_untrusted(reply) if self.rule.keyed else reply
            waiting = self._by_reply.get(key) if key is not None else None
            if waiting:
                token = waiting[0]
        else:
            for candidate, request in self._requests.items():
                if self.rule.matches(request, reply):
                    token = candidate
                    break
        if token is not None:
            self.remove(token)
            self._remember(self._answered,
                           self.rule.reply_key_untrusted(reply) or b"" if self.rule.keyed
                           else reply)
        return token

    def abandon(self, token: Token) -> None:
        """Forget a request that gave up, remembering its reply to spot it late."""
        request = self._requests.get(token)
        if request is None:
            return
        self.remove(token)
        if self.rule.exact:
            self._remember(self._abandoned, self.rule.expected(request))

    def classify_unmatched(self, reply: bytes) -> str:
        """Why a reply matched nothing: ``duplicate``, ``late`` or ``unexpected``."""
        if self.rule.keyed:
            reply = self.rule.reply_key_untrusted(reply) or b""
        if reply in self._answered:
            return "duplicate"
        if reply in self._abandoned:
            return "late"
        return "unexpected"

    def _remember(self, seen: OrderedDict[bytes, None], reply: bytes) -> None:
        seen[reply] = None
        seen.move_to_end(reply)
        if len(seen) > self._recent_size:
            seen.popitem(last=False)
