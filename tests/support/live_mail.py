"""Mail arriving from elsewhere, for the live-mirror tests: messages appended
by another IMAP client, changes made on the server, and waiting for the mirror."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import imapclient

from app.config import ImapAccount
from tests.support.executor_harness import imap_connect


def message(subject: str, *, sender: str = "Sender <sender@example.org>") -> bytes:
    mid = f"<{uuid.uuid4().hex}@live.test>"
    return (
        f"From: {sender}\r\nTo: alex.roy@example.com\r\nSubject: {subject}\r\n"
        f"Message-ID: {mid}\r\nDate: Tue, 01 Dec 2026 10:00:00 +0000\r\n\r\n"
        f"Body of {subject}\r\n"
    ).encode()


def append(account: ImapAccount, *subjects: str, folder: str = "INBOX") -> None:
    client = imap_connect(account)
    try:
        for subject in subjects:
            client.append(folder, message(subject))
    finally:
        client.logout()


def on_server(account: ImapAccount, action: Callable[[imapclient.IMAPClient], Any]) -> Any:
    client = imap_connect(account)
    try:
        client.select_folder("INBOX")
        return action(client)
    finally:
        client.logout()


async def mirrored_subjects(pool: Any, folder: str = "INBOX") -> dict[str, int]:
    async with pool.connection() as conn:
        rows = await (
            await conn.execute(
                "SELECT e.subject, e.uid FROM emails e JOIN mail_folders f "
                "ON f.folder = e.folder AND f.uidvalidity = e.uidvalidity WHERE e.folder = %s",
                (folder,),
            )
        ).fetchall()
    return {r["subject"]: r["uid"] for r in rows}


async def mirrored_flags(pool: Any, uid: int) -> set[str]:
    async with pool.connection() as conn:
        row = await (
            await conn.execute(
                "SELECT flags FROM emails WHERE folder = 'INBOX' AND uid = %s", (uid,)
            )
        ).fetchone()
    return set(row["flags"]) if row else set()


async def eventually(
    check: Callable[[], Awaitable[bool]], timeout: float, what: str, step: float = 0.02
) -> float:
    """Seconds until `check()` held; fails after `timeout`."""
    started = time.monotonic()
    while not await check():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"{what}: not within {timeout}s")
        await asyncio.sleep(step)
    return time.monotonic() - started
