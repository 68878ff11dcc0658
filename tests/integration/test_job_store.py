"""The job store against a real Postgres: lifecycle, fencing, idempotency, seq order."""

from __future__ import annotations

import asyncio
import uuid

import psycopg
import pytest

from app.jobs.models import JobStatus, JobType, Lease, LeaseLost
from app.jobs.store import JobStore


async def test_enqueue_claim_complete(store: JobStore) -> None:
    job = await store.enqueue("sync", {"folders": ["INBOX"]})
    assert job.status is JobStatus.PENDING
    [claimed] = await store.claim(["w1"], lease_seconds=30)
    assert claimed.job_id == job.job_id and claimed.attempt == 1
    lease = Lease.of(claimed)
    await store.progress(lease, "batch", processed=5, total_estimate=10)
    done = await store.finish(lease, JobStatus.COMPLETED, "done", processed=10)
    assert done.status is JobStatus.COMPLETED and done.processed == 10
    events = await store.events_after(job.job_id)
    assert [e.seq for e in events] == [1, 2, 3]
    assert await store.claim(["w1"], lease_seconds=30) == []


async def test_claim_takes_only_one_job_per_owner(store: JobStore) -> None:
    for _ in range(5):
        await store.enqueue("sync")
    claimed = await store.claim(["a", "b"], lease_seconds=30)
    assert sorted(j.lease_owner for j in claimed) == ["a", "b"]
    assert len(await store.list(JobStatus.PENDING)) == 3


async def test_mutation_job_without_approval_is_refused_by_the_database(store: JobStore) -> None:
    with pytest.raises(psycopg.errors.CheckViolation):
        await store.enqueue(JobType.MARK_READ, {"messages": []})


async def test_idempotency_key_under_concurrent_enqueue_gives_one_job(store: JobStore) -> None:
    jobs = await asyncio.gather(*(store.enqueue("sync", idempotency_key="k-1") for _ in range(20)))
    assert len({j.job_id for j in jobs}) == 1
    assert len(await store.list()) == 1


async def test_zombie_worker_cannot_write_after_takeover(store: JobStore, pool: object) -> None:
    await store.enqueue("sync")
    [first] = await store.claim(["zombie"], lease_seconds=30)
    async with pool.connection() as conn:  # type: ignore[attr-defined]
        await conn.execute("UPDATE imap_jobs SET lease_expires_at = now() - interval '1 second'")
    [reaped] = await store.reap()
    assert reaped.status is JobStatus.PENDING
    [second] = await store.claim(["fresh"], lease_seconds=30)
    assert second.attempt == 2
    zombie = Lease.of(first)
    with pytest.raises(LeaseLost):
        await store.progress(zombie, "late", processed=99)
    with pytest.raises(LeaseLost):
        await store.finish(zombie, JobStatus.COMPLETED, "late")
    with pytest.raises(LeaseLost):
        async with store.fenced_transaction(zombie):
            pass
    job = await store.get(first.job_id)
    assert job is not None and job.processed == 0 and job.status is JobStatus.RUNNING
    assert job.lease_owner == "fresh"


async def test_reaper_fails_job_past_max_attempts(store: JobStore, pool: object) -> None:
    job = await store.enqueue("sync", max_attempts=1)
    await store.claim(["w"], lease_seconds=30)
    async with pool.connection() as conn:  # type: ignore[attr-defined]
        await conn.execute("UPDATE imap_jobs SET lease_expires_at = now() - interval '1 second'")
    [reaped] = await store.reap()
    assert reaped.status is JobStatus.FAILED and "lease expired" in (reaped.error or "")
    messages = [e.message for e in await store.events_after(job.job_id)]
    assert any("expired" in m for m in messages)


async def test_cancel_pending_is_immediate_and_running_is_flagged(store: JobStore) -> None:
    pending = await store.enqueue("sync")
    cancelled = await store.request_cancel(pending.job_id)
    assert cancelled is not None and cancelled.status is JobStatus.CANCELLED
    assert await store.request_cancel(pending.job_id) is None

    await store.enqueue("sync")
    [running] = await store.claim(["w"], lease_seconds=30)
    flagged = await store.request_cancel(running.job_id)
    assert flagged is not None and flagged.status is JobStatus.RUNNING and flagged.cancel_requested
    result = await store.progress(Lease.of(running), "batch", processed=1)
    assert result.cancel_requested
    final = await store.finish(Lease.of(running), JobStatus.COMPLETED, "done")
    assert final.status is JobStatus.CANCELLED


async def test_terminal_status_cannot_change(store: JobStore, pool: object) -> None:
    job = await store.enqueue("sync")
    await store.request_cancel(job.job_id)
    with pytest.raises(psycopg.errors.CheckViolation):
        async with pool.connection() as conn:  # type: ignore[attr-defined]
            await conn.execute(
                "UPDATE imap_jobs SET status = 'running', lease_owner='x', lease_expires_at=now()"
            )


async def test_event_seq_is_gapless_under_concurrent_writers(store: JobStore) -> None:
    job = await store.enqueue("sync")
    [claimed] = await store.claim(["w"], lease_seconds=30)
    lease = Lease.of(claimed)

    async def write(i: int) -> None:
        if i % 2:
            await store.progress(lease, f"p{i}", processed=i)
        else:
            await store.add_event(job.job_id, f"n{i}")

    await asyncio.gather(*(write(i) for i in range(60)))
    seqs = [e.seq for e in await store.events_after(job.job_id)]
    assert seqs == list(range(1, 62))


async def test_unknown_job_is_none(store: JobStore) -> None:
    assert await store.get(uuid.uuid4()) is None
