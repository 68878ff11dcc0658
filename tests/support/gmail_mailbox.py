"""Helpers for the Gmail tests: a seeded double, its account, and both sides' state.

The double (tests/support/gmail_double.py) logs in with the password path
(`piper@gmail.test` / `app-password`); OAuth2 sign-in is tested on its own.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import imapclient
import pytest

from app.config import ImapAccount
from app.jobs.models import JobStatus
from app.jobs.store import JobStore
from executor.gmail import decode_labels
from tests.support.executor_harness import executor_settings, running_executor, wait_for_job
from tests.support.gmail_double import (
    ALL_MAIL,
    GmailDouble,
    GmailMessage,
    gmail_storage,
    node_available,
)

USER = "piper@gmail.test"
PASSWORD = "app-password"
SENT = "[Gmail]/Sent Mail"

needs_node = pytest.mark.skipif(
    not node_available(), reason="the Gmail double needs node and `npm ci` (./scripts/setup.sh)"
)

Labelled = dict[int, tuple[frozenset[str], frozenset[str]]]  # msgid -> (labels, flags)


def raw(n: int, *, body: str = "hello", to: str = USER, subject: str | None = None) -> str:
    return (
        f"From: Sender {n} <s{n}@news.example>\r\nTo: {to}\r\n"
        f"Subject: {subject or f'message {n}'}\r\nMessage-ID: <g{n}@news.example>\r\n"
        f"Date: Fri, 13 Sep 2024 15:{n % 60:02d}:00 +0000\r\n"
        f"List-Unsubscribe: <mailto:unsub-{n}@news.example>\r\n\r\n{body} {n}\r\n"
    )


def standard_messages() -> list[GmailMessage]:
    """INBOX mail with and without user labels, archived mail, Sent, Spam, Trash."""
    return [
        GmailMessage(raw(1), labels=["\\Inbox", "Work"]),
        GmailMessage(raw(2), labels=["\\Inbox"], flags=["\\Seen"]),
        GmailMessage(raw(3), labels=["Work"], flags=["\\Seen"]),
        GmailMessage(raw(4), labels=["\\Sent"], flags=["\\Seen"]),
        GmailMessage(raw(5), labels=["\\Spam"]),
        GmailMessage(raw(6), labels=["\\Trash"]),
        GmailMessage(raw(7), labels=["\\Inbox", "\\Important"], thrid=1_600_000_000_000_000_001),
        GmailMessage(raw(8), labels=["\\Inbox", "Receipts"]),
    ]


@contextlib.contextmanager
def double(
    messages: list[GmailMessage] | None = None, *, side_effects: bool = False
) -> Iterator[GmailDouble]:
    with GmailDouble(
        gmail_storage(messages if messages is not None else standard_messages()),
        side_effects=side_effects,
    ) as d:
        yield d


def account(d: GmailDouble) -> ImapAccount:
    return ImapAccount(d.host, d.port, USER, PASSWORD, ssl=False)


def client(d: GmailDouble) -> imapclient.IMAPClient:
    c = imapclient.IMAPClient(d.host, d.port, ssl=False, timeout=10)
    c.login(USER, PASSWORD)
    return c


def labelled(d: GmailDouble, folder: str = ALL_MAIL) -> Labelled:
    """X-GM-MSGID → (labels, flags) as the server shows them in `folder` (read-only)."""
    c = client(d)
    try:
        info = c.select_folder(folder, readonly=True)
        if not info.get(b"EXISTS"):
            return {}
        resp = c.fetch(c.search("ALL"), ["X-GM-MSGID", "X-GM-LABELS", "FLAGS"])
        return {
            int(v[b"X-GM-MSGID"]): (
                frozenset(decode_labels(v[b"X-GM-LABELS"])),
                frozenset(f.decode() for f in v[b"FLAGS"] if f != b"\\Recent"),
            )
            for v in resp.values()
        }
    finally:
        c.logout()


def folder_uids(d: GmailDouble, folder: str) -> dict[int, int]:
    """X-GM-MSGID → UID of the copies in `folder`."""
    c = client(d)
    try:
        info = c.select_folder(folder, readonly=True)
        if not info.get(b"EXISTS"):
            return {}
        resp = c.fetch(c.search("ALL"), ["X-GM-MSGID"])
        return {int(v[b"X-GM-MSGID"]): uid for uid, v in resp.items()}
    finally:
        c.logout()


async def mirror_rows(pool: Any) -> list[dict[str, Any]]:
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT e.folder, e.uidvalidity, e.uid, e.message_id, e.subject, e.flags, e.labels, "
            "e.gm_msgid, e.gm_thrid FROM emails e JOIN mail_folders f "
            "ON f.folder = e.folder AND f.uidvalidity = e.uidvalidity ORDER BY e.folder, e.uid"
        )
        rows = await cur.fetchall()
    for r in rows:
        r["gm_msgid"] = int(r["gm_msgid"]) if r["gm_msgid"] is not None else None
        r["gm_thrid"] = int(r["gm_thrid"]) if r["gm_thrid"] is not None else None
    return rows


async def rows_in(pool: Any, folder: str) -> list[dict[str, Any]]:
    return [r for r in await mirror_rows(pool) if r["folder"] == folder]


async def sync(store: JobStore, pool: Any, d: GmailDouble, **settings: Any) -> dict[str, Any]:
    """One `sync` job run to completion by a real executor; returns its summary."""
    job = await store.enqueue("sync")
    async with running_executor(
        str(pool.conninfo), account(d), workers=1, settings=executor_settings(**settings)
    ):
        done = await wait_for_job(store, job.job_id)
    assert done.status is JobStatus.COMPLETED, done.error
    events = await store.events_after(job.job_id, 0)
    return events[-1].data["summary"]
