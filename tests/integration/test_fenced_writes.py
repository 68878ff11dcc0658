"""The fenced transactions a sync batch is written in (app/jobs/store.py), against
a real Postgres: pipelined, they still commit nothing once the lease is lost;
late-fenced (a split first sync's connections), the rows of several go in side
by side, the job's row is held only from the fence to COMMIT, and nothing
commits without the fence or the lease."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from app.jobs.models import JobStatus, Lease, LeaseLost
from app.jobs.store import JobStore
from executor import mirror_writes as mirror
from executor.mirror_writes import EncodedRows, FetchedMessage, encode_rows
from tests.integration.test_mirror_batch_write import FOLDER, VALIDITY, bare, full


def batch(*uids: int) -> EncodedRows:
    return encode_rows(FOLDER, VALIDITY, [full(u, f"m{u}") for u in uids])


async def running(store: JobStore, pool: Any) -> Lease:
    await store.enqueue("sync")
    [job] = await store.claim(["w1"], lease_seconds=60)
    async with pool.connection() as conn:
        await mirror.reset_folder(conn, FOLDER, VALIDITY)
    return Lease.of(job)


async def taken_over(store: JobStore, pool: Any) -> None:
    """The lease expires, the reaper hands the job on, another worker claims it."""
    async with pool.connection() as conn:
        await conn.execute("UPDATE imap_jobs SET lease_expires_at = now() - interval '1 second'")
    await store.reap()
    await store.claim(["w2"], lease_seconds=60)


async def mirrored(pool: Any) -> list[int]:
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT uid FROM emails ORDER BY uid")
        return [r["uid"] for r in await cur.fetchall()]


async def test_a_pipelined_batch_write_commits_rows_cursor_and_event_together(
    store: JobStore, pool: Any
) -> None:
    lease = await running(store, pool)
    async with store.fenced_transaction(lease, pipeline=True) as conn:
        await mirror.upsert_encoded(conn, FOLDER, VALIDITY, batch(1, 2, 3))
        await store.progress(lease, "batch", processed=3, conn=conn)
    assert await mirrored(pool) == [1, 2, 3]
    async with pool.connection() as conn:
        cursors = await mirror.load_cursors(conn)
    assert cursors[FOLDER].last_seen_uid == 3
    job = await store.get(lease.job_id)
    assert job is not None and job.processed == 3


async def test_a_pipelined_batch_write_of_a_lost_lease_commits_nothing(
    store: JobStore, pool: Any
) -> None:
    lease = await running(store, pool)
    await taken_over(store, pool)
    with pytest.raises(LeaseLost):
        async with store.fenced_transaction(lease, pipeline=True) as conn:
            # Queued behind the lock: they run, and are rolled back.
            await mirror.upsert_encoded(conn, FOLDER, VALIDITY, batch(1, 2))
    assert await mirrored(pool) == []
    async with pool.connection() as conn:
        assert (await mirror.load_cursors(conn))[FOLDER].last_seen_uid == 0


async def test_a_late_fenced_write_whose_lease_was_lost_before_its_fence_rolls_its_rows_back(
    store: JobStore, pool: Any
) -> None:
    lease = await running(store, pool)
    with pytest.raises(LeaseLost):
        async with store.late_fenced_transaction(lease) as tx:
            await mirror.upsert_rows(tx.conn, batch(1, 2))
            await tx.sent()
            await taken_over(store, pool)  # the job row is not held yet: nothing waits
            await tx.fence()
    assert await mirrored(pool) == []


async def test_a_late_fenced_write_without_its_fence_commits_nothing(
    store: JobStore, pool: Any
) -> None:
    lease = await running(store, pool)
    with pytest.raises(RuntimeError, match="without its fence"):
        async with store.late_fenced_transaction(lease) as tx:
            await mirror.upsert_rows(tx.conn, batch(1))
    assert await mirrored(pool) == []


async def test_late_fenced_writes_upsert_side_by_side_and_hold_the_job_only_from_the_fence(
    store: JobStore, pool: Any
) -> None:
    lease = await running(store, pool)
    fenced = asyncio.Event()

    async with store.late_fenced_transaction(lease) as first:
        await mirror.upsert_rows(first.conn, batch(1, 2))
        await first.sent()

        # Rows upserted, fence not taken: another write of the job (a second
        # connection's rows, then its event) is not held up by this one.
        async def second_write() -> None:
            async with store.late_fenced_transaction(lease) as second:
                await mirror.upsert_rows(second.conn, batch(3, 4))
                await second.sent()
                await second.fence()
                await store.progress(lease, "second", processed=2, conn=second.conn)

        await asyncio.wait_for(second_write(), 10)
        await first.fence()
        await store.progress(lease, "first", processed=4, conn=first.conn)

        # From its fence to COMMIT the job's row is held: a write that ends
        # the lease waits for it, so the rows commit only under a held lease.
        async def finish() -> None:
            fenced.set()
            await store.finish(lease, JobStatus.COMPLETED, "done")

        finishing = asyncio.ensure_future(finish())
        await fenced.wait()
        await asyncio.sleep(0.3)
        assert not finishing.done(), "a lease-ending write went past a fenced transaction"
    await asyncio.wait_for(finishing, 10)
    assert await mirrored(pool) == [1, 2, 3, 4]
    events = await store.events_after(lease.job_id)
    assert [e.message for e in events][-3:] == ["second", "first", "done"]


async def test_a_batch_written_again_leaves_every_row_as_it_was(pool: Any) -> None:
    """A batch fetched again (a retry going on from its cursor) is written
    again: the same message gives the same row, "mentions you", scores and
    Gmail labels included."""
    async with pool.connection() as conn:
        await mirror.reset_folder(conn, FOLDER, VALIDITY)
    messages: list[FetchedMessage] = [full(1, "one"), bare(2), full(3, "three")]
    encoded = encode_rows(FOLDER, VALIDITY, messages)

    async def snapshot() -> list[dict[str, Any]]:
        async with pool.connection() as conn:
            cur = await conn.execute("SELECT * FROM emails ORDER BY uid")
            return [{k: v for k, v in r.items() if k != "synced_at"} for r in await cur.fetchall()]

    async with pool.connection() as conn, conn.transaction():
        await mirror.upsert_rows(conn, encoded)
    first = await snapshot()
    async with pool.connection() as conn, conn.transaction():
        await mirror.upsert_rows(conn, encoded)
    assert await snapshot() == first
    assert first[0]["labels"] == ["\\Important", "Work/Ünï"] and first[0]["mentions_you"] is True
