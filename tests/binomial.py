"""Exact binomial bounds for rate assertions: no "roughly", no flaky margins.

``binomial_bounds(n, p)`` gives the smallest ``[lo, hi]`` with
``P(X < lo) <= alpha / 2`` and ``P(X > hi) <= alpha / 2`` for ``X ~ B(n, p)``;
with ``alpha = 1e-6`` a correct implementation fails about once in a million
runs, and with a fixed seed it fails never or always.
"""

from __future__ import annotations

import math


def _log_pmf(n: int, k: int, p: float) -> float:
    if p == 0:
        return 0.0 if k == 0 else -math.inf
    if p == 1:
        return 0.0 if k == n else -math.inf
    return (math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)
            + k * math.log(p) + (n - k) * math.log1p(-p))


def binomial_bounds(n: int, p: float, *, alpha: float = 1e-6) -> tuple[int, int]:
    pmf = [math.exp(_log_pmf(n, k, p)) for k in range(n + 1)]
    tail = alpha / 2
    lo, below = 0, 0.0
    while lo < n and below + pmf[lo] <= tail:
        below += pmf[lo]
        lo += 1
    hi, above = n, 0.0
    while hi > 0 and above + pmf[hi] <= tail:
        above += pmf[hi]
        hi -= 1
    return lo, hi


def assert_binomial(count: int, n: int, p: float, *, what: str, alpha: float = 1e-6) -> None:
    lo, hi = binomial_bounds(n, p, alpha=alpha)
    assert lo <= count <= hi, (
        f"{what}: {count} of {n} ({count / max(n, 1):.4f}) is outside the exact "
        f"{1 - alpha:.6f} binomial interval [{lo}, {hi}] for p={p}"
    )
