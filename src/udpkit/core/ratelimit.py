"""Per-source rate limiting in fixed memory: token buckets in a hash table.

Rule: memory is fixed at construction whatever the number of sources, and a
flood of new sources cannot evict an abuser's bucket.  Each source key hashes
to one slot; a slot owned by another key is taken over only when its bucket
has refilled completely (that source has been quiet), otherwise the newcomer
shares the bucket and is limited together with it.  Sharing errs on the side
of limiting, like response rate limiting in NSD and Knot.

Time is passed in (seconds, any monotonic origin).
"""

from __future__ import annotations

from udpkit.core.errors import UsageError


class TokenBucketTable:
    """``allow(key, now)``: may this source send one more request now?"""

    __slots__ = ("_keys", "_stamps", "_tokens", "burst", "rate", "size")

    def __init__(self, *, rate: float, burst: float, size: int = 65536) -> None:
        if rate <= 0:
            raise UsageError(f"rate limit must be > 0 requests/s (got {rate})")
        if burst < 1:
            raise UsageError(f"burst must be >= 1 (got {burst})")
        if size < 1:
            raise UsageError(f"table size must be >= 1 (got {size})")
        self.rate = float(rate)
        self.burst = float(burst)
        self.size = size
        self._keys: list[object] = [None] * size
        self._tokens: list[float] = [self.burst] * size
        self._stamps: list[float] = [0.0] * size

    def allow(self, key: object, now: float) -> bool:
        slot = hash(key) % self.size
        tokens = self._tokens[slot] + (now - self._stamps[slot]) * self.rate
        if tokens > self.burst:
            tokens = self.burst
        if self._keys[slot] != key and tokens >= self.burst:
            self._keys[slot] = key  # the previous owner was quiet: take the slot over
        self._stamps[slot] = now
        if tokens >= 1.0:
            self._tokens[slot] = tokens - 1.0
            return True
        self._tokens[slot] = tokens
        return False

    def take(self, key: object, now: float, want: int) -> int:
        """Take up to ``want`` whole tokens at once; return how many were granted.

        For callers that hand tokens out per request themselves (the C fast
        path keeps a sender's grant and calls back once per grant, not once
        per datagram).  The bound is the same as with :meth:`allow`: never
        more than the burst plus the rate times the time elapsed.
        """
        slot = hash(key) % self.size
        tokens = self._tokens[slot] + (now - self._stamps[slot]) * self.rate
        if tokens > self.burst:
            tokens = self.burst
        if self._keys[slot] != key and tokens >= self.burst:
            self._keys[slot] = key
        self._stamps[slot] = now
        granted = min(want, int(tokens))
        self._tokens[slot] = tokens - granted
        return max(0, granted)

    def refill_time(self, key: object, now: float, want: int) -> float:
        """Seconds until ``key``'s bucket holds ``want`` tokens (at most the burst), if
        nothing is taken meanwhile; the bucket is not changed."""
        slot = hash(key) % self.size
        tokens = self._tokens[slot] + (now - self._stamps[slot]) * self.rate
        missing = min(float(want), self.burst) - min(tokens, self.burst)
        return max(0.0, missing / self.rate)
