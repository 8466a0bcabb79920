"""A short coverage-guided fuzz run in CI: atheris when it installs, else hypothesis.

The atheris run is bounded in count and time; a crash makes it exit non-zero
and print the input.  Without atheris, the same checks run under hypothesis.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from udpkit.apps.greeting import greet
from udpkit.core.escaping import escape_untrusted
from udpkit.core.framing import Len16Framing, LineFraming

TARGET = Path(__file__).parent / "fuzz_requests.py"
HAS_ATHERIS = importlib.util.find_spec("atheris") is not None


@pytest.mark.skipif(not HAS_ATHERIS, reason="atheris is not installed; hypothesis runs instead")
def test_atheris_fuzz_run_finds_no_crash(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(TARGET), "-runs=30000", "-max_total_time=40", "-max_len=512",
         f"-artifact_prefix={tmp_path}/"],
        capture_output=True, timeout=120, check=False,
    )
    assert result.returncode == 0, result.stderr.decode(errors="replace")[-3000:]
    assert b"Done 30000 runs" in result.stderr or b"DONE" in result.stderr


@settings(max_examples=500)
@given(stream=st.binary(max_size=512), cuts=st.lists(st.integers(0, 512), max_size=8),
       max_line=st.integers(1, 64), len16=st.booleans())
def test_hypothesis_fuzz_of_the_same_checks(stream: bytes, cuts: list[int],
                                            max_line: int, len16: bool) -> None:
    framing = Len16Framing if len16 else LineFraming
    whole, split = framing(max_line), framing(max_line)
    expected = whole.feed(stream)
    got: list[bytes] = []
    start = 0
    for cut in [*sorted(cuts), len(stream)]:
        cut = min(max(cut, start), len(stream))
        got.extend(split.feed(stream[start:cut]))
        start = cut
    assert got == expected
    for message in expected:
        assert len(message) <= max_line
        assert len(greet(message)) == len(message) + 8
        assert escape_untrusted(message).isprintable()
