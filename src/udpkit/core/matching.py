"""Which reply answers which request.

Rule: a reply is accepted only when it matches a request in flight; anything
else (stray, late, duplicated, wrong) is counted and ignored, never an error
of the request it does not belong to.

Built-in services know the exact reply to expect (``greeting``: the greeting,
``echo``: the same bytes), so matching is a dictionary look-up; for other
services the caller gives a predicate and matching scans the requests in
flight, oldest first.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from udpkit.apps.greeting import greet

Token = TypeVar("Token", bound=Hashable)


class Matcher:
    """Decides whether ``reply`` answers ``request``.

    Subclass and override :meth:`matches`, or give :meth:`expected` when the
    reply to a request is known exactly (faster: a dictionary look-up).
    """

    exact: bool = False

    def expected(self, request: bytes) -> bytes:
        raise NotImplementedError

    def matches(self, request: bytes, reply: bytes) -> bool:
        return self.expected(request) == reply


class ExpectReply(Matcher):
    """The reply must equal ``reply_for(request)``."""

    exact = True

    def __init__(self, reply_for: Callable[[bytes], bytes]) -> None:
        self._reply_for = reply_for

    def expected(self, request: bytes) -> bytes:
        return self._reply_for(request)


class Predicate(Matcher):
    """The reply is accepted when ``accept(request, reply)`` is true."""

    def __init__(self, accept: Callable[[bytes, bytes], bool]) -> None:
        self._accept = accept

    def matches(self, request: bytes, reply: bytes) -> bool:
        return self._accept(request, reply)


def _identity(request: bytes) -> bytes:
    return request


GREETING = ExpectReply(greet)
ECHO = ExpectReply(_identity)
ANY = Predicate(lambda request, reply: True)
"""Accept any reply: for lock-step services whose replies cannot be predicted."""

BUILTIN_MATCHERS: dict[str, Matcher] = {"greeting": GREETING, "echo": ECHO, "any": ANY}


def as_matcher(value: str | Matcher | Callable[[bytes, bytes], bool]) -> Matcher:
    """Accept a built-in name, a :class:`Matcher` or a plain predicate."""
    if isinstance(value, Matcher):
        return value
    if isinstance(value, str):
        try:
            return BUILTIN_MATCHERS[value]
        except KeyError:
            known = ", ".join(sorted(BUILTIN_MATCHERS))
            raise ValueError(f"unknown matcher {value!r} (built in: {known})") from None
    return Predicate(value)


class PendingTable(Generic[Token]):
    """Requests in flight, found again by their reply.

    ``recent`` remembers the replies to the last answered requests, and (for
    exact matchers) the expected replies of the last abandoned ones, so that a
    second reply (duplicate) or a reply after the give-up (late) is told apart
    from a reply to nothing.
    """

    def __init__(self, matcher: Matcher, *, recent: int = 1024) -> None:
        self.matcher = matcher
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
        if self.matcher.exact:
            self._by_reply.setdefault(self.matcher.expected(request), deque()).append(token)

    def remove(self, token: Token) -> None:
        request = self._requests.pop(token, None)
        if request is None or not self.matcher.exact:
            return
        key = self.matcher.expected(request)
        waiting = self._by_reply.get(key)
        if waiting is not None:
            waiting.remove(token)
            if not waiting:
                del self._by_reply[key]

    def match(self, reply: bytes) -> Token | None:
        """The oldest request ``reply`` answers, removed from the table; or ``None``."""
        token: Token | None = None
        if self.matcher.exact:
            waiting = self._by_reply.get(reply)
            if waiting:
                token = waiting[0]
        else:
            for candidate, request in self._requests.items():
                if self.matcher.matches(request, reply):
                    token = candidate
                    break
        if token is not None:
            self.remove(token)
            self._remember(self._answered, reply)
        return token

    def abandon(self, token: Token) -> None:
        """Forget a request that gave up, remembering its reply to spot it late."""
        request = self._requests.get(token)
        if request is None:
            return
        self.remove(token)
        if self.matcher.exact:
            self._remember(self._abandoned, self.matcher.expected(request))

    def classify_unmatched(self, reply: bytes) -> str:
        """Why a reply matched nothing: ``duplicate``, ``late`` or ``unexpected``."""
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
