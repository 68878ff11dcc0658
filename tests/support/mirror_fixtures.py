"""Put rows straight into the mirror for graph and triage tests (no IMAP needed)."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

from app.mail.scores import UNSCORED, score_row

UIDVALIDITY = 1000

_COLUMNS = (
    "folder",
    "uidvalidity",
    "uid",
    "message_id",
    "from_addr",
    "from_name",
    "to_addrs",
    "cc_addrs",
    "to_display",
    "cc_display",
    "subject",
    "date",
    "flags",
    "labels",
    "body_excerpt",
    "list_unsubscribe",
    "list_id",
    "precedence",
    "auto_submitted",
    "mentions_you",
    "mention_identity",
    *UNSCORED,
)


def _as_synced(row: dict[str, Any]) -> dict[str, Any]:
    """The "mentions you" verdict a sync with the default identity would store
    (from what the row holds), unless the test set its own."""
    from app.config import Settings
    from app.mail.identity import Identity

    me = Identity.from_settings(Settings())
    if not ("mentions_you" in row and "mention_identity" in row):
        named = me.mentioned_in(row["subject"]) or me.mentioned_in(row["body_excerpt"])
        row = {"mentions_you": named, "mention_identity": me.fingerprint, **row}
    if "scores_version" in row:  # the test stores its own scores (or none)
        return {**UNSCORED, **row}
    # The scores a sync would compute at ingest (app/mail/scores.py).
    return {**row, **score_row(SimpleNamespace(**row), me).columns()}


def email(uid: int, **fields: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "folder": "INBOX",
        "uidvalidity": UIDVALIDITY,
        "uid": uid,
        "message_id": f"<m{uid}@test>",
        "from_addr": "someone@example.org",
        "from_name": "Someone",
        "to_addrs": ["alex.roy@example.com"],
        "cc_addrs": [],
        "to_display": "",
        "cc_display": "",
        "subject": f"Message {uid}",
        "date": datetime(2026, 11, 20, 9, 0, tzinfo=UTC),
        "flags": [],
        "labels": [],
        "body_excerpt": "Hello.",
        "list_unsubscribe": None,
        "list_id": None,
        "precedence": None,
        "auto_submitted": None,
    }
    row.update(fields)
    return row


async def insert_emails(pool: Any, rows: list[dict[str, Any]]) -> None:
    rows = [_as_synced(r) for r in rows]
    cols = ", ".join(_COLUMNS)
    params = ", ".join(f"%({c})s" for c in _COLUMNS)
    async with pool.connection() as conn:
        for folder, validity in {(r["folder"], r["uidvalidity"]) for r in rows}:
            await conn.execute(
                "INSERT INTO mail_folders (folder, uidvalidity, last_seen_uid) VALUES (%s, %s, 0) "
                "ON CONFLICT (folder) DO NOTHING",
                (folder, validity),
            )
        async with conn.cursor() as cur:
            await cur.executemany(f"INSERT INTO emails ({cols}) VALUES ({params})", rows)


def github(uid: int, **kw: Any) -> dict[str, Any]:
    base = {
        "from_addr": "notifications@github.com",
        "from_name": "GitHub",
        "to_addrs": ["piper/app@noreply.github.com"],
        "subject": f"[piper/app] Issue #{uid} updated",
        "list_id": "<app.piper.github.com>",
        "list_unsubscribe": "<https://github.com/unsub>",
        "auto_submitted": None,
        "body_excerpt": "You are receiving this because you are subscribed to this thread.",
    }
    base.update(kw)
    return email(uid, **base)
