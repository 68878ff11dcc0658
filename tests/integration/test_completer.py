"""The completer's batches (executor/completer.py, the `claim` query): fenced per
job, gapless seqs in the order the writes were made, nothing lost when a batch
fails, and no deadlock with the lease renewer."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import psycopg
import pytest

from app.config import ImapAccount
from app.jobs.models import JobStatus, JobType, Lease, LeaseLost
from app.jobs.store import JobStore, JobWrite, WriteKind
from executor.app import Executor
from executor.completer import Completer
from executor.context import JobContext
from executor.imap_session import ImapSession
from tests.support.executor_harness import executor_settings, wait_for_job

# The handlers here never open an IMAP connection.
NO_IMAP = ImapAccount("127.0.0.1", 1, "nobody", "nothing", ssl=False)


def progress(lease: Lease, message: str, **kw: Any) -> JobWrite:
    return JobWrite(WriteKind.PROGRESS, lease, message, **kw)


def complete(lease: Lease, **kw: Any) -> JobWrite:
    return JobWrite(WriteKind.COMPLETE, lease, "completed", **kw)


async def expire_and_reap(store: JobStore, pool: Any, job_id: uuid.UUID) -> None:
    async with pool.connection() as conn:
        await conn.execute(
            "UPDATE imap_jobs SET lease_expires_at = now() - interval '1 second' WHERE job_id = %s",
            (job_id,),
        )
    assert [j.job_id for j in await store.reap()] == [job_id]


async def test_a_batched_completion_of_a_job_whose_lease_was_lost_changes_nothing(
    store: JobStore, pool: Any
) -> None:
    kept = await store.enqueue("sync")
    lost = await store.enqueue("sync")
    [a] = await store.claim(["w1"], lease_seconds=30)
    [b] = await store.claim(["w2"], lease_seconds=30)
    assert (a.job_id, b.job_id) == (kept.job_id, lost.job_id)
    await expire_and_reap(store, pool, b.job_id)
    [taken] = await store.claim(["w3"], lease_seconds=30)  # attempt 2, another worker
    before = await store.events_after(b.job_id)

    batch = await store.write_and_claim(
        [complete(Lease.of(a), processed=1), complete(Lease.of(b), processed=99)],
        lease_seconds=30,
    )

    assert set(batch.written) == {a.job_id}
    assert batch.written[a.job_id].status is JobStatus.COMPLETED
    after = await store.get(b.job_id)
    assert after is not None and after.status is JobStatus.RUNNING
    assert (after.attempt, after.lease_owner, after.processed) == (2, "w3", 0)
    assert after.last_seq == taken.last_seq
    assert await store.events_after(b.job_id) == before


async def test_a_batch_gives_each_jobs_events_the_next_seqs_in_the_order_they_were_made(
    store: JobStore,
) -> None:
    for _ in range(3):
        await store.enqueue("sync")
    [a, b] = await store.claim(["wa", "wb"], lease_seconds=30)
    la, lb = Lease.of(a), Lease.of(b)
    batch = await store.write_and_claim(
        [
            progress(la, "a1", processed=1, total_estimate=5),
            progress(lb, "b1", processed=7),
            progress(la, "a2", processed=3),
            complete(la, processed=5, data={"summary": {}}),
        ],
        ["wa"],  # a's worker takes the third job
        lease_seconds=30,
    )
    events = await store.events_after(a.job_id)
    assert [(e.seq, e.message) for e in events] == [
        (1, f"claimed by {la.owner}"),
        (2, "a1"),
        (3, "a2"),
        (4, "completed"),
    ]
    assert events[-1].data["status"] == "completed"
    done = batch.written[a.job_id]
    assert (done.status, done.processed, done.total_estimate, done.last_seq) == (
        JobStatus.COMPLETED,
        5,
        5,
        4,
    )
    assert [(e.seq, e.message) for e in await store.events_after(b.job_id)][1:] == [(2, "b1")]
    assert batch.written[b.job_id].status is JobStatus.RUNNING
    [third] = batch.claimed
    assert third.lease_owner == "wa" and third.attempt == 1 and third.last_seq == 1


async def test_a_completion_in_a_batch_after_a_cancel_request_ends_cancelled(
    store: JobStore,
) -> None:
    await store.enqueue("sync")
    [job] = await store.claim(["w"], lease_seconds=30)
    await store.request_cancel(job.job_id)
    batch = await store.write_and_claim([complete(Lease.of(job))], lease_seconds=30)
    assert batch.written[job.job_id].status is JobStatus.CANCELLED
    last = (await store.events_after(job.job_id))[-1]
    assert last.message.startswith("cancelled") and last.data["status"] == "cancelled"


async def test_a_batch_refuses_a_write_after_its_jobs_completion(store: JobStore) -> None:
    await store.enqueue("sync")
    [job] = await store.claim(["w"], lease_seconds=30)
    lease = Lease.of(job)
    with pytest.raises(ValueError):
        await store.write_and_claim([complete(lease), progress(lease, "late")], lease_seconds=30)


async def test_batches_and_lease_renewals_of_the_same_jobs_never_deadlock(
    store: JobStore,
) -> None:
    for _ in range(12):
        await store.enqueue("sync")
    jobs = await store.claim([f"w{i}" for i in range(12)], lease_seconds=30)
    leases = [Lease.of(j) for j in jobs]
    for round_ in range(30):
        order = leases if round_ % 2 else list(reversed(leases))
        await asyncio.gather(
            store.renew_leases(order, lease_seconds=30),
            store.write_and_claim(
                [progress(lease, f"r{round_}") for lease in reversed(order)], lease_seconds=30
            ),
            store.renew_leases(list(reversed(order)), lease_seconds=30),
        )
    for lease in leases:
        seqs = [e.seq for e in await store.events_after(lease.job_id)]
        assert seqs == list(range(1, 32))


# -- through a running executor ------------------------------------------------------


def executor(database_url: str, handler: Any, **settings: Any) -> Executor:
    return Executor(
        executor_settings(**settings),
        database_url,
        NO_IMAP,
        workers=3,
        handlers={JobType.SYNC: handler},
        shutdown_grace=2.0,
        release_timeout=2.0,
    )


async def run_until_done(
    database_url: str, store: JobStore, handler: Any, jobs: int, **settings: Any
) -> tuple[Executor, list[uuid.UUID]]:
    ids = [(await store.enqueue("sync")).job_id for _ in range(jobs)]
    ex = executor(database_url, handler, **settings)
    task = asyncio.create_task(ex.run())
    try:
        for job_id in ids:
            await wait_for_job(store, job_id, timeout=60)
    finally:
        ex.stop()
        await asyncio.wait_for(task, 30)
    return ex, ids


async def test_events_written_behind_share_their_jobs_completion_batch_in_order(
    database_url: str, store: JobStore
) -> None:
    async def handler(ctx: JobContext) -> dict[str, Any]:
        await ctx.progress("first", processed=1, total_estimate=2, wait=False)
        await ctx.progress("second", processed=2, wait=False)
        return {"ok": True}

    ex, ids = await run_until_done(database_url, store, handler, 9)
    for job_id in ids:
        job = await store.get(job_id)
        assert job is not None and job.status is JobStatus.COMPLETED and job.processed == 2
        events = await store.events_after(job_id)
        assert [e.seq for e in events] == [1, 2, 3, 4]
        assert [e.message for e in events][1:] == ["first", "second", "completed"]
    assert ex.completer is not None
    # Each job's two events and its completion went in one statement.
    assert ex.completer.batches <= 9


async def test_a_completion_whose_batch_fails_is_written_by_its_worker(
    database_url: str, store: JobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = JobStore.write_and_claim
    failed: list[int] = []

    async def flaky(self: JobStore, writes: Any, *args: Any, **kwargs: Any) -> Any:
        if any(w.kind is WriteKind.COMPLETE for w in writes) and len(failed) < 3:
            failed.append(len(writes))
            raise psycopg.OperationalError("injected: connection lost mid-batch")
        return await original(self, writes, *args, **kwargs)

    monkeypatch.setattr(JobStore, "write_and_claim", flaky)

    async def handler(ctx: JobContext) -> dict[str, Any]:
        await ctx.progress("working", processed=1, total_estimate=1)
        return {}

    _, ids = await run_until_done(database_url, store, handler, 6)
    assert failed  # some completions went the fallback way
    for job_id in ids:
        job = await store.get(job_id)
        assert job is not None and job.status is JobStatus.COMPLETED and job.attempt == 1
        events = await store.events_after(job_id)
        assert [e.seq for e in events] == list(range(1, len(events) + 1))
        assert [e.message for e in events][-2:] == ["working", "completed"]


async def test_when_no_completion_can_be_written_the_job_is_retried_not_lost(
    database_url: str, store: JobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    original_batch, original_finish = JobStore.write_and_claim, JobStore.finish
    broken = {"on": True}

    async def batch(self: JobStore, writes: Any, *args: Any, **kwargs: Any) -> Any:
        if broken["on"] and any(w.kind is WriteKind.COMPLETE for w in writes):
            raise psycopg.OperationalError("injected: database away")
        return await original_batch(self, writes, *args, **kwargs)

    async def finish(self: JobStore, lease: Lease, *args: Any, **kwargs: Any) -> Any:
        if broken["on"]:
            broken["on"] = False  # the database comes back after this
            raise psycopg.OperationalError("injected: database away")
        return await original_finish(self, lease, *args, **kwargs)

    monkeypatch.setattr(JobStore, "write_and_claim", batch)
    monkeypatch.setattr(JobStore, "finish", finish)

    async def handler(ctx: JobContext) -> dict[str, Any]:
        return {"attempt": ctx.lease.attempt}

    _, [job_id] = await run_until_done(database_url, store, handler, 1, lease_seconds=1.0)
    job = await store.get(job_id)
    assert job is not None and job.status is JobStatus.COMPLETED
    assert job.attempt == 2  # the lease ran out, the reaper returned it, it ran again
    messages = [e.message for e in await store.events_after(job_id)]
    assert any("expired" in m for m in messages) and messages[-1] == "completed"


async def test_an_event_written_behind_a_lost_lease_changes_nothing_and_stops_the_handler(
    store: JobStore, pool: Any
) -> None:
    await store.enqueue("sync")
    [job] = await store.claim(["w1"], lease_seconds=30)
    await expire_and_reap(store, pool, job.job_id)
    await store.claim(["w2"], lease_seconds=30)
    before = await store.events_after(job.job_id)
    completer = Completer(store, lease_seconds=30)
    completer.start()
    try:
        ctx = JobContext(
            job=job,
            lease=Lease.of(job),
            store=store,
            session=ImapSession(NO_IMAP, name="w1"),
            settings=executor_settings(),
            worker="w1",
            completer=completer,
        )
        ctx.lease_renewed(time.monotonic(), 30)
        await ctx.progress("late", processed=5, wait=False)  # returns at once
        await ctx.settle()
    finally:
        await completer.stop()
    assert ctx.lease_lost
    with pytest.raises(LeaseLost):
        ctx.checkpoint()
    assert await store.events_after(job.job_id) == before
    after = await store.get(job.job_id)
    assert after is not None and after.processed == 0 and after.lease_owner == "w2"
