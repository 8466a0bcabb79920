"""Tier (a): the one ReplyRule and its three kinds, with no app imported.

The core is handed the reply function; these tests hand it their own.
"""

from __future__ import annotations

import pytest

from udpkit.core.errors import UsageError
from udpkit.core.matching import ANY, ExpectReply, NumberedReply, PendingTable, Predicate, ReplyRule
from udpkit.core.payloads import PayloadTemplate


def shout(request: bytes) -> bytes:
    return request.upper() + b"!"


class Doubled(ReplyRule):
    """A rule written as the base class documents: exact, by :meth:`expected`."""

    exact = True

    def expected(self, request: bytes) -> bytes:
        return request * 2


def test_expect_reply_matches_by_its_function_and_numbers_loads() -> None:
    rule = ExpectReply(shout)
    template = PayloadTemplate("n{seq}")
    assert rule.matches(b"n7", b"N7!")
    assert not rule.matches(b"n7", b"n7")
    rule.check(template)
    assert rule.find_seq_untrusted(b"N41!", template, sent=50) == 41
    assert rule.find_seq_untrusted(b"N41!", template, sent=41) is None


def test_an_exact_reply_that_does_not_name_its_request_is_refused_for_a_load() -> None:
    with pytest.raises(UsageError, match="cannot be matched"):
        ExpectReply(lambda request: b"ok").check(PayloadTemplate("n{seq}"))


def test_a_subclass_that_only_gives_expected_works_everywhere() -> None:
    rule = Doubled()
    template = PayloadTemplate("r{seq};")
    rule.check(template)
    assert rule.find_seq_untrusted(b"r3;r3;", template, sent=4) == 3
    table: PendingTable[str] = PendingTable(rule)
    table.add("a", b"x")
    assert table.match(b"xx") == "a"
    assert table.classify_unmatched(b"xx") == "duplicate"


def test_numbered_reply_reads_the_number() -> None:
    rule = NumberedReply("^id={seq};")
    rule.check(PayloadTemplate("id={seq}"))
    assert rule.seq_of_untrusted(b"id=12;rest") == 12
    assert rule.seq_of_untrusted(b"xid=12;") is None
    assert rule.find_seq_untrusted(b"id=12;", PayloadTemplate("id={seq}"), sent=12) is None
    with pytest.raises(UsageError, match="exactly once"):
        NumberedReply("no number")
    with pytest.raises(UsageError, match="bad --expect regular expression"):
        NumberedReply("(unclosed{seq}")


@pytest.mark.parametrize("rule", [ANY, Predicate(lambda request, reply: True)])
def test_a_predicate_cannot_number_a_load(rule: ReplyRule) -> None:
    assert rule.matches(b"anything", b"at all")
    with pytest.raises(UsageError, match="cannot tell which request a reply answers"):
        rule.check(PayloadTemplate("n{seq}"))
