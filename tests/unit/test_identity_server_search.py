"""The server half of "mentions you": what is asked, and what a refusal means.

A fake IMAP client records the SEARCH commands; the real Dovecot round trip
is in tests/integration/test_mentions.py.
"""

from __future__ import annotations

from typing import Any

import pytest
from imapclient.exceptions import IMAPClientAbortError, IMAPClientError

from app.mail.identity import Identity
from executor.mentions import MentionCheck, body_criteria, server_mentions, uid_set
from executor.parsing import RawMessage

ZOE = Identity("zo@x.example", "Zoë Ørsted")


class FakeClient:
    def __init__(self, hits: list[int], refuse: set[str | None] = frozenset()) -> None:
        self.hits = hits
        self.refuse = refuse
        self.calls: list[tuple[list[Any], str | None]] = []

    def search(self, criteria: list[Any], charset: str | None = None) -> list[int]:
        self.calls.append((criteria, charset))
        if charset in self.refuse:
            raise IMAPClientError("SEARCH command error: NO [BADCHARSET (US-ASCII)]")
        return self.hits


def raw(uid: int, size: int | None, body: bytes = b"x" * 10) -> RawMessage:
    return RawMessage(uid, (), None, size, None, body)


def test_uid_sets_are_compact_ranges() -> None:
    assert uid_set([9, 1, 2, 3, 7, 10, 3]) == "1:3,7,9:10"
    assert uid_set([5]) == "5"


def test_terms_are_ored_pairwise_over_the_body_only() -> None:
    assert body_criteria(["a"]) == ["BODY", "a"]
    assert body_criteria(["a", "b", "c"]) == ["OR", "BODY", "a", "OR", "BODY", "b", "BODY", "c"]
    assert "TEXT" not in body_criteria(ZOE.search_terms())  # headers hold Delivered-To


def test_non_ascii_terms_are_sent_as_utf8() -> None:
    client = FakeClient([7, 99])  # a server may answer about UIDs it was not asked
    hits, sure = server_mentions(client, [7, 8], ZOE.search_terms())
    assert hits == {7} and sure
    [(criteria, charset)] = client.calls
    assert charset == "UTF-8" and criteria[:2] == ["UID", "7:8"]
    assert {"Zoë", "Zoe", "Ørsted"} <= set(criteria)


def test_a_server_refusing_utf8_is_asked_in_ascii_and_then_a_miss_proves_nothing() -> None:
    client = FakeClient([], refuse={"UTF-8"})
    hits, sure = server_mentions(client, [7], ZOE.search_terms())
    assert hits == set() and not sure
    assert [c for _, c in client.calls] == ["UTF-8", None]
    assert all(t.isascii() for t in client.calls[1][0])


def test_a_server_refusing_everything_leaves_the_verdict_unknown() -> None:
    check = MentionCheck(ZOE)
    client = FakeClient([], refuse={"UTF-8", None})
    [checked] = check.ask_server(client, [raw(7, size=100_000)])  # type: ignore[arg-type]
    assert checked.server_mentions is None


def test_a_dropped_connection_is_not_mistaken_for_a_refusal() -> None:
    class Broken(FakeClient):
        def search(self, criteria: list[Any], charset: str | None = None) -> list[int]:
            raise IMAPClientAbortError("socket closed")

    with pytest.raises(IMAPClientAbortError):
        server_mentions(Broken([]), [1], ["alex"])


def test_only_messages_cut_short_are_asked_about() -> None:
    check = MentionCheck(Identity("alex.roy@example.com", "Alex Roy"))
    client = FakeClient([2])
    whole, cut, unknown_size = raw(1, size=10), raw(2, size=100_000), raw(3, size=None)
    out = check.ask_server(client, [whole, cut, unknown_size])  # type: ignore[arg-type]
    assert [m.server_mentions for m in out] == [None, True, False]
    [(criteria, _)] = client.calls
    assert criteria[1] == "2:3"
    assert MentionCheck(None).ask_server(client, [cut]) == [cut]  # type: ignore[arg-type]
    assert len(client.calls) == 1
