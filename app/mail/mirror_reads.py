"""Reads of the mailbox mirror for the web and the graph (never IMAP)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg_pool import AsyncConnectionPool

from app.db.queries import query
from app.mail.message_ref import MessageRef


@dataclass(frozen=True)
class EmailRow:
    folder: str
    uidvalidity: int
    uid: int
    message_id: str | None
    from_addr: str | None
    from_name: str | None
    to_addrs: list[str]
    cc_addrs: list[str]
    to_display: str
    cc_display: str
    subject: str
    date: datetime | None
    flags: list[str]
    labels: list[str]
    body_excerpt: str
    list_unsubscribe: str | None
    list_id: str | None
    precedence: str | None
    auto_submitted: str | None
    # The executor's verdict over the whole message (not just the excerpt) and
    # the identity fingerprint it was decided against; None = not checked.
    mentions_you: bool | None = None
    mention_identity: str | None = None
    # Mirrored from Gmail (the row has an X-GM-MSGID): moves there are label changes.
    gmail: bool = False

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> EmailRow:
        return cls(**{k: row[k] for k in cls.__dataclass_fields__ if k in row})

    @property
    def ref(self) -> MessageRef:
        return MessageRef(self.folder, self.uidvalidity, self.uid)

    @property
    def id(self) -> str:
        return self.ref.id

    @property
    def unread(self) -> bool:
        return "\\Seen" not in self.flags

    @property
    def sender(self) -> str:
        if self.from_name and self.from_addr:
            return f"{self.from_name} <{self.from_addr}>"
        return self.from_addr or self.from_name or ""

    def identity(self) -> dict[str, Any]:
        return {
            "folder": self.folder,
            "uidvalidity": self.uidvalidity,
            "uid": self.uid,
            "message_id": self.message_id,
            "subject": self.subject,
        }

    def card(self, *, with_body: bool = False) -> dict[str, Any]:
        """What an approval shows of a message (SPEC §8)."""
        shown: dict[str, Any] = {
            "id": self.id,
            "folder": self.folder,
            "uid": self.uid,
            "uidvalidity": self.uidvalidity,
            "date": self.date.isoformat() if self.date else None,
            "from": self.sender,
            "to": self.to_display or ", ".join(self.to_addrs),
            "cc": self.cc_display or ", ".join(self.cc_addrs),
            "subject": self.subject,
            "unread": self.unread,
            "message_id": self.message_id,
        }
        if with_body:
            shown["body_preview"] = self.body_excerpt[:300]
        return shown


async def search_emails(
    pool: AsyncConnectionPool,
    *,
    words: Sequence[str] = (),
    from_contains: str | None = None,
    subject_contains: str | None = None,
    unread: bool | None = None,
    folder: str | None = "INBOX",
    limit: int = 50,
) -> list[EmailRow]:
    params = {
        "words": [w for w in words if w],
        "from_contains": from_contains or None,
        "subject_contains": subject_contains or None,
        "unread": unread,
        "folder": folder,
        "limit": max(1, min(limit, 1000)),
    }
    async with pool.connection() as conn:
        rows = await (await conn.execute(query("search_emails"), params)).fetchall()
    return [EmailRow.from_row(r) for r in rows]


async def emails_by_refs(pool: AsyncConnectionPool, refs: Iterable[MessageRef]) -> list[EmailRow]:
    refs = list(refs)
    if not refs:
        return []
    params = {
        "folders": [r.folder for r in refs],
        "uidvalidities": [r.uidvalidity for r in refs],
        "uids": [r.uid for r in refs],
    }
    async with pool.connection() as conn:
        rows = await (await conn.execute(query("emails_by_identity"), params)).fetchall()
    return [EmailRow.from_row(r) for r in rows]


async def folder_emails(
    pool: AsyncConnectionPool, folder: str = "INBOX", limit: int = 20_000
) -> list[EmailRow]:
    async with pool.connection() as conn:
        rows = await (
            await conn.execute(query("folder_emails"), {"folder": folder, "limit": limit})
        ).fetchall()
    return [EmailRow.from_row(r) for r in rows]


async def mirror_counts(pool: AsyncConnectionPool) -> list[dict[str, Any]]:
    async with pool.connection() as conn:
        return await (await conn.execute(query("mirror_counts"))).fetchall()


@dataclass(frozen=True)
class ScoredRow:
    """A row as triage and /clean list it, with the scores stored at ingest."""

    folder: str
    uidvalidity: int
    uid: int
    date: datetime | None
    from_addr: str | None
    from_name: str | None
    subject: str
    flags: list[str]
    category: str | None
    confidence: float
    reasons: list[str]
    fresh: bool  # scored under the current rules and identity

    @property
    def id(self) -> str:
        return f"{self.folder}:{self.uidvalidity}:{self.uid}"

    @property
    def unread(self) -> bool:
        return "\\Seen" not in self.flags

    @property
    def sender(self) -> str:
        if self.from_name and self.from_addr:
            return f"{self.from_name} <{self.from_addr}>"
        return self.from_addr or self.from_name or ""


def _scored(row: dict[str, Any], prefix: str, fresh: bool | None = None) -> ScoredRow:
    # Stored as `real`: round back to what the rules computed (3 decimals).
    confidence = row[f"{prefix}_confidence"]
    return ScoredRow(
        folder=row["folder"],
        uidvalidity=row["uidvalidity"],
        uid=row["uid"],
        date=row["date"],
        from_addr=row["from_addr"],
        from_name=row["from_name"],
        subject=row["subject"],
        flags=list(row["flags"] or []),
        category=row[f"{prefix}_category"],
        confidence=round(float(confidence or 0.0), 3),
        reasons=list(row.get("triage_reasons") or row.get("clean_signals") or []),
        fresh=bool(row["fresh"]) if fresh is None else fresh,
    )


async def top_by_triage(
    pool: AsyncConnectionPool,
    *,
    folder: str,
    category: str | None,
    limit: int,
    version: int,
    fingerprint: str,
    day: tuple[datetime, datetime] | None = None,
    unread: bool = False,
    zoom: bool = False,
) -> list[ScoredRow]:
    """The highest stored triage confidences (ties: newest first), whole folder."""
    params = {
        "folder": folder,
        "category": category,
        "limit": limit,
        "version": version,
        "fingerprint": fingerprint,
        "day_start": day[0] if day else None,
        "day_end": day[1] if day else None,
        "unread": unread,
        "zoom": zoom,
    }
    if zoom:
        name = "triage_top_zoom"
    else:
        name = "triage_top_any" if category is None else "triage_top_category"
    async with pool.connection() as conn:
        rows = await (await conn.execute(query(name), params)).fetchall()
    return [_scored(r, "triage") for r in rows]


async def stale_score_count(
    pool: AsyncConnectionPool, *, folder: str, version: int, fingerprint: str
) -> int:
    params = {"folder": folder, "version": version, "fingerprint": fingerprint}
    async with pool.connection() as conn:
        row = await (await conn.execute(query("scores_stale_in_folder"), params)).fetchone()
    return int(row["n"]) if row else 0


async def clean_candidates(
    pool: AsyncConnectionPool, *, folder: str, limit: int, version: int, fingerprint: str
) -> tuple[list[ScoredRow], dict[str, int]]:
    """Current /clean candidates, most confident first, and what was looked at:
    {scanned, direct (involves the person or flagged), not_checked (stale)}."""
    params = {"folder": folder, "limit": limit, "version": version, "fingerprint": fingerprint}

    async def fetch(name: str) -> list[dict[str, Any]]:
        async with pool.connection() as conn:
            return await (await conn.execute(query(name), params)).fetchall()

    # Two connections, so the counts run while the candidates are read.
    rows, summaries = await asyncio.gather(fetch("clean_candidates"), fetch("clean_summary"))
    summary = summaries[0] if summaries else None
    counts = {k: int((summary or {}).get(k) or 0) for k in ("scanned", "direct", "not_checked")}
    return [_scored(r, "clean", fresh=True) for r in rows], counts
