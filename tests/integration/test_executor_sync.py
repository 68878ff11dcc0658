"""The imap-executor against real Postgres and a real Dovecot: the roadmap's
Phase 1 cases plus crash, concurrency and sync-correctness cases."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from app.config import ImapAccount
from app.demo.mailbox import generate_mailbox, seed_via_imap
from app.jobs.models import JobStatus
from app.jobs.store import JobStore
from tests.support.executor_harness import (
    executor_settings,
    imap_connect,
    mirror_state,
    running_executor,
    server_state,
    wait_for_job,
)

NOW = datetime(2026, 11, 20, 15, 0, tzinfo=UTC)


def seed(account: ImapAccount, count: int, **kw: Any) -> int:
    client = imap_connect(account)
    try:
        return seed_via_imap(client, generate_mailbox(count, now=NOW, **kw))
    finally:
        client.logout()


async def test_sync_job_is_claimed_and_completes_with_an_exact_mirror(
    store: JobStore, pool: Any, imap_account: ImapAccount
) -> None:
    await asyncio.to_thread(seed, imap_account, 120)
    before = await asyncio.to_thread(server_state, imap_account)
    job = await store.enqueue("sync")
    async with running_executor(str(pool.conninfo), imap_account):
        done = await wait_for_job(store, job.job_id)
    assert done.status is JobStatus.COMPLETED, done.error
    assert done.processed == done.total_estimate == sum(len(v) for v in before.values())
    assert await mirror_state(pool) == before
    # Read-only: nothing was marked read on the server.
    assert await asyncio.to_thread(server_state, imap_account) == before
    async with pool.connection() as conn:
        row = await (
            await conn.execute(
                "SELECT count(*) AS n, count(*) FILTER (WHERE subject <> '') AS subj, "
                "count(*) FILTER (WHERE body_excerpt <> '') AS body, count(*) FILTER (WHERE from_addr IS NOT NULL) AS frm "
                "FROM emails"
            )
        ).fetchone()
    assert row["n"] == row["subj"] == row["frm"] == 120
    assert row["body"] >= 110


async def test_progress_counters_increase_monotonically(
    store: JobStore, pool: Any, imap_account: ImapAccount
) -> None:
    await asyncio.to_thread(seed, imap_account, 150)
    job = await store.enqueue("sync", {"batch_size": 10})
    async with running_executor(str(pool.conninfo), imap_account):
        done = await wait_for_job(store, job.job_id)
    assert done.status is JobStatus.COMPLETED
    events = await store.events_after(job.job_id)
    processed = [e.data["processed"] for e in events if "processed" in e.data]
    assert len(processed) >= 15
    assert processed == sorted(processed)
    assert processed[-1] == 150
    assert [e.seq for e in events] == list(range(1, len(events) + 1))


async def test_cancel_while_running_ends_cancelled(
    store: JobStore, pool: Any, imap_account: ImapAccount
) -> None:
    await asyncio.to_thread(seed, imap_account, 400)
    job = await store.enqueue("sync", {"batch_size": 2})
    async with running_executor(str(pool.conninfo), imap_account):
        await wait_for_job(store, job.job_id, until=lambda j: j.processed >= 4)
        await store.request_cancel(job.job_id)
        done = await wait_for_job(store, job.job_id)
    assert done.status is JobStatus.CANCELLED
    assert done.processed < 400
    assert done.finished_at is not None


async def test_imap_failure_fails_the_job_with_the_error_and_an_event(
    store: JobStore, pool: Any, imap_account: ImapAccount
) -> None:
    job = await store.enqueue("sync", {"folders": ["Does-Not-Exist"]})
    async with running_executor(str(pool.conninfo), imap_account):
        done = await wait_for_job(store, job.job_id)
    assert done.status is JobStatus.FAILED
    assert "Does-Not-Exist" in (done.error or "")
    events = await store.events_after(job.job_id)
    assert events[-1].level == "error" and "Does-Not-Exist" in events[-1].message


async def test_unreachable_server_is_retried_then_failed(store: JobStore, pool: Any) -> None:
    dead = ImapAccount("127.0.0.1", 9, "x", "y", ssl=False)  # discard port: refuses connections
    job = await store.enqueue("sync", max_attempts=2)
    async with running_executor(str(pool.conninfo), dead, workers=1):
        done = await wait_for_job(store, job.job_id, timeout=90)
    assert done.status is JobStatus.FAILED and done.attempt == 2
    assert "cannot reach IMAP server" in (done.error or "")
    messages = [e.message for e in await store.events_after(job.job_id)]
    assert any(m.startswith("will retry") for m in messages)


async def test_three_workers_many_jobs_each_attempt_claimed_by_exactly_one_worker(
    store: JobStore, pool: Any, imap_account: ImapAccount
) -> None:
    await asyncio.to_thread(seed, imap_account, 10)
    jobs = [await store.enqueue("sync", {"folders": ["INBOX"]}) for _ in range(24)]
    async with (
        running_executor(str(pool.conninfo), imap_account, workers=3),
        running_executor(str(pool.conninfo), imap_account, workers=3),
    ):
        for job in jobs:
            await wait_for_job(store, job.job_id, timeout=120)
    for job in jobs:
        final = await store.get(job.job_id)
        assert final is not None and final.status is JobStatus.COMPLETED, final and final.error
        claims = [
            e for e in await store.events_after(job.job_id) if e.message.startswith("claimed by")
        ]
        assert len(claims) == final.attempt
        assert len({c.data["attempt"] for c in claims}) == len(claims)
    async with pool.connection() as conn:
        dup = await (
            await conn.execute(
                "SELECT count(*) AS n FROM (SELECT folder, uid FROM emails GROUP BY 1, 2 HAVING count(*) > 1) d"
            )
        ).fetchone()
    assert dup["n"] == 0


async def test_sync_follows_adds_flag_changes_deletes_and_uidvalidity_change(
    store: JobStore, pool: Any, imap_account: ImapAccount, dovecot: Any
) -> None:
    await asyncio.to_thread(seed, imap_account, 40)

    async def sync() -> None:
        job = await store.enqueue("sync")
        async with running_executor(str(pool.conninfo), imap_account, workers=1):
            done = await wait_for_job(store, job.job_id)
        assert done.status is JobStatus.COMPLETED, done.error

    await sync()
    assert await mirror_state(pool) == await asyncio.to_thread(server_state, imap_account)

    def change_server() -> None:
        client = imap_connect(imap_account)
        client.select_folder("INBOX")
        uids = sorted(client.search("ALL"))
        client.add_flags(uids[:3], [b"\\Flagged", b"Project-X"])
        client.remove_flags(uids[3:6], [b"\\Seen"])
        client.add_flags(uids[6:9], [b"\\Seen"])
        client.delete_messages(uids[-4:])
        client.expunge()
        client.logout()
        seed(imap_account, 5, seed=99)

    await asyncio.to_thread(change_server)
    await sync()
    assert await mirror_state(pool) == await asyncio.to_thread(server_state, imap_account)
    async with pool.connection() as conn:
        row = await (
            await conn.execute("SELECT labels FROM emails WHERE 'Project-X' = ANY (flags) LIMIT 1")
        ).fetchone()
    assert row is not None and "Project-X" in row["labels"]

    await asyncio.to_thread(dovecot.reset_folder_uidvalidity, "INBOX", imap_account.username)
    await sync()
    server = await asyncio.to_thread(server_state, imap_account)
    assert await mirror_state(pool) == server
    async with pool.connection() as conn:
        stale = await (
            await conn.execute(
                "SELECT count(*) AS n FROM emails e JOIN mail_folders f USING (folder) "
                "WHERE e.uidvalidity <> f.uidvalidity"
            )
        ).fetchone()
        total = await (await conn.execute("SELECT count(*) AS n FROM emails")).fetchone()
    assert stale["n"] == 0
    assert total["n"] == sum(len(v) for v in server.values())


async def test_resync_of_unchanged_mailbox_does_no_work(
    store: JobStore, pool: Any, imap_account: ImapAccount
) -> None:
    await asyncio.to_thread(seed, imap_account, 60)
    first = await store.enqueue("sync")
    async with running_executor(str(pool.conninfo), imap_account, workers=1):
        await wait_for_job(store, first.job_id)
        again = await store.enqueue("sync")
        done = await wait_for_job(store, again.job_id)
    assert done.status is JobStatus.COMPLETED and done.processed == 0
    assert done.finished_at - done.started_at < timedelta(seconds=2)  # type: ignore[operator]


def _executor_process(
    database_url: str, account: ImapAccount, *args: str, **env: str
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "executor", "--workers", "2", "--log-level", "WARNING", *args],
        env={
            **os.environ,
            "DATABASE_URL": database_url,
            "IMAP_HOST": account.host,
            "IMAP_PORT": str(account.port),
            "IMAP_USERNAME": account.username,
            "IMAP_PASSWORD": account.password,
            "IMAP_SSL": "false",
            "SECRETARY_POLL_SECONDS": "0.2",
            **env,
        },
    )


async def test_kill_9_mid_sync_then_a_fresh_executor_finishes_the_same_job(
    store: JobStore, pool: Any, imap_account: ImapAccount
) -> None:
    await asyncio.to_thread(seed, imap_account, 500)
    job = await store.enqueue("sync", {"batch_size": 5})
    url = str(pool.conninfo)
    first = _executor_process(url, imap_account, SECRETARY_LEASE_SECONDS="2")
    try:
        await wait_for_job(store, job.job_id, until=lambda j: j.processed >= 20, timeout=60)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    mid = await store.get(job.job_id)
    assert mid is not None and mid.status is JobStatus.RUNNING and mid.processed < 500
    second = _executor_process(url, imap_account, SECRETARY_LEASE_SECONDS="2")
    try:
        done = await wait_for_job(store, job.job_id, timeout=120)
    finally:
        second.terminate()
        second.wait(timeout=30)
    assert done.status is JobStatus.COMPLETED and done.attempt == 2
    assert await mirror_state(pool) == await asyncio.to_thread(server_state, imap_account)
    messages = [e.message for e in await store.events_after(job.job_id)]
    assert any("expired" in m for m in messages)


async def test_sigterm_releases_the_in_flight_job_within_a_bound(
    store: JobStore, pool: Any, imap_account: ImapAccount
) -> None:
    await asyncio.to_thread(seed, imap_account, 500)
    job = await store.enqueue("sync", {"batch_size": 2})
    proc = _executor_process(
        str(pool.conninfo), imap_account, "--shutdown-grace", "0", SECRETARY_LEASE_SECONDS="30"
    )
    await wait_for_job(store, job.job_id, until=lambda j: j.processed >= 4, timeout=60)
    proc.send_signal(signal.SIGTERM)
    code = await asyncio.to_thread(proc.wait, 30)
    assert code == 0
    after = await store.get(job.job_id)
    assert after is not None
    if after.status is JobStatus.PENDING:
        assert after.attempt == 0  # handed back without spending an attempt
        assert any("released" in e.message for e in await store.events_after(job.job_id))
    else:
        pytest.fail(f"expected the job to be released, got {after.status}")


@pytest.mark.parametrize("workers", [1])
async def test_executor_rejects_zero_workers(workers: int) -> None:
    from executor.app import Executor

    with pytest.raises(ValueError):
        Executor(
            executor_settings(), "postgresql://", ImapAccount("h", 1, "u", "p", False), workers=0
        )


async def test_executor_survives_its_database_connections_being_killed(
    store: JobStore, pool: Any, imap_account: ImapAccount, database_url: str
) -> None:
    import psycopg

    await asyncio.to_thread(seed, imap_account, 20)
    async with running_executor(str(pool.conninfo), imap_account, workers=2):
        first = await store.enqueue("sync")
        assert (await wait_for_job(store, first.job_id)).status is JobStatus.COMPLETED
        dbname = psycopg.conninfo.conninfo_to_dict(database_url)["dbname"]
        async with pool.connection() as conn:
            await conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (dbname,),
            )
        await asyncio.sleep(0.5)
        second = await store.enqueue("sync")
        done = await wait_for_job(store, second.job_id, timeout=60)
    assert done.status is JobStatus.COMPLETED, done.error
