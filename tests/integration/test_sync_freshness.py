"""Sync sees the server as it is now, on a long-lived worker connection.

One executor with one worker (so every job reuses the same IMAP connection)
runs sync after sync while another connection appends, flags and expunges;
after each sync the mirror equals the server. Dovecot answers STATUS of the
folder a connection has selected from that session's old view, so a sync
that trusted it would report "unchanged" and miss the new mail.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any

import imapclient
import pytest

from app.config import ImapAccount
from app.jobs.models import Job, JobStatus, JobType
from app.jobs.store import JobStore
from executor.imap_session import ImapSession
from tests.integration.test_executor_sync import seed
from tests.support.executor_harness import (
    imap_connect,
    mirror_state,
    running_executor,
    server_state,
    wait_for_job,
)


async def sync_now(store: JobStore, **payload: Any) -> Job:
    job = await store.enqueue("sync", payload or None)
    done = await wait_for_job(store, job.job_id)
    assert done.status is JobStatus.COMPLETED, done.error
    return done


async def approved(
    store: JobStore, job_type: JobType, rows: list[dict[str, Any]], **params: Any
) -> Job:
    """A mutation job the way the product makes one: from a recorded approval."""
    messages = [
        {k: r[k] for k in ("folder", "uidvalidity", "uid", "message_id", "subject")} for r in rows
    ]
    approval = await store.record_approval(
        thread_id="t",
        interrupt_id=f"i-{uuid.uuid4().hex}",
        action=job_type.value,
        params=params,
        messages=messages,
    )
    job = await store.enqueue_approved(approval.approval_id)
    assert job is not None
    return job


async def mirror_rows(
    pool: Any, folder: str, limit: int, where: str = "TRUE"
) -> list[dict[str, Any]]:
    async with pool.connection() as conn:
        return await (
            await conn.execute(
                "SELECT folder, uidvalidity, uid, message_id, subject, flags FROM emails "
                f"WHERE folder = %s AND {where} ORDER BY uid LIMIT %s",
                (folder, limit),
            )
        ).fetchall()


def on_server(account: ImapAccount, change: Callable[[imapclient.IMAPClient], None]) -> None:
    client = imap_connect(account)
    try:
        change(client)
    finally:
        client.logout()


def append_one(subject: str) -> Callable[[imapclient.IMAPClient], None]:
    def change(client: imapclient.IMAPClient) -> None:
        client.append(
            "INBOX",
            (
                f"From: late@example.com\r\nTo: alex.roy@example.com\r\nSubject: {subject}\r\n"
                f"Message-ID: <{uuid.uuid4().hex}@example.com>\r\n\r\nhello\r\n"
            ).encode(),
        )

    return change


def flag_some(client: imapclient.IMAPClient) -> None:
    client.select_folder("INBOX")
    uids = sorted(client.search("ALL"))
    client.add_flags(uids[:2], [b"\\Flagged"])
    client.remove_flags(uids[2:4], [b"\\Seen"])
    client.add_flags(uids[4:6], [b"\\Seen", b"Later"])


def expunge_some(client: imapclient.IMAPClient) -> None:
    client.select_folder("INBOX")
    uids = sorted(client.search("ALL"))
    client.delete_messages([uids[1], uids[-1]])
    client.expunge()


@pytest.fixture(params=[True, False], ids=["condstore", "flag-scan"])
def condstore(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    """Run each test with CONDSTORE (SEARCH MODSEQ) and without it (full flag scan)."""
    if not request.param:
        connect = ImapSession._connect_blocking

        def without_condstore(self: ImapSession) -> imapclient.IMAPClient:
            client = connect(self)
            self.condstore = False
            return client

        monkeypatch.setattr(ImapSession, "_connect_blocking", without_condstore)
    return bool(request.param)


async def test_the_same_worker_connection_sees_appends_flags_and_expunges_between_syncs(
    store: JobStore, pool: Any, imap_account: ImapAccount, condstore: bool
) -> None:
    await asyncio.to_thread(seed, imap_account, 60)
    async with running_executor(str(pool.conninfo), imap_account, workers=1) as executor:
        first = await sync_now(store)
        assert await mirror_state(pool) == await asyncio.to_thread(server_state, imap_account)
        connection = executor.slots[0].imap.client
        assert connection is not None

        steps: list[tuple[str, Callable[[imapclient.IMAPClient], None]]] = [
            ("append", append_one("arrived after the first sync")),
            ("flag", flag_some),
            ("expunge", expunge_some),
            ("append again", append_one("and another")),
        ]
        for name, change in steps:
            await asyncio.to_thread(on_server, imap_account, change)
            done = await sync_now(store)
            server = await asyncio.to_thread(server_state, imap_account)
            assert await mirror_state(pool) == server, f"mirror differs after {name}"
            if name.startswith("append"):
                assert done.processed == 1, f"{name}: the new message was not fetched"
        # Every sync ran on the one connection the first sync opened.
        assert executor.slots[0].imap.client is connection
    assert first.processed == 60


async def test_a_mutation_that_selected_a_folder_read_write_does_not_blind_the_next_sync(
    store: JobStore, pool: Any, imap_account: ImapAccount, condstore: bool
) -> None:
    await asyncio.to_thread(seed, imap_account, 40)
    async with running_executor(str(pool.conninfo), imap_account, workers=1):
        await sync_now(store)
        rows = await mirror_rows(pool, "INBOX", 3, "NOT ('\\Seen' = ANY (flags))")
        assert rows
        job = await approved(store, JobType.MARK_READ, rows)
        done = await wait_for_job(store, job.job_id)
        assert done.status is JobStatus.COMPLETED, done.error
        # The worker's connection now has INBOX selected read-write.
        await asyncio.to_thread(on_server, imap_account, append_one("after the mutation"))
        await asyncio.to_thread(on_server, imap_account, flag_some)
        after = await sync_now(store)
        assert after.processed == 1
        assert await mirror_state(pool) == await asyncio.to_thread(server_state, imap_account)
        await asyncio.to_thread(on_server, imap_account, expunge_some)
        await sync_now(store)
        assert await mirror_state(pool) == await asyncio.to_thread(server_state, imap_account)


async def test_an_unchanged_mailbox_is_still_skipped_on_a_reused_connection(
    store: JobStore, pool: Any, imap_account: ImapAccount
) -> None:
    """Leaving folders before STATUS must not cost the fast path its speed."""
    await asyncio.to_thread(seed, imap_account, 60)
    async with running_executor(str(pool.conninfo), imap_account, workers=1):
        await sync_now(store)
        again = await sync_now(store)
    assert again.processed == 0
    events = await store.events_after(again.job_id)
    assert not [e for e in events if e.data.get("phase") in ("fetch", "folder_done")]


@pytest.mark.parametrize("phase", ["flag_changes", "fetch_raw"])
async def test_flag_news_about_another_message_during_a_sync_fetch_is_not_filed_under_an_asked_uid(
    store: JobStore,
    pool: Any,
    imap_account: ImapAccount,
    condstore: bool,
    monkeypatch: pytest.MonkeyPatch,
    phase: str,
) -> None:
    """INBOX lost its first three messages, so sequence n is UID n + 3. Right
    before the sync's UID FETCH, another connection flags the message at
    sequence s while UID s is among the UIDs fetched: Dovecot then slips
    `* s FETCH (FLAGS ...)` without a UID into the answer (see
    test_imap_protocol.py), which imapclient files under UID s. The mirror
    must still equal the server after that one sync."""
    import executor.handlers.sync as sync_handler

    def inbox_only(client: imapclient.IMAPClient) -> None:
        append_many(client, 30)
        client.select_folder("INBOX")
        uids = sorted(client.search("ALL"))
        client.delete_messages(uids[:3])
        client.expunge()

    await asyncio.to_thread(on_server, imap_account, inbox_only)
    async with running_executor(str(pool.conninfo), imap_account, workers=1):
        await sync_now(store, folders=["INBOX"])

        def flag_at(seq: int) -> Callable[[imapclient.IMAPClient], None]:
            def change(client: imapclient.IMAPClient) -> None:
                client.select_folder("INBOX")
                uid = sorted(client.search("ALL"))[seq - 1]
                client.add_flags([uid], [b"\\Flagged", b"Elsewhere"])

            return change

        if phase == "flag_changes":
            # UIDs 4..15 (sequences 1..12) change, so the flag pass asks for them;
            # then the message at sequence 10 (UID 13) changes mid-pass.
            def early(client: imapclient.IMAPClient) -> None:
                client.select_folder("INBOX")
                client.add_flags(sorted(client.search("ALL"))[:12], [b"\\Answered"])

            await asyncio.to_thread(on_server, imap_account, early)
            news = flag_at(10)
        else:
            # 10 new messages get UIDs 31..40 at sequences 28..37: UIDs 31..37 are
            # also sequence numbers, and sequence 31 is UID 34.
            await asyncio.to_thread(on_server, imap_account, lambda c: append_many(c, 10))
            news = flag_at(31)

        original = getattr(sync_handler, phase)
        fired: list[bool] = []

        def hooked(fetcher: Any, *args: Any) -> Any:
            real = fetcher.fetch

            def fetch_after_news(*a: Any, **kw: Any) -> Any:
                if not fired:
                    fired.append(True)
                    on_server(imap_account, news)
                return real(*a, **kw)

            fetcher.fetch = fetch_after_news
            try:
                return original(fetcher, *args)
            finally:
                del fetcher.fetch

        monkeypatch.setattr(sync_handler, phase, hooked)
        await sync_now(store, folders=["INBOX"])
        assert fired
        server = await asyncio.to_thread(server_state, imap_account, ["INBOX"])
        assert (await mirror_state(pool))["INBOX"] == server["INBOX"]


def append_many(client: imapclient.IMAPClient, count: int) -> None:
    for _ in range(count):
        append_one("plain")(client)
