"""The proxy's table of UDP client sessions: bounded, least recently active first.

Rule: pure bookkeeping, time passed in.  A session lives while traffic flows
either way; one silent for ``idle_timeout`` expires; when the table is full a
new client evicts the least recently active one (as a NAT table does), so a
flood of source addresses costs bounded memory and sockets.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

Key = TypeVar("Key", bound=Hashable)
Value = TypeVar("Value")


class SessionTable(Generic[Key, Value]):
    """Sessions by client address, ordered by last activity."""

    def __init__(self, *, max_sessions: int, idle_timeout: float) -> None:
        self.max_sessions = max_sessions
        self.idle_timeout = idle_timeout
        self._sessions: OrderedDict[Key, tuple[Value, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._sessions)

    def __contains__(self, key: object) -> bool:
        return key in self._sessions

    def get(self, key: Key) -> Value | None:
        entry = self._sessions.get(key)
        return entry[0] if entry is not None else None

    def touch(self, key: Key, now: float) -> None:
        """Record activity on ``key``'s session."""
        entry = self._sessions.get(key)
        if entry is not None:
            self._sessions[key] = (entry[0], now)
            self._sessions.move_to_end(key)

    def add(self, key: Key, value: Value, now: float) -> list[Value]:
        """Add a session; return the sessions evicted to make room (to be closed)."""
        evicted: list[Value] = []
        while len(self._sessions) >= self.max_sessions:
            _, (old, _) = self._sessions.popitem(last=False)
            evicted.append(old)
        self._sessions[key] = (value, now)
        return evicted

    def expire(self, now: float) -> list[Value]:
        """Remove and return the sessions idle for ``idle_timeout`` or more."""
        expired: list[Value] = []
        limit = now - self.idle_timeout
        while self._sessions:
            key, (value, last) = next(iter(self._sessions.items()))
            if last > limit:
                break
            del self._sessions[key]
            expired.append(value)
        return expired

    def next_expiry(self) -> float | None:
        """When the least recently active session expires, if nothing happens first."""
        if not self._sessions:
            return None
        _, last = next(iter(self._sessions.values()))
        return last + self.idle_timeout

    def values(self) -> list[Value]:
        """Every session, least recently active first."""
        return [value for value, _ in self._sessions.values()]

    def pop_all(self) -> list[Value]:
        values = [value for value, _ in self._sessions.values()]
        self._sessions.clear()
        return values
