"""Writes to the mailbox mirror. Only the executor calls these, always inside a
fenced transaction, so a worker that lost its lease cannot touch the mirror."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from psycopg import AsyncConnection
from psycopg.types.json import Json

from app.db.queries import query
from app.mail.mime import ParsedMessage
from app.mail.scores import SCORES_VERSION, UNSCORED, Scores
from app.quick_init import quick_init


@dataclass(frozen=True)
class FolderCursor:
    folder: str
    uidvalidity: int
    uidnext: int | None
    highestmodseq: int | None
    last_seen_uid: int
    message_count: int

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> FolderCursor:
        return cls(**{k: row[k] for k in cls.__dataclass_fields__})


@quick_init
@dataclass(frozen=True)
class FetchedMessage:
    """One message as fetched and parsed, ready for the mirror."""

    uid: int
    flags: tuple[str, ...]
    internal_date: datetime | None
    size: int | None
    modseq: int | None
    parsed: ParsedMessage
    # Whether the whole message mentions the person (parse + server SEARCH for
    # what the prefix fetch cut off; None: could not be decided), and the
    # fingerprint of the identity it was decided against (None: not checked).
    mentions_you: bool | None = None
    mention_identity: str | None = None
    # Triage and /clean verdict computed at parse time (app/mail/scores.py);
    # None: not scored (no identity), which the row stores as stale.
    scores: Scores | None = None
    # Gmail mode: the message's X-GM-MSGID, X-GM-THRID and X-GM-LABELS (None elsewhere).
    gm_msgid: int | None = None
    gm_thrid: int | None = None
    gm_labels: tuple[str, ...] | None = None


def labels_from_flags(flags: Iterable[str], gmail_labels: Iterable[str] = ()) -> list[str]:
    """Keywords (flags without a backslash) and Gmail labels are the mirror's labels."""
    seen: dict[str, None] = {}
    for value in (*flags, *gmail_labels):
        if value and not value.startswith("\\"):
            seen.setdefault(value, None)
    return list(seen)


async def load_cursors(conn: AsyncConnection[Any]) -> dict[str, FolderCursor]:
    cur = await conn.execute(query("folder_cursors"))
    return {r["folder"]: FolderCursor.from_row(r) for r in await cur.fetchall()}


async def reset_folder(conn: AsyncConnection[Any], folder: str, uidvalidity: int) -> None:
    await conn.execute(query("reset_folder"), {"folder": folder, "uidvalidity": uidvalidity})


async def drop_folder(conn: AsyncConnection[Any], folder: str) -> None:
    await conn.execute(query("drop_folder"), {"folder": folder})


@dataclass(frozen=True)
class EncodedRows:
    """A batch's mirror rows as the JSON `upsert_emails` reads, built where the
    batch was parsed (a parse process), so the process that holds the IMAP
    connection and the fence only sends one parameter per batch."""

    rows_json: bytes | str  # UTF-8 bytes from orjson, or text from json.dumps (`_dumps`)
    uids: tuple[int, ...]  # in the order parsed; a uid named twice keeps its last copy

    @property
    def max_uid(self) -> int | None:
        return max(self.uids) if self.uids else None


def encode_rows(folder: str, uidvalidity: int, messages: Sequence[FetchedMessage]) -> EncodedRows:
    by_uid = {m.uid: _row(folder, uidvalidity, m) for m in messages}
    return EncodedRows(_dumps(list(by_uid.values())), tuple(m.uid for m in messages))


async def upsert_rows(conn: AsyncConnection[Any], encoded: EncodedRows) -> None:
    """Write a batch's rows in one statement, so the mirror-change triggers log
    it once. Idempotent: a row written again (a batch fetched again by a
    retry going on from its cursor) gets the same columns, "mentions you",
    scores and Gmail labels included, all decided from the message."""
    if encoded.uids:
        await conn.execute(query("upsert_emails"), {"rows": Json(encoded.rows_json, dumps=_as_is)})


async def upsert_encoded(
    conn: AsyncConnection[Any], folder: str, uidvalidity: int, encoded: EncodedRows
) -> None:
    """`upsert_rows`, and move the folder's cursor to the batch's highest UID
    in the same transaction."""
    top = encoded.max_uid
    if top is None:
        return
    await upsert_rows(conn, encoded)
    await conn.execute(
        query("advance_cursor"),
        {"folder": folder, "uidvalidity": uidvalidity, "last_seen_uid": top},
    )


async def upsert_messages(
    conn: AsyncConnection[Any], folder: str, uidvalidity: int, messages: Sequence[FetchedMessage]
) -> None:
    """`upsert_encoded` for rows parsed in this process."""
    await upsert_encoded(conn, folder, uidvalidity, encode_rows(folder, uidvalidity, messages))


async def folder_flags(
    conn: AsyncConnection[Any], folder: str, uidvalidity: int
) -> dict[int, tuple[str, ...]]:
    cur = await conn.execute(query("folder_flags"), {"folder": folder, "uidvalidity": uidvalidity})
    return {r["uid"]: tuple(r["flags"]) for r in await cur.fetchall()}


async def folder_state(
    conn: AsyncConnection[Any], folder: str, uidvalidity: int
) -> dict[int, tuple[tuple[str, ...], tuple[str, ...]]]:
    """uid → (flags, labels) of a folder's rows (Gmail: labels change on their own)."""
    cur = await conn.execute(query("folder_state"), {"folder": folder, "uidvalidity": uidvalidity})
    return {r["uid"]: (tuple(r["flags"]), tuple(r["labels"])) for r in await cur.fetchall()}


async def update_flags(
    conn: AsyncConnection[Any],
    folder: str,
    uidvalidity: int,
    changes: Mapping[int, tuple[tuple[str, ...], int | None]],
    *,
    labels: Mapping[int, Sequence[str]] | None = None,
) -> None:
    """New flags of some rows. A Gmail row's labels are its X-GM-LABELS: they
    change only when `labels` names them; elsewhere labels are the keywords."""
    rows = [
        {
            "folder": folder,
            "uidvalidity": uidvalidity,
            "uid": uid,
            "flags": list(flags),
            "labels": labels_from_flags(flags),
            "gm_labels": list(labels[uid]) if labels is not None and uid in labels else None,
            "modseq": modseq,
        }
        for uid, (flags, modseq) in changes.items()
    ]
    if rows:
        async with conn.cursor() as cur:
            await cur.executemany(query("update_flags"), rows)


async def delete_missing(
    conn: AsyncConnection[Any], folder: str, uidvalidity: int, present: Iterable[int], max_uid: int
) -> int:
    cur = await conn.execute(
        query("delete_missing"),
        {
            "folder": folder,
            "uidvalidity": uidvalidity,
            "present": sorted(present),
            "max_uid": max_uid,
        },
    )
    return cur.rowcount


async def finish_folder(
    conn: AsyncConnection[Any],
    folder: str,
    uidvalidity: int,
    uidnext: int | None,
    highestmodseq: int | None,
) -> None:
    await conn.execute(
        query("finish_folder"),
        {
            "folder": folder,
            "uidvalidity": uidvalidity,
            "uidnext": uidnext,
            "highestmodseq": highestmodseq,
        },
    )


def _dumps(value: Any) -> bytes | str:
    """JSON for upsert_emails: timestamps as ISO 8601 (with their offset, or
    none, as psycopg would have sent them), read back by the column's type.

    orjson writes the same text as `json.dumps` below, as UTF-8 bytes, ~5x
    faster (a batch's JSON is a parse process's work); its own timestamps
    differ for offsets with seconds, so it hands them to `datetime.isoformat`
    (a C method: `_iso` would cost a Python call per timestamp). What it
    refuses (a lone surrogate, an integer past 64 bits, anything that is not
    a datetime) goes the old way, to fail or not as it did
    (tests/unit/test_mirror_json.py)."""
    try:
        return orjson.dumps(
            value, default=datetime.isoformat, option=orjson.OPT_PASSTHROUGH_DATETIME
        )
    except TypeError:  # orjson.JSONEncodeError is one
        return json.dumps(value, default=_iso, ensure_ascii=False, separators=(",", ":"))


def _as_is(value: bytes | str) -> bytes | str:
    return value


def _iso(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"cannot store {type(value).__name__} in the mirror")


def _row(folder: str, uidvalidity: int, m: FetchedMessage) -> dict[str, Any]:
    p = m.parsed
    return {
        "folder": folder,
        "uidvalidity": uidvalidity,
        "uid": m.uid,
        "message_id": p.message_id,
        "in_reply_to": p.in_reply_to,
        "from_addr": p.from_addr,
        "from_name": p.from_name,
        "to_addrs": list(p.to_addrs),
        "cc_addrs": list(p.cc_addrs),
        "to_display": p.to_display,
        "cc_display": p.cc_display,
        "reply_to": p.reply_to,
        "subject": p.subject,
        "date": p.date,
        "internal_date": m.internal_date,
        "flags": list(m.flags),
        "labels": list(m.gm_labels) if m.gm_labels is not None else labels_from_flags(m.flags),
        "gm_msgid": m.gm_msgid,
        "gm_thrid": m.gm_thrid,
        "body_excerpt": p.body_excerpt,
        "list_unsubscribe": p.list_unsubscribe,
        "list_id": p.list_id,
        "precedence": p.precedence,
        "auto_submitted": p.auto_submitted,
        "has_attachments": p.has_attachments,
        "size": m.size,
        "modseq": m.modseq,
        "mentions_you": m.mentions_you,
        "mention_identity": m.mention_identity,
        **(m.scores.columns() if m.scores is not None else UNSCORED),
    }


@dataclass(frozen=True)
class StaleMentions:
    """Rows whose verdict was not decided against the current identity."""

    count: int
    max_id: int | None
    fingerprints: tuple[str, ...]  # the stale fingerprints seen ('' = never checked)


async def stale_mentions(conn: AsyncConnection[Any], fingerprint: str) -> StaleMentions:
    cur = await conn.execute(query("mention_stale_summary"), {"fingerprint": fingerprint})
    row = await cur.fetchone()
    if row is None or not row["n"]:
        return StaleMentions(0, None, ())
    return StaleMentions(int(row["n"]), row["max_id"], tuple(sorted(row["fingerprints"])))


async def stale_mention_rows(
    conn: AsyncConnection[Any], fingerprint: str
) -> list[tuple[str, int, list[int]]]:
    """(folder, uidvalidity, uids) of the rows to re-evaluate, folder by folder."""
    cur = await conn.execute(query("mention_stale_rows"), {"fingerprint": fingerprint})
    return [(r["folder"], int(r["uidvalidity"]), list(r["uids"])) for r in await cur.fetchall()]


async def update_mentions(
    conn: AsyncConnection[Any], folder: str, uidvalidity: int, messages: Sequence[FetchedMessage]
) -> None:
    """Store re-evaluated verdicts, the scores computed with them and the
    recipients they were computed from (the rescore job); other columns are
    untouched."""
    rows = [
        {
            "folder": folder,
            "uidvalidity": uidvalidity,
            "uid": m.uid,
            "mentions_you": m.mentions_you,
            "mention_identity": m.mention_identity,
            "to_addrs": list(m.parsed.to_addrs),
            "cc_addrs": list(m.parsed.cc_addrs),
            "to_display": m.parsed.to_display,
            "cc_display": m.parsed.cc_display,
            **(m.scores.columns() if m.scores is not None else UNSCORED),
        }
        for m in messages
    ]
    if rows:
        async with conn.cursor() as cur:
            await cur.executemany(query("update_mentions"), rows)


async def count_folder(conn: AsyncConnection[Any], folder: str, uidvalidity: int) -> int:
    cur = await conn.execute(query("count_folder"), {"folder": folder, "uidvalidity": uidvalidity})
    row = await cur.fetchone()
    return int(row["n"]) if row else 0


async def move_rows(
    conn: AsyncConnection[Any],
    folder: str,
    uidvalidity: int,
    moves: Sequence[tuple[int, int | None, tuple[str, ...]]],
    target: str,
    target_uidvalidity: int | None,
) -> None:
    """Rows follow moved messages: (source uid, target uid or None, new flags)."""
    rows = [
        {
            "folder": folder,
            "uidvalidity": uidvalidity,
            "uid": uid,
            "target": target,
            "target_uidvalidity": target_uidvalidity,
            "target_uid": target_uid,
            "flags": list(flags),
        }
        for uid, target_uid, flags in moves
    ]
    if not rows:
        return
    if target_uidvalidity is not None:
        await conn.execute(
            query("ensure_folder_known"), {"folder": target, "uidvalidity": target_uidvalidity}
        )
    async with conn.cursor() as cur:
        await cur.executemany(query("move_email"), rows)


@dataclass(frozen=True)
class StaleScores:
    """Rows whose stored scores were computed under other rules, or never."""

    count: int
    max_id: int | None


async def stale_scores(conn: AsyncConnection[Any], version: int = SCORES_VERSION) -> StaleScores:
    cur = await conn.execute(query("scores_stale_summary"), {"version": version})
    row = await cur.fetchone()
    if row is None or not row["n"]:
        return StaleScores(0, None)
    return StaleScores(int(row["n"]), row["max_id"])


async def stale_score_rows(
    conn: AsyncConnection[Any], after: int, limit: int, version: int = SCORES_VERSION
) -> list[dict[str, Any]]:
    """The next rows (by id, after `after`) to score again from what the mirror holds."""
    cur = await conn.execute(
        query("scores_stale_batch"), {"version": version, "after": after, "limit": limit}
    )
    return list(await cur.fetchall())


async def update_scores(
    conn: AsyncConnection[Any], scored: Sequence[tuple[dict[str, Any], Scores]]
) -> None:
    """Store recomputed scores; a row rewritten since it was read keeps its own."""
    rows = [{"id": r["id"], "synced_at": r["synced_at"], **sc.columns()} for r, sc in scored]
    if rows:
        async with conn.cursor() as cur:
            await cur.executemany(query("update_scores"), rows)


async def relabel_gmail(
    conn: AsyncConnection[Any],
    changes: Sequence[tuple[int, Sequence[str], Sequence[str]]],
    gone_from: Mapping[int, Sequence[str]],
) -> None:
    """Gmail: after a label change, every mirrored copy of each message
    (X-GM-MSGID, flags, labels) gets the new flags and labels, and the copies
    in folders whose label was removed go (Gmail takes the message out of that
    folder: removing `\\Inbox` ends its INBOX UID)."""
    new = {msgid: (tuple(flags), list(labels)) for msgid, flags, labels in changes}
    if new:
        cur = await conn.execute(query("gmail_copies"), {"gm_msgids": list(new)})
        copies: dict[tuple[str, int], dict[int, int]] = {}
        for r in await cur.fetchall():
            copies.setdefault((r["folder"], r["uidvalidity"]), {})[r["uid"]] = int(r["gm_msgid"])
        for (folder, uidvalidity), uids in copies.items():
            await update_flags(
                conn,
                folder,
                uidvalidity,
                {uid: (new[m][0], None) for uid, m in uids.items()},
                labels={uid: new[m][1] for uid, m in uids.items()},
            )
    drops = [{"gm_msgid": m, "folders": list(f)} for m, f in gone_from.items() if f]
    if drops:
        async with conn.cursor() as cur:
            await cur.executemany(query("gmail_drop_copies"), drops)
