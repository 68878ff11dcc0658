"""The mention search asked a stretch ahead gives every truncated message the
verdict a search of its own batch would have given, in fewer round trips.

A fake server evaluates the SEARCH keys the product sends (UID sets, LARGER,
OR'ed BODY substrings, a refused charset) over messages of its own; the real
Dovecot round trip is in tests/integration/test_mentions.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from imapclient.exceptions import IMAPClientError

from app.mail.identity import Identity
from executor.imap_fetch import chunks
from executor.mentions import MentionCheck, SearchAhead
from executor.parsing import RawMessage

PREFIX = 100
ALEX = Identity("alex.roy@example.com", "Alex Roy")
ZOE = Identity("zo@x.example", "Zoë Ørsted")


@dataclass(frozen=True)
class Stored:
    size: int  # what LARGER compares (a server may compare its on-disk size)
    text: str  # what BODY searches
    fetched_size: int | None  # RFC822.SIZE as the FETCH gave it


def _uids(spec: str) -> set[int]:
    out: set[int] = set()
    for part in spec.split(","):
        lo, _, hi = part.partition(":")
        out.update(range(int(lo), int(hi or lo) + 1))
    return out


class FakeServer:
    def __init__(self, messages: dict[int, Stored], refuse_utf8: bool = False) -> None:
        self.messages = messages
        self.refuse_utf8 = refuse_utf8
        self.searches = 0

    def search(self, criteria: list[Any], charset: str | None = None) -> list[int]:
        self.searches += 1
        if charset == "UTF-8" and self.refuse_utf8:
            raise IMAPClientError("SEARCH command error: NO [BADCHARSET (US-ASCII)]")
        keys = list(criteria)
        assert keys[0] == "UID"
        wanted = _uids(keys[1])
        keys = keys[2:]
        larger = None
        if keys[:1] == ["LARGER"]:
            larger, keys = int(keys[1]), keys[2:]
        terms = [k for k in keys if k not in ("OR", "BODY")]
        return [
            uid
            for uid, m in self.messages.items()
            if uid in wanted
            and (larger is None or m.size > larger)
            and any(t.casefold() in m.text.casefold() for t in terms)
        ]


def raws_of(server: FakeServer, uids: list[int]) -> list[RawMessage]:
    # A cut message got PREFIX bytes; the rest came whole.
    out = []
    for uid in uids:
        m = server.messages[uid]
        got = min(m.size, PREFIX)
        out.append(RawMessage(uid, (), None, m.fetched_size, None, b"x" * got))
    return out


def verdicts(
    server: FakeServer, check: MentionCheck, plan: list[int], batch: int, ahead: bool
) -> dict[int, bool | None]:
    search_ahead = (
        SearchAhead(plan, larger=PREFIX, window=batch * 3, most=batch * 3) if ahead else None
    )
    out: dict[int, bool | None] = {}
    for uids in chunks(plan, batch):
        for r in check.ask_server(server, raws_of(server, uids), search_ahead):  # type: ignore[arg-type]
            if r.truncated:
                out[r.uid] = r.server_mentions
    return out


message = st.builds(
    lambda size, named, odd: (size, named, odd),
    st.sampled_from([10, PREFIX, PREFIX + 1, 5 * PREFIX]),
    st.booleans(),
    st.sampled_from(["same", "none", "smaller", "on disk"]),
)


@settings(max_examples=300, deadline=None)
@given(
    drawn=st.lists(message, min_size=1, max_size=60),
    gaps=st.lists(st.integers(1, 3), min_size=60, max_size=60),
    batch=st.integers(1, 12),
    identity=st.sampled_from([ALEX, ZOE]),
    refuse_utf8=st.booleans(),
)
def test_asking_ahead_gives_each_cut_message_its_own_batch_verdict(
    drawn: list[tuple[int, bool, str]],
    gaps: list[int],
    batch: int,
    identity: Identity,
    refuse_utf8: bool,
) -> None:
    messages: dict[int, Stored] = {}
    uid = 0
    name = "Zoë Ørsted" if identity is ZOE else "Alex"
    for (size, named, odd), gap in zip(drawn, gaps, strict=False):
        uid += gap  # expunged UIDs in between
        fetched = {"same": size, "none": None, "smaller": min(size, PREFIX), "on disk": size}[odd]
        # "on disk": LARGER compares a size down to half the FETCH's (LF line ends).
        searched = (size + 1) // 2 if odd == "on disk" else size
        messages[uid] = Stored(searched, f"hello {name}" if named else "hello", fetched)
    plan = sorted(messages)
    check = MentionCheck(identity)
    per_batch = FakeServer(messages, refuse_utf8)
    ahead = FakeServer(messages, refuse_utf8)
    assert verdicts(ahead, check, plan, batch, ahead=True) == verdicts(
        per_batch, check, plan, batch, ahead=False
    )


def test_a_far_server_is_asked_once_per_stretch_not_once_per_batch() -> None:
    # Every batch of 10 holds one long message naming nobody.
    messages = {
        uid: Stored(
            5 * PREFIX if uid % 10 == 0 else 10, "hello", 5 * PREFIX if uid % 10 == 0 else 10
        )
        for uid in range(1, 201)
    }
    plan = sorted(messages)
    check = MentionCheck(ALEX)
    per_batch, ahead = FakeServer(messages), FakeServer(messages)
    found = verdicts(ahead, check, plan, 10, ahead=True)
    assert found == verdicts(per_batch, check, plan, 10, ahead=False)
    assert set(found.values()) == {False} and len(found) == 20
    assert per_batch.searches == 20
    assert ahead.searches == 7  # stretches of 30 UIDs over 200


def test_a_search_ahead_stays_inside_the_plan_and_answers_only_what_it_covered() -> None:
    messages = {
        uid: Stored(5 * PREFIX, "Alex" if uid == 7 else "no", 5 * PREFIX) for uid in range(1, 11)
    }
    server = FakeServer(messages)
    ahead = SearchAhead([3, 4, 7], larger=PREFIX, window=2, most=2)
    got = ahead.verdicts(server, raws_of(server, [3]), ["Alex"])  # type: ignore[arg-type]
    assert (ahead.lo, ahead.hi) == (3, 4) and got == {3: False}
    # 7 lies beyond: a new stretch, from 7.
    got = ahead.verdicts(server, raws_of(server, [7]), ["Alex"])  # type: ignore[arg-type]
    assert (ahead.lo, ahead.hi) == (7, 7) and got == {7: True} and ahead.searches == 2


def test_quick_searches_look_further_ahead_and_slow_ones_less_far(
    monkeypatch: Any,
) -> None:
    import executor.mentions as mentions

    messages = {uid: Stored(5 * PREFIX, "no", 5 * PREFIX) for uid in range(1, 5001)}
    server = FakeServer(messages)
    ahead = SearchAhead(sorted(messages), larger=PREFIX, window=100, most=800)
    ahead.verdicts(server, raws_of(server, [1]), ["Alex"])  # type: ignore[arg-type]
    assert (ahead.lo, ahead.hi, ahead.window) == (1, 100, 200)  # quick: twice as far next
    for uid in (101, 301, 701):
        ahead.verdicts(server, raws_of(server, [uid]), ["Alex"])  # type: ignore[arg-type]
    assert (ahead.lo, ahead.hi, ahead.window) == (701, 1500, 800)  # never past `most`
    clock = iter([0.0, 4.0])  # a search that took 4 s: a quarter as far next
    monkeypatch.setattr(mentions.time, "monotonic", lambda: next(clock))
    ahead.verdicts(server, raws_of(server, [1501]), ["Alex"])  # type: ignore[arg-type]
    assert ahead.window == 200
    # A window smaller than the batch at hand still covers the whole batch.
    ahead.window = 1
    monkeypatch.setattr(mentions.time, "monotonic", lambda: 0.0)
    got = ahead.verdicts(server, raws_of(server, [3000, 3001, 3002]), ["Alex"])  # type: ignore[arg-type]
    assert (ahead.lo, ahead.hi) == (3000, 3002) and got == {3000: False, 3001: False, 3002: False}
