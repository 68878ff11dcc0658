"""Reads of the mailbox mirror for the web and the graph (never IMAP)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg_pool import AsyncConnectionPool

from app.db.queries import query


@dataclass(frozen=True)
class EmailRef:
    """A message's exact identity on the server: what approvals name."""

    folder: str
    uidvalidity: int
    uid: int

    @property
    def id(self) -> str:
        return f"{self.folder}:{self.uidvalidity}:{self.uid}"

    @classmethod
    def parse(cls, value: str | dict[str, Any]) -> EmailRef:
        if isinstance(value, dict):
            return cls(str(value["folder"]), int(value["uidvalidity"]), int(value["uid"]))
        folder, validity, uid = str(value).rsplit(":", 2)
        if not folder:
            raise ValueError(f"bad message id {value!r}")
        return cls(folder, int(validity), int(uid))


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

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> EmailRow:
        return cls(**{k: row[k] for k in cls.__dataclass_fields__ if k in row})

    @property
    def ref(self) -> EmailRef:
        return EmailRef(self.folder, self.uidvalidity, self.uid)

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


async def emails_by_refs(pool: AsyncConnectionPool, refs: Iterable[EmailRef]) -> list[EmailRow]:
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
