"""A sync batch reaches the mirror in one statement (executor/mirror_writes.py,
`upsert_emails`): every column as the message had it, NULLs kept NULL, a row
already mirrored updated in place, and the live page's change log counting
every new and updated row once per batch. Real Postgres."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from app.mail.mime import ParsedMessage
from app.mail.scores import SCORES_VERSION, Scores
from executor import mirror_writes as mirror
from executor.mirror_writes import FetchedMessage

FOLDER = "INBOX"
VALIDITY = 7
BIG_MSGID = 2**64 - 1  # X-GM-MSGID is unsigned 64-bit: beyond bigint


def full(uid: int, subject: str) -> FetchedMessage:
    """A message with every column filled, Gmail and scores included."""
    return FetchedMessage(
        uid=uid,
        flags=("\\Seen", "$Work", 'it\'s "quoted"'),
        internal_date=datetime(2024, 3, 1, 9, 30, 15, 123456, tzinfo=timezone(timedelta(hours=5))),
        size=4096,
        modseq=2**40,
        parsed=ParsedMessage(
            message_id="<a@x>",
            in_reply_to="<b@x>",
            from_addr="ann@example.com",
            from_name="Ann Ö. {Brace}",
            to_addrs=("me@example.com", "you@example.com"),
            cc_addrs=("c,d@example.com",),
            to_display="Me <me@example.com>",
            cc_display="C <c,d@example.com>",
            reply_to="r@example.com",
            subject=subject,
            date=datetime(2024, 2, 29, 23, 59, 59, tzinfo=UTC),
            body_excerpt="line one\nline \\two\t☃",
            list_unsubscribe="<mailto:u@x>",
            list_id="<list.x>",
            precedence="bulk",
            auto_submitted="auto-generated",
            has_attachments=True,
        ),
        mentions_you=True,
        mention_identity="fp1",
        scores=Scores(
            triage_category="newsletter",
            triage_confidence=0.85,
            triage_reasons=["List-Id", 'a "reason"'],
            triage_zoom=False,
            clean_candidate=True,
            clean_confidence=0.9,
            clean_category="newsletter",
            clean_signals=[],
            clean_excluded=None,
            clean_direct=False,
        ),
        gm_msgid=BIG_MSGID,
        gm_thrid=BIG_MSGID - 1,
        gm_labels=("\\Important", "Work/Ünï"),
    )


def bare(uid: int) -> FetchedMessage:
    """A message with nothing known: every nullable column NULL, unscored."""
    return FetchedMessage(
        uid=uid, flags=(), internal_date=None, size=None, modseq=None, parsed=ParsedMessage()
    )


async def rows(pool: Any) -> dict[int, dict[str, Any]]:
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT * FROM emails ORDER BY id")
        return {r["uid"]: r for r in await cur.fetchall()}


async def changes(pool: Any) -> list[tuple[str, int]]:
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT kind, n FROM mirror_changes WHERE kind <> 'folder' ORDER BY id"
        )
        return [(r["kind"], r["n"]) for r in await cur.fetchall()]


async def write(pool: Any, messages: list[FetchedMessage]) -> None:
    async with pool.connection() as conn, conn.transaction():
        await mirror.upsert_messages(conn, FOLDER, VALIDITY, messages)


@pytest.fixture
async def folder(pool: Any) -> None:
    async with pool.connection() as conn:
        await mirror.reset_folder(conn, FOLDER, VALIDITY)


async def test_every_column_arrives_as_the_message_had_it(pool: Any, folder: None) -> None:
    await write(pool, [full(1, "first"), bare(2)])
    got = await rows(pool)
    one, two = got[1], got[2]
    m = full(1, "first")
    assert one["flags"] == list(m.flags)
    assert one["labels"] == ["\\Important", "Work/Ünï"]  # X-GM-LABELS as given
    assert one["to_addrs"] == ["me@example.com", "you@example.com"]
    assert one["cc_addrs"] == ["c,d@example.com"]
    assert one["from_name"] == "Ann Ö. {Brace}"
    assert one["body_excerpt"] == "line one\nline \\two\t☃"
    assert one["internal_date"] == m.internal_date
    assert one["date"] == m.parsed.date
    assert (one["size"], one["modseq"]) == (4096, 2**40)
    assert (int(one["gm_msgid"]), int(one["gm_thrid"])) == (BIG_MSGID, BIG_MSGID - 1)
    assert (one["mentions_you"], one["mention_identity"]) == (True, "fp1")
    assert one["triage_confidence"] == pytest.approx(0.85)
    assert one["triage_reasons"] == ["List-Id", 'a "reason"']
    assert one["clean_signals"] == [] and one["clean_excluded"] is None
    assert (one["clean_candidate"], one["clean_direct"]) == (True, False)
    assert one["scores_version"] == SCORES_VERSION
    assert one["has_attachments"] is True

    # Nothing known: NULLs stay NULL, NOT NULL columns get the empty values,
    # and the row is unscored (stale) rather than scored from nothing.
    for col in ("message_id", "from_addr", "date", "internal_date", "size", "modseq"):
        assert two[col] is None, col
    for col in ("gm_msgid", "gm_thrid", "mentions_you", "mention_identity"):
        assert two[col] is None, col
    assert (two["flags"], two["labels"], two["to_addrs"]) == ([], [], [])
    assert (two["subject"], two["body_excerpt"]) == ("", "")
    assert (two["scores_version"], two["triage_reasons"], two["clean_signals"]) == (
        None,
        None,
        None,
    )
    assert (two["clean_candidate"], two["clean_excluded"]) == (False, "not scored yet")
    assert one["id"] < two["id"]  # ids follow the batch order


async def test_a_batch_updates_mirrored_rows_and_logs_each_kind_once(
    pool: Any, folder: None
) -> None:
    await write(pool, [full(1, "old"), bare(2)])
    before = await rows(pool)

    # uid 2 is already mirrored (updated in place); uid 3 comes twice in the
    # batch and keeps its last copy; uids 4..6 are new.
    await write(
        pool, [bare(1), full(2, "now full"), full(3, "x"), full(3, "y"), *map(bare, (4, 5, 6))]
    )
    after = await rows(pool)

    assert sorted(after) == [1, 2, 3, 4, 5, 6]
    assert after[2]["id"] == before[2]["id"] and after[2]["subject"] == "now full"
    assert after[1]["id"] == before[1]["id"] and after[1]["gm_msgid"] is None  # as written
    assert after[1]["scores_version"] is None and after[1]["subject"] == ""
    assert after[3]["subject"] == "y"
    assert after[2]["synced_at"] > before[2]["synced_at"]
    # One log row per statement and kind, counting every row: the page's
    # "N new messages" and /api/mirror/events see all four arrivals.
    assert sorted(await changes(pool)) == [("added", 2), ("added", 4), ("updated", 2)]


async def test_an_empty_batch_writes_nothing(pool: Any, folder: None) -> None:
    await write(pool, [])
    assert await rows(pool) == {}
    assert await changes(pool) == []
