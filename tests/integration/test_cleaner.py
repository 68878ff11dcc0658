"""Bounded growth (issue 10, item 5): the executor's cleaner, on real Postgres.

Its promises: finished read-only jobs older than the retention are deleted
with their events, nothing younger or unfinished is touched; a mutation job is
never deleted (its approval and change record stay, so undo stays possible),
only its events, and its card renders exactly as before; every statement is
bounded, and cleaners never wait for a locked row nor for each other.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from typing import Any

import httpx
import psycopg

from app.config import load_settings
from app.jobs.models import Job, JobStatus, JobType, Lease
from app.jobs.store import ChangeState, Intent, JobStore, Settlement
from app.web.progress_cache import ProgressCache
from executor.cleaner import Cleaner
from tests.support.sse_client import collect

DAY = 86400


async def sql(pool: Any, statement: str, params: dict[str, Any] | None = None) -> list[Any]:
    async with pool.connection() as conn:
        cur = await conn.execute(statement, params or {})
        return await cur.fetchall() if cur.description else []


async def age(pool: Any, job: Job, days: float) -> None:
    """Pretend the job finished (and was made) `days` ago."""
    await sql(
        pool,
        "UPDATE imap_jobs SET created_at = now() - make_interval(days => %(d)s),"
        " finished_at = CASE WHEN finished_at IS NOT NULL"
        " THEN now() - make_interval(days => %(d)s) END WHERE job_id = %(id)s",
        {"d": days, "id": job.job_id},
    )


async def finished_sync(
    store: JobStore, batches: int = 3, status: JobStatus = JobStatus.COMPLETED
) -> Job:
    job = await store.enqueue("sync")
    [claimed] = await store.claim([f"w-{job.job_id}"], lease_seconds=30)
    lease = Lease.of(claimed)
    for i in range(1, batches + 1):
        await store.progress(
            lease,
            f"INBOX: batch {i}",
            processed=i * 10,
            total_estimate=batches * 10,
            data={"phase": "fetch", "batch": i, "items_found": 10, "uids": list(range(10))},
        )
    error = "boom" if status is JobStatus.FAILED else None
    await store.finish(lease, status, "done", error=error, data={"summary": {"folders": {}}})
    got = await store.get(job.job_id)
    assert got is not None and got.status is status
    return got


async def finished_mutation(store: JobStore, uids: tuple[int, ...] = (1, 2)) -> Job:
    return await run_mutation(store, await approved_mutation(store, uids), uids)


async def approved_mutation(store: JobStore, uids: tuple[int, ...] = (1, 2)) -> Job:
    approval = await store.record_approval(
        thread_id="t",
        interrupt_id=f"i-{uuid.uuid4().hex}",
        action="mark_read",
        params={},
        messages=[
            {"folder": "INBOX", "uidvalidity": 1000, "uid": u, "message_id": f"m{u}@x"}
            for u in uids
        ],
    )
    job = await store.enqueue_approved(approval.approval_id)
    assert job is not None
    return job


async def run_mutation(store: JobStore, job: Job, uids: tuple[int, ...] = (1, 2)) -> Job:
    """A mark_read job as the executor runs one: write-ahead intents, applied
    changes with their progress event, then the end."""
    [claimed] = await store.claim([f"w-{job.job_id}"], lease_seconds=30, job_types=["mark_read"])
    lease = Lease.of(claimed)
    await store.progress(lease, "marking read", data={"phase": "starting", "has_more": True})
    async with store.fenced_transaction(lease) as conn:
        await store.record_intents(
            conn,
            lease,
            [
                Intent(
                    "INBOX", 1000, u, f"m{u}@x", f"s{u}", (), ("\\Seen",), (), "INBOX", 1000, None
                )
                for u in uids
            ],
        )
    async with store.fenced_transaction(lease) as conn:
        await store.settle_changes(
            conn,
            lease,
            [
                Settlement(
                    "INBOX",
                    1000,
                    u,
                    ChangeState.APPLIED,
                    message_id=f"m{u}@x",
                    subject=f"s{u}",
                    flags_after=("\\Seen",),
                    folder_after="INBOX",
                    uidvalidity_after=1000,
                    uid_after=u,
                )
                for u in uids
            ],
        )
        await store.progress(
            lease,
            f"{len(uids)} message(s) marked read",
            processed=len(uids),
            data={"phase": "apply", "batch": 1, "items_found": len(uids), "has_more": False},
            conn=conn,
        )
    await store.finish(
        lease,
        JobStatus.COMPLETED,
        "completed",
        processed=len(uids),
        data={"summary": {"uids": list(uids), "description": f"mark read: {len(uids)}"}},
    )
    done = await store.get(job.job_id)
    assert done is not None
    return done


async def events_of(pool: Any, job: Job) -> int:
    [row] = await sql(
        pool, "SELECT count(*) AS n FROM imap_job_events WHERE job_id = %(id)s", {"id": job.job_id}
    )
    return int(row["n"])


async def test_old_finished_read_only_jobs_are_pruned_with_their_events_and_nothing_else(
    store: JobStore, pool: Any
) -> None:
    old_done = await finished_sync(store)
    old_failed = await finished_sync(store, status=JobStatus.FAILED)
    old_cancelled = await store.enqueue("sync")
    await store.request_cancel(old_cancelled.job_id)  # pending -> cancelled: finished
    young = await finished_sync(store)
    old_running = await store.enqueue("sync")
    await store.claim(["busy"], lease_seconds=300)
    old_pending = await store.enqueue("sync")
    for job in (old_done, old_failed, old_cancelled, old_running, old_pending):
        await age(pool, job, 31)
    await age(pool, young, 29)

    result = await Cleaner(store, retention_days=30).clean_once()

    for gone in (old_done, old_failed, old_cancelled):
        assert await store.get(gone.job_id) is None
        assert await events_of(pool, gone) == 0
    for kept in (young, old_running, old_pending):
        assert await store.get(kept.job_id) is not None
    assert await events_of(pool, young) == 5
    assert result.jobs == 3 and result.events == 5 + 5 + 1
    # A second round finds nothing left to do.
    assert not await Cleaner(store, retention_days=30).clean_once()


async def test_an_undoable_jobs_record_is_kept_and_its_card_is_unchanged(
    store: JobStore, pool: Any, web: Any
) -> None:
    """The cleaner never deletes a mutation job: its row, its approval and its
    change record stay (undo is offered as long as the record exists); only
    its events go, and the page shows its card exactly as before."""
    job = await finished_mutation(store)
    await age(pool, job, 400)
    changes_before = await store.job_changes(job.job_id)
    async with httpx.AsyncClient(base_url=web.url) as client:
        before = card_of(await client.get("/"), job)
        assert "2 message(s)" in before or "mark read: 2" in before
        assert 'class="undo"' in before and "1 batch(es)" in before
        await sql(pool, "UPDATE imap_jobs SET progress = NULL")  # as if never folded yet

        result = await Cleaner(store, retention_days=30).clean_once()
        assert result.kept_jobs == 1 and result.kept_events == 4 and result.jobs == 0

        from app.web.progress_cache import CACHE

        CACHE.clear()  # a restarted web: nothing cached, only the stored fold
        after = card_of(await client.get("/"), job)
    assert after == before
    kept = await store.get(job.job_id)
    assert kept is not None and kept.status is JobStatus.COMPLETED
    assert await events_of(pool, job) == 0
    assert await store.get_approval(kept.approval_id) is not None  # type: ignore[arg-type]
    assert await store.job_changes(job.job_id) == changes_before
    # Undo is still offered and still works: its approval names the kept record.
    undo = await store.record_approval(
        thread_id="t",
        interrupt_id=f"undo-{uuid.uuid4().hex}",
        action=JobType.UNDO.value,
        params={"undo_of": str(job.job_id)},
        messages=[
            {"folder": c.folder, "uidvalidity": c.uidvalidity, "uid": c.uid} for c in changes_before
        ],
    )
    assert await store.enqueue_approved(undo.approval_id) is not None
    # Its event stream still opens and ends: a snapshot and the end, no events.
    async with httpx.AsyncClient(base_url=web.url, timeout=10) as client:
        messages = await asyncio.wait_for(collect(client, f"/api/jobs/{job.job_id}/events"), 10)
    assert [m.event for m in messages] == ["job_status", "job_status"]
    assert messages[-1].json()["status"] == "completed"
    # Cleaned once and for all: it is not a candidate any more.
    assert not await Cleaner(store, retention_days=30).clean_once()


def card_of(page: httpx.Response, job: Job) -> str:
    """The job's card in the page's markup (its <div> and everything inside)."""
    html = page.text
    at = html.index(f'id="job-{job.job_id}"')
    begin = html.rindex("<div", 0, at)
    depth, pos = 0, begin
    for tag in re.finditer(r"<div\b|</div>", html[begin:]):
        depth += 1 if tag.group(0) == "<div" else -1
        if depth == 0:
            pos = begin + tag.end()
            break
    return html[begin:pos]


async def test_every_statement_deletes_a_bounded_batch(store: JobStore, pool: Any) -> None:
    jobs = [await finished_sync(store, batches=4) for _ in range(9)]  # 6 events each
    for job in jobs:
        await age(pool, job, 60)
    rowcounts: list[tuple[str, int]] = []

    class Counting(Cleaner):
        async def _execute(self, name: str, params: dict[str, Any], limit: int) -> int:
            n = await super()._execute(name, params, limit)
            rowcounts.append((name, n))
            return n

        async def _delete_jobs(self, params: dict[str, Any]) -> int:
            n = await super()._delete_jobs(params)
            rowcounts.append(("jobs", n))
            return n

    cleaner = Counting(store, retention_days=30, event_batch=7, job_batch=4)
    result = await cleaner.clean_once()
    assert result.events == 54 and result.jobs == 9
    events = [n for name, n in rowcounts if name != "jobs"]
    deleted_jobs = [n for name, n in rowcounts if name == "jobs"]
    assert max(events) <= 7 and len(events) == 8 and max(deleted_jobs) <= 4
    [left] = await sql(pool, "SELECT count(*) AS n FROM imap_jobs")
    assert left["n"] == 0


async def test_two_cleaners_at_once_never_wait_for_each_other_and_clean_each_row_once(
    store: JobStore, pool: Any
) -> None:
    syncs = [await finished_sync(store, batches=5) for _ in range(12)]
    mutations = [await finished_mutation(store, (i,)) for i in range(1, 4)]
    for job in syncs + mutations:
        await age(pool, job, 45)
    a = Cleaner(store, retention_days=30, event_batch=5, job_batch=3, kept_batch=1)
    b = Cleaner(store, retention_days=30, event_batch=5, job_batch=3, kept_batch=1)
    first, second = await asyncio.wait_for(asyncio.gather(a.clean_once(), b.clean_once()), 30)
    assert first.jobs + second.jobs == 12
    assert first.events + second.events == 12 * 7
    # Each mutation's events are pruned by exactly one of them (or left for the
    # next round when the other held it); none is pruned twice or deleted.
    third = await Cleaner(store, retention_days=30).clean_once()
    assert first.kept_jobs + second.kept_jobs + third.kept_jobs == 3
    for job in mutations:
        assert await store.get(job.job_id) is not None and await events_of(pool, job) == 0


async def test_a_row_held_by_a_worker_or_a_stream_is_skipped_not_waited_for(
    store: JobStore, pool: Any, database_url: str
) -> None:
    mutation = await finished_mutation(store)
    sync = await finished_sync(store, batches=2)
    await age(pool, mutation, 90)
    await age(pool, sync, 90)
    async with await psycopg.AsyncConnection.connect(database_url) as holder:
        await holder.execute(
            "SELECT 1 FROM imap_jobs WHERE job_id = %s FOR NO KEY UPDATE", (mutation.job_id,)
        )
        await holder.execute(
            "SELECT 1 FROM imap_job_events WHERE job_id = %s AND seq = 1 FOR UPDATE",
            (sync.job_id,),
        )
        started = time.monotonic()
        held = await asyncio.wait_for(Cleaner(store, retention_days=30).clean_once(), 10)
        assert time.monotonic() - started < 5
        assert held.kept_jobs == 0 and held.jobs == 0 and held.events == 3
        await holder.rollback()
    done = await Cleaner(store, retention_days=30).clean_once()
    assert done.kept_jobs == 1 and done.jobs == 1 and done.events == 1


async def test_a_stored_fold_lets_the_page_render_a_pruned_card_without_its_events(
    store: JobStore, pool: Any
) -> None:
    """The web's cache, cold, finds a cleaned job's state in its stored fold."""
    job = await finished_mutation(store)
    warm = ProgressCache()
    [before] = await warm.current(store, [job])
    await age(pool, job, 31)
    await Cleaner(store, retention_days=30).clean_once()
    cold = ProgressCache()
    [after] = await cold.current(store, [await store.get(job.job_id)])  # type: ignore[list-item]
    assert after == before and after.iterations == 1 and after.record is not None


async def test_the_cleaner_service_cleans_every_interval_until_stopped(
    store: JobStore, pool: Any
) -> None:
    cleaner = Cleaner(store, retention_days=1, interval=0.2)
    cleaner.start()
    try:
        job = await finished_sync(store)
        await age(pool, job, 2)
        deadline = time.monotonic() + 10
        while await store.get(job.job_id) is not None:
            assert time.monotonic() < deadline, "the cleaner never came round"
            await asyncio.sleep(0.1)
        assert cleaner.running and cleaner.ticks >= 1
    finally:
        await cleaner.stop()
    assert not cleaner.running


def test_retention_and_interval_come_from_the_environment() -> None:
    settings = load_settings(
        {"SECRETARY_RETENTION_DAYS": "7", "SECRETARY_CLEANER_INTERVAL": "60"}, "/nonexistent.yaml"
    )
    assert settings.retention_days == 7 and settings.cleaner_interval == 60
    assert load_settings({}, "/nonexistent.yaml").retention_days == 30
