"""Batched claims (the `claim` query, on the executor's pool of generic plans):
one plan for every call that reaches jobs only by index, never one job for two
workers, and a claimant killed before it started its jobs gives them back only
through lease expiry."""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import sys
import uuid
from asyncio.subprocess import PIPE
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from psycopg_pool import AsyncConnectionPool

from app.db.pool import open_pool
from app.db.queries import query
from app.jobs.models import Job, JobStatus, Lease
from app.jobs.store import JobStore, JobWrite, WriteKind

REPO = Path(__file__).resolve().parents[2]


async def pending_syncs(pool: Any, n: int) -> None:
    async with pool.connection() as conn:
        await conn.execute(
            "INSERT INTO imap_jobs (job_type, created_at)"
            " SELECT 'sync', clock_timestamp() FROM generate_series(1, %s)",
            (n,),
        )
        await conn.execute("ANALYZE imap_jobs")


@contextlib.asynccontextmanager
async def generic_pool(database_url: str, size: int = 1) -> AsyncIterator[AsyncConnectionPool]:
    claims = await open_pool(database_url, max_size=size, generic_plans=True)
    try:
        yield claims
    finally:
        await claims.close()


async def test_the_claim_statement_has_one_plan_that_reaches_jobs_only_by_index(
    pool: Any, database_url: str
) -> None:
    """Its generic plan (the one the executor's claims pool keeps) never scans
    imap_jobs whole: with many jobs pending, a plan sized from the parameters'
    defaults would (it did: a hash join over a sequential scan)."""
    await pending_syncs(pool, 5000)
    names: list[str] = []

    def positional(m: re.Match[str]) -> str:
        if m.group(1) not in names:
            names.append(m.group(1))
        return f"${names.index(m.group(1)) + 1}"

    sql = re.sub(r"%\((\w+)\)s", positional, query("claim"))
    async with pool.connection() as conn:
        await conn.execute("SET plan_cache_mode = force_generic_plan")
        await conn.execute(f"PREPARE claim_plan AS {sql}")
        args = ", ".join("NULL" for _ in names)
        rows = await (await conn.execute(f"EXPLAIN EXECUTE claim_plan({args})")).fetchall()
    plan = "\n".join(r["QUERY PLAN"] for r in rows)
    assert "Seq Scan on imap_jobs" not in plan, plan

    # And the claims pool runs it with that plan, planned once.
    async with generic_pool(database_url) as claims:
        store = JobStore(pool, claims=claims)
        for _ in range(8):
            assert len(await store.claim(["a", "b", "c"], lease_seconds=30)) == 3
        async with claims.connection() as conn:
            cur = await conn.execute(
                "SELECT generic_plans, custom_plans FROM pg_prepared_statements"
                " WHERE statement LIKE %s",
                ("%jsonb_to_recordset%",),
            )
            [stats] = await cur.fetchall()
    assert stats == {"generic_plans": 8, "custom_plans": 0}


async def test_batched_claims_never_give_one_job_to_two_workers(
    pool: Any, database_url: str
) -> None:
    """Two executors' worth of claimants, each claiming for three workers and
    completing what it got in its next claim (as the completer does), on both
    kinds of pool at once, until the queue is empty: every job was claimed
    once, by one worker, and completed by it."""
    n = 600
    await pending_syncs(pool, n)
    got: list[tuple[uuid.UUID, str]] = []

    async def claimant(store: JobStore, name: str) -> None:
        owners = [f"{name}:w{i}" for i in range(3)]
        held: list[Job] = []
        while True:
            writes = [JobWrite(WriteKind.COMPLETE, Lease.of(j), "completed") for j in held]
            batch = await store.write_and_claim(writes, owners, lease_seconds=30)
            assert set(batch.written) == {j.job_id for j in held}  # no lease was lost
            held = batch.claimed
            assert len({j.lease_owner for j in held}) == len(held)  # one job per worker
            got.extend((j.job_id, j.lease_owner or "") for j in held)
            if not held:
                return

    async with generic_pool(database_url, size=3) as claims:
        generic, custom = JobStore(pool, claims=claims), JobStore(pool)
        await asyncio.gather(
            *(claimant(generic, f"g{i}") for i in range(3)),
            *(claimant(custom, f"c{i}") for i in range(3)),
        )
    assert len(got) == n and len({job_id for job_id, _ in got}) == n
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT status, attempt, last_seq, count(*) AS n FROM imap_jobs"
            " GROUP BY status, attempt, last_seq"
        )
        assert await cur.fetchall() == [
            {"status": "completed", "attempt": 1, "last_seq": 2, "n": n}
        ]
        cur = await conn.execute(
            "SELECT job_id, message FROM imap_job_events WHERE seq = 1 ORDER BY job_id"
        )
        claimed_by = {r["job_id"]: r["message"] for r in await cur.fetchall()}
    assert claimed_by == {job_id: f"claimed by {owner}" for job_id, owner in got}


CLAIM_AND_HANG = """
import asyncio, sys
from app.db.pool import open_pool
from app.jobs.store import JobStore

async def main() -> None:
    pool = await open_pool(sys.argv[1], max_size=2)
    claims = await open_pool(sys.argv[1], max_size=1, generic_plans=True)
    store = JobStore(pool, claims=claims)
    jobs = await store.claim(["dead:w0", "dead:w1", "dead:w2"], lease_seconds=2)
    print(" ".join(str(j.job_id) for j in jobs), flush=True)
    await asyncio.sleep(3600)  # claimed, never started: killed here

asyncio.run(main())
"""


async def test_a_batch_claimed_by_a_process_killed_before_it_started_returns_on_lease_expiry(
    pool: Any, store: JobStore, database_url: str
) -> None:
    for _ in range(4):
        await store.enqueue("sync")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CLAIM_AND_HANG, database_url, cwd=REPO, stdout=PIPE
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        claimed = {uuid.UUID(s) for s in line.decode().split()}
        assert len(claimed) == 3
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGKILL)  # kill -9: no goodbye, no release
        await asyncio.wait_for(proc.wait(), 10)

    # Dead, but its leases run on: nobody else takes its jobs, the reaper not yet.
    [other] = await store.claim(["live:w0", "live:w1", "live:w2"], lease_seconds=30)
    assert other.job_id not in claimed
    assert await store.reap() == []
    for job_id in claimed:
        job = await store.get(job_id)
        assert job is not None and job.status is JobStatus.RUNNING
        assert job.lease_owner is not None and job.lease_owner.startswith("dead:")

    # Once they expire (by the database's clock), the reaper returns them.
    await asyncio.sleep(2.2)
    reaped = await store.reap()
    assert {j.job_id for j in reaped} == claimed
    assert all(j.status is JobStatus.PENDING and j.attempt == 1 for j in reaped)
    again = await store.claim(["live:w0", "live:w1", "live:w2"], lease_seconds=30)
    assert {j.job_id for j in again} == claimed
    assert all(j.attempt == 2 for j in again)
    for job in again:
        events = await store.events_after(job.job_id)
        assert [e.seq for e in events] == [1, 2, 3]
        assert events[0].message.startswith("claimed by dead:")
        assert "expired" in events[1].message
        assert events[2].message == f"claimed by {job.lease_owner}"
