"""The C boundary's contract: what C spells itself is checked against its Python owners."""

from __future__ import annotations

from types import ModuleType

import pytest

from udpkit import _native
from udpkit.core.counters import Counters


def fake_extension(counters: tuple[str, ...], callbacks: tuple[str, ...],
                   statuses: tuple[str, ...] = _native._STATUS_NAMES) -> ModuleType:
    module = ModuleType("fake_fastpath")
    module.COUNTER_FIELDS = counters  # type: ignore[attr-defined]
    module.CALLBACKS = callbacks  # type: ignore[attr-defined]
    for value, name in enumerate(statuses):
        setattr(module, name, value)
    return module


def test_a_matching_contract_is_accepted() -> None:
    assert _native._check(fake_extension(("received", "replied"), ("lines_read",))) == ""


@pytest.mark.parametrize(("counters", "callbacks", "named"), [
    (("received", "received_twice"), ("lines_read",), "received_twice"),
    (("received",), ("_from_poller",), "_from_poller"),
    ((), (), "exports no contract"),
])
def test_a_build_that_no_longer_matches_is_refused_with_the_reason(
    counters: tuple[str, ...], callbacks: tuple[str, ...], named: str
) -> None:
    reason = _native._check(fake_extension(counters, callbacks))
    assert "rebuild it" in reason
    assert named in reason


def test_a_build_without_a_status_code_python_uses_is_refused() -> None:
    """A build from before len16 framing has no LINES_EMPTY: refused with the reason at
    load, where it would otherwise be an AttributeError importing udpkit."""
    statuses = tuple(name for name in _native._STATUS_NAMES if name != "LINES_EMPTY")
    reason = _native._check(fake_extension(("received",), ("lines_read",), statuses))
    assert reason == "C extension out of date (no LINES_EMPTY): rebuild it"


@pytest.mark.skipif(not _native.built(), reason="the C extension is not built")
def test_the_built_extension_counts_only_into_counters_fields() -> None:
    import importlib

    extension = importlib.import_module("udpkit._fastpath")
    assert set(extension.COUNTER_FIELDS) <= set(Counters.__slots__)
    assert "handed_back" in extension.CALLBACKS
    assert _native._check(extension) == ""
