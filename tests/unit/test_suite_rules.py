"""Rules of the test suite itself, checked by reading its files.

Every test file lives in a tier directory, every tier is a registered marker
(tests/conftest.py applies them by directory), and every test asserts an
outcome: a test that only has to not raise or not time out passes whatever
the code does.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import TESTS, TIERS, tier_of

#: Programs kept as the tutorial wrote them: real peers, not tests of ours.
NOT_OURS = TESTS / "peers" / "tutorial"

#: A call to a function whose name holds one of these is an assertion too
#: (``pytest.raises``, ``expect_fast``, ``assert_summary``, ``pytest.fail``...).
ASSERTING_NAMES = ("assert", "raises", "warns", "fail", "expect", "check")


def our_test_files() -> Iterator[Path]:
    for path in sorted(TESTS.rglob("test_*.py")):
        if not path.is_relative_to(NOT_OURS):
            yield path


def test_every_test_file_lives_in_a_tier_directory() -> None:
    outside = [str(path.relative_to(TESTS)) for path in our_test_files() if tier_of(path) is None]
    assert outside == [], f"move these into one of {TIERS} (or add a tier): {outside}"


def test_every_tier_is_a_registered_marker_and_a_directory(pytestconfig: pytest.Config) -> None:
    registered = {line.split(":")[0].strip() for line in pytestconfig.getini("markers")}
    assert set(TIERS) <= registered, f"register in pyproject.toml: {set(TIERS) - registered}"
    assert [tier for tier in TIERS if not (TESTS / tier).is_dir()] == []


def test_a_test_is_marked_with_its_directory(request: pytest.FixtureRequest) -> None:
    assert request.node.get_closest_marker("unit") is not None
    assert request.node.get_closest_marker("net") is None


def _called_name(call: ast.Call) -> str:
    func = call.func
    if isinstance(func, ast.Attribute):
        return func.attr
    return func.id if isinstance(func, ast.Name) else ""


def _asserts(
    node: ast.AST, helpers: dict[str, ast.AST], seen: set[str] | None = None
) -> bool:
    """Whether ``node`` asserts, itself or through a helper of the same module
    it calls (``run(_scenario())`` asserts when ``_scenario`` does)."""
    seen = set() if seen is None else seen
    for child in ast.walk(node):
        if isinstance(child, ast.Assert):
            return True
        if isinstance(child, ast.Call):
            name = _called_name(child)
            if any(word in name.lower() for word in ASSERTING_NAMES):
                return True
            if name in helpers and name not in seen:
                seen.add(name)
                if _asserts(helpers[name], helpers, seen):
                    return True
    return False


def silent_tests(source: str) -> list[tuple[int, str]]:
    """``(line, name)`` of each test function in ``source`` that asserts nothing."""
    functions = [
        node
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    ]
    helpers: dict[str, ast.AST] = {node.name: node for node in functions}
    return [
        (node.lineno, node.name)
        for node in functions
        if node.name.startswith("test_") and not _asserts(node, helpers)
    ]


def test_every_test_asserts_an_outcome() -> None:
    silent = [
        f"{path.relative_to(TESTS)}:{line} {name}"
        for path in our_test_files()
        for line, name in silent_tests(path.read_text())
    ]
    assert silent == []


def test_the_check_finds_a_test_that_asserts_nothing() -> None:
    """The check above passes on a suite without tests too: show that it can fail."""
    source = (
        "def helper():\n    assert True\n"
        "def test_silent():\n    compute()\n"
        "async def test_through_a_helper():\n    run(helper())\n"
        "def test_raises():\n    with pytest.raises(ValueError):\n        int('x')\n"
    )
    assert silent_tests(source) == [(3, "test_silent")]
