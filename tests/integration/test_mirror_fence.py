"""Mirror rows are fenced per folder: two jobs working on one folder never
interleave "read the server → write the rows", so neither writes a stale state
over the other's. The fence itself (executor/folder_lock.py) against real
Postgres, then jobs against real Postgres and a real Dovecot."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import imapclient
import pytest

from app.config import ImapAccount
from app.db.queries import query
from app.jobs.models import JobStatus, JobType
from app.jobs.store import JobStore
from executor import folder_lock as fence_module
from executor.context import JobCancelled
from executor.folder_lock import folder_lock
from tests.integration.test_sync_freshness import (
    append_many,
    approved,
    mirror_rows,
    on_server,
    sync_now,
)
from tests.support.executor_harness import (
    mirror_state,
    running_executor,
    server_state,
    wait_for_job,
)

REPO = Path(__file__).resolve().parents[2]


@dataclass
class StubCtx:
    """What folder_lock needs from a JobContext: the store, checkpoints, events."""

    store: JobStore
    cancel_seen: bool = False
    events: list[str] = field(default_factory=list)

    def checkpoint(self) -> None:
        if self.cancel_seen:
            raise JobCancelled()

    async def event(self, message: str, **_: Any) -> None:
        self.events.append(message)


async def held(pool: Any, folder: str) -> bool:
    async with pool.connection() as conn:
        row = await (await conn.execute(query("mirror_fence_held"), {"folder": folder})).fetchone()
    return bool(row["held"])


# -- the fence ----------------------------------------------------------------


async def test_one_folders_fence_has_one_holder_and_other_folders_are_free(
    store: JobStore, pool: Any
) -> None:
    first, second, other = StubCtx(store), StubCtx(store), StubCtx(store)
    async with folder_lock(first, "INBOX"):  # type: ignore[arg-type]
        assert await held(pool, "INBOX")
        waiting = asyncio.create_task(_hold(second, "INBOX", 0))
        await asyncio.sleep(0.8)
        assert not waiting.done(), "a second job got the fence of a held folder"
        async with asyncio.timeout(2):
            async with folder_lock(other, "Archive"):  # type: ignore[arg-type]
                pass
    async with asyncio.timeout(5):
        await waiting
    assert not await held(pool, "INBOX")


async def _hold(ctx: StubCtx, folder: str, seconds: float) -> float:
    async with folder_lock(ctx, folder):  # type: ignore[arg-type]
        got = time.monotonic()
        await asyncio.sleep(seconds)
    return got


async def test_a_job_waiting_for_the_fence_stops_when_cancelled_and_says_it_waited(
    store: JobStore, pool: Any
) -> None:
    holder, waiter = StubCtx(store), StubCtx(store)
    async with folder_lock(holder, "INBOX"):  # type: ignore[arg-type]
        task = asyncio.create_task(_hold(waiter, "INBOX", 0))
        await asyncio.sleep(fence_module.WAIT_NOTICE_SECONDS + 0.7)
        waiter.cancel_seen = True
        async with asyncio.timeout(3):
            with pytest.raises(JobCancelled):
                await task
    assert any("waiting for another job" in e for e in waiter.events)
    assert not await held(pool, "INBOX")


async def test_the_fence_of_a_process_killed_with_sigkill_is_released_by_postgres(
    store: JobStore, pool: Any, database_url: str
) -> None:
    script = (
        "import sys, time, psycopg\n"
        "from app.db.queries import query\n"
        "conn = psycopg.connect(sys.argv[1], autocommit=True)\n"
        "conn.execute(query('mirror_fence_wait'), {'folder': 'INBOX'})\n"
        "print('held', flush=True)\n"
        "time.sleep(600)\n"
    )
    proc = _python(script, database_url)
    try:
        assert proc.stdout is not None
        assert (await asyncio.to_thread(proc.stdout.readline)).strip() == b"held"
        assert await held(pool, "INBOX")
        waiter = StubCtx(store)
        task = asyncio.create_task(_hold(waiter, "INBOX", 0))
        await asyncio.sleep(0.8)
        assert not task.done()
        proc.send_signal(signal.SIGKILL)
        async with asyncio.timeout(10):
            await task
    finally:
        proc.kill()
        proc.wait()


def _python(script: str, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", script, *args],
        stdout=subprocess.PIPE,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


async def test_a_holder_that_yields_lets_the_queued_job_in_first(
    store: JobStore, pool: Any
) -> None:
    holder, waiter = StubCtx(store), StubCtx(store)
    async with folder_lock(holder, "INBOX") as fence:  # type: ignore[arg-type]
        task = asyncio.create_task(_hold(waiter, "INBOX", 0.3))
        await asyncio.sleep(0.3)  # the waiter is queued inside Postgres now
        await fence.yield_()
        back = time.monotonic()
        assert fence.held and fence.yields == 1
    got = await task
    assert got < back, "the holder took the fence straight back"


async def test_a_long_holder_is_due_to_yield_only_while_someone_waits(
    store: JobStore, pool: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A first sync drains all its connections to yield: it does so for a job
    that waits for one of its folders, never for nobody."""
    monkeypatch.setattr(fence_module, "YIELD_AFTER_SECONDS", 0.05)
    monkeypatch.setattr(fence_module, "LOOK_EVERY_SECONDS", 0.0)
    holder, waiter, elsewhere = StubCtx(store), StubCtx(store), StubCtx(store)
    async with folder_lock(holder, "INBOX", "Archive") as fence:  # type: ignore[arg-type]
        await asyncio.sleep(0.1)
        other = asyncio.create_task(_hold(elsewhere, "Receipts", 0.5))  # another folder
        await asyncio.sleep(0.2)
        await fence.look_for_waiters()
        assert not fence.due(), "due with nobody waiting for its folders"
        task = asyncio.create_task(_hold(waiter, "Archive", 0))
        await asyncio.sleep(0.3)  # queued inside Postgres now
        await fence.look_for_waiters()
        assert fence.due()
        await fence.yield_()
        assert fence.held and not fence.due(), "taken back: nobody seen waiting yet"
        await task
        await other
        await fence.look_for_waiters()
        assert not fence.due()


async def test_the_fence_connection_returns_to_the_pool_without_the_lock(
    store: JobStore, pool: Any
) -> None:
    for _ in range(3):
        async with folder_lock(StubCtx(store), "INBOX", "Secretary/Auto-Cleaned"):  # type: ignore[arg-type]
            assert await held(pool, "INBOX") and await held(pool, "Secretary/Auto-Cleaned")
    assert not await held(pool, "INBOX")
    assert not await held(pool, "Secretary/Auto-Cleaned")
    with pytest.raises(RuntimeError):
        async with folder_lock(StubCtx(store), "INBOX"):  # type: ignore[arg-type]
            raise RuntimeError("the body failed")
    assert not await held(pool, "INBOX")


# -- jobs ---------------------------------------------------------------------


async def inbox_of(account: ImapAccount, count: int) -> None:
    await asyncio.to_thread(on_server, account, lambda c: append_many(c, count))


def flag_all(flag: bytes, *, remove: bool = False) -> Any:
    def change(client: imapclient.IMAPClient) -> None:
        client.select_folder("INBOX")
        uids = client.search("ALL")
        (client.remove_flags if remove else client.add_flags)(uids, [flag])

    return change


class PausedFlagPass:
    """Holds a sync between reading flags from the server and writing them, so a
    second job gets every chance to change the folder in between."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, pause: float, then: Any = None) -> None:
        import executor.handlers.sync as sync_handler

        self.read = threading.Event()
        self.go_on = threading.Event()
        original = sync_handler.flag_changes

        def paused(*args: Any) -> Any:
            result = original(*args)
            if not self.read.is_set():
                if then is not None:
                    then()
                self.read.set()
                self.go_on.wait(pause)
            return result

        monkeypatch.setattr(sync_handler, "flag_changes", paused)


async def test_mark_read_cannot_land_between_a_syncs_flag_read_and_its_write(
    store: JobStore, pool: Any, imap_account: ImapAccount, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the fence: the sync reads 'unread', mark_read sets \\Seen on the
    server and in the mirror, the sync writes 'unread' back. With it, mark_read
    waits until the sync's pass is written, then changes both."""
    await inbox_of(imap_account, 30)
    async with running_executor(str(pool.conninfo), imap_account, workers=2):
        await sync_now(store, folders=["INBOX"])
        await asyncio.to_thread(on_server, imap_account, flag_all(b"\\Flagged"))
        rows = await mirror_rows(pool, "INBOX", 5)
        pause = PausedFlagPass(monkeypatch, pause=2.5)
        sync = await store.enqueue("sync", {"folders": ["INBOX"]})
        assert await asyncio.to_thread(pause.read.wait, 30)
        job = await approved(store, JobType.MARK_READ, rows)
        done = await wait_for_job(store, job.job_id, timeout=30)
        pause.go_on.set()
        assert done.status is JobStatus.COMPLETED, done.error
        synced = await wait_for_job(store, sync.job_id)
        assert synced.status is JobStatus.COMPLETED, synced.error
    server = await asyncio.to_thread(server_state, imap_account, ["INBOX"])
    assert all("\\Seen" in server["INBOX"][r["uid"]] for r in rows)
    assert (await mirror_state(pool))["INBOX"] == server["INBOX"]
    assert any("waiting for another job" in e.message for e in await store.events_after(job.job_id))


async def test_two_syncs_of_one_folder_cannot_write_an_older_read_over_a_newer_one(
    store: JobStore, pool: Any, imap_account: ImapAccount, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sync A reads flags; the server changes; sync B reads and writes the new
    flags; A must not then write its older read over them."""
    await inbox_of(imap_account, 30)
    async with running_executor(str(pool.conninfo), imap_account, workers=2):
        await sync_now(store, folders=["INBOX"])
        await asyncio.to_thread(on_server, imap_account, flag_all(b"\\Flagged"))
        pause = PausedFlagPass(
            monkeypatch,
            pause=2.5,
            then=lambda: on_server(imap_account, flag_all(b"\\Flagged", remove=True)),
        )
        first = await store.enqueue("sync", {"folders": ["INBOX"]})
        assert await asyncio.to_thread(pause.read.wait, 30)
        second = await store.enqueue("sync")
        done = await wait_for_job(store, second.job_id, timeout=30)
        pause.go_on.set()
        assert done.status is JobStatus.COMPLETED, done.error
        assert (await wait_for_job(store, first.job_id)).status is JobStatus.COMPLETED
    assert await mirror_state(pool) == await asyncio.to_thread(server_state, imap_account)


@pytest.mark.parametrize("job_type", [JobType.CLEAN, JobType.MARK_READ])
async def test_concurrent_sync_and_mutation_of_one_folder_leave_the_mirror_equal_to_the_server(
    store: JobStore, pool: Any, imap_account: ImapAccount, job_type: JobType
) -> None:
    """A sync with plenty to do (new mail, re-flagged mail) and an approved
    change of the same folder, on two executors, started with different gaps;
    after each round the mirror equals the server."""
    await inbox_of(imap_account, 60)
    async with (
        running_executor(str(pool.conninfo), imap_account, workers=1),
        running_executor(str(pool.conninfo), imap_account, workers=1),
    ):
        await sync_now(store)
        for round_, gap in enumerate((0.0, 0.05, 0.15, 0.4)):
            flag = f"Round{round_}".encode()
            await asyncio.to_thread(on_server, imap_account, flag_all(flag))
            await inbox_of(imap_account, 15)
            rows = await mirror_rows(pool, "INBOX", 6, "NOT ('\\Seen' = ANY (flags))")
            assert rows, "nothing left to change"
            sync = await store.enqueue("sync", {"batch_size": 3})
            await asyncio.sleep(gap)
            job = await approved(store, job_type, rows)
            for j in (job, sync):
                done = await wait_for_job(store, j.job_id, timeout=60)
                assert done.status is JobStatus.COMPLETED, (j.job_type, done.error)
            server = await asyncio.to_thread(server_state, imap_account)
            assert await mirror_state(pool) == server, f"round {round_} (gap {gap}s)"


async def test_a_long_first_sync_lets_an_approved_change_of_its_folder_through(
    store: JobStore, pool: Any, imap_account: ImapAccount, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A first sync of a big folder holds the fence for a long time; it yields it
    at batch boundaries, so a mark_read approved meanwhile finishes first."""
    monkeypatch.setattr(fence_module, "YIELD_AFTER_SECONDS", 0.2)
    monkeypatch.setattr(fence_module, "LOOK_EVERY_SECONDS", 0.01)
    await inbox_of(imap_account, 400)
    uidvalidity = await asyncio.to_thread(_uidvalidity, imap_account)
    async with running_executor(str(pool.conninfo), imap_account, workers=2):
        sync = await store.enqueue("sync", {"folders": ["INBOX"], "batch_size": 2})
        await wait_for_job(store, sync.job_id, until=lambda j: j.processed >= 10)
        rows = [
            {
                "folder": "INBOX",
                "uidvalidity": uidvalidity,
                "uid": u,
                "message_id": None,
                "subject": "",
            }
            for u in (5, 390)
        ]
        job = await approved(store, JobType.MARK_READ, rows)
        done = await wait_for_job(store, job.job_id, timeout=30)
        assert done.status is JobStatus.COMPLETED, done.error
        mid = await store.get(sync.job_id)
        assert mid is not None and mid.status is JobStatus.RUNNING, (
            "the change waited for the whole sync"
        )
        assert (await wait_for_job(store, sync.job_id, timeout=120)).status is JobStatus.COMPLETED
    server = await asyncio.to_thread(server_state, imap_account, ["INBOX"])
    assert {"\\Seen"} <= server["INBOX"][5] and {"\\Seen"} <= server["INBOX"][390]
    assert (await mirror_state(pool))["INBOX"] == server["INBOX"]


def _uidvalidity(account: ImapAccount) -> int:
    result: list[int] = []

    def read(client: imapclient.IMAPClient) -> None:
        result.append(int(client.folder_status("INBOX", [b"UIDVALIDITY"])[b"UIDVALIDITY"]))

    on_server(account, read)
    return result[0]
