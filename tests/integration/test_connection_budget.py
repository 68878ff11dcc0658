"""At most IMAP_MAX_CONNECTIONS connections per account across all executors
(SPEC §9), counted by the server itself; the watcher and the workers share
the budget without deadlock; slots of a dead holder come back after one lease."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

from app.config import ImapAccount
from app.jobs.models import Job, JobStatus
from app.jobs.store import JobStore
from executor.app import Executor
from executor.connection_budget import WATCHER, WORKER, ConnectionBudget, account_key
from tests.support.executor_harness import (
    executor_settings,
    imap_connect,
    mirror_state,
    server_state,
    wait_for_job,
)
from tests.support.live_mail import append, eventually, mirrored_subjects

FOLDERS = [f"Folder{i}" for i in range(6)]


def seed_folders(account: ImapAccount, per_folder: int = 15) -> None:
    client = imap_connect(account)
    try:
        for folder in FOLDERS:
            client.create_folder(folder)
    finally:
        client.logout()
    append(account, "inbox mail")
    for folder in FOLDERS:
        append(account, *[f"{folder} {i}" for i in range(per_folder)], folder=folder)


class ServerCount:
    """Samples how many IMAP connections Dovecot itself has for a user."""

    def __init__(self, dovecot: Any, user: str) -> None:
        self.dovecot = dovecot
        self.user = user
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            out = self.dovecot.doveadm("who", "-1", self.user)
            self.samples.append(sum(1 for line in out.splitlines()[1:] if line.strip()))
            self._stop.wait(0.05)

    def __enter__(self) -> ServerCount:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


@contextlib.asynccontextmanager
async def executors(
    database_url: str, account: ImapAccount, *configs: dict[str, Any]
) -> AsyncIterator[list[Executor]]:
    """Several executors in this loop, each with its own settings and workers."""
    running: list[tuple[Executor, asyncio.Task[None]]] = []
    try:
        for config in configs:
            config = dict(config)
            workers = config.pop("workers", 3)
            job_types = config.pop("job_types", None)
            ex = Executor(
                executor_settings(**{"lease_seconds": 3.0, **config}),
                database_url,
                account,
                workers=workers,
                job_types=job_types,
                shutdown_grace=2.0,
                release_timeout=5.0,
            )
            running.append((ex, asyncio.create_task(ex.run())))
        yield [ex for ex, _ in running]
    finally:
        for ex, _ in running:
            ex.stop()
        async with asyncio.timeout(60):
            for _, task in running:
                await task


async def slots_in_use(pool: Any, account: ImapAccount) -> list[dict[str, Any]]:
    budget = ConnectionBudget(account_key(account), 5)
    budget.bind(pool)
    return await budget.in_use()


async def finish_all_counting_slots(
    store: JobStore, pool: Any, account: ImapAccount, jobs: list[Job]
) -> list[int]:
    """Wait until every job completed, sampling the budget's slots in use meanwhile."""
    samples: list[int] = []
    pending = {j.job_id for j in jobs}
    while pending:
        samples.append(len(await slots_in_use(pool, account)))
        for job_id in list(pending):
            job = await store.get(job_id)
            assert job is not None
            if job.status.is_terminal:
                assert job.status is JobStatus.COMPLETED, job.error
                pending.discard(job_id)
        await asyncio.sleep(0.05)
    return samples


async def test_two_executors_never_hold_more_than_imap_max_connections_and_every_job_finishes(
    store: JobStore, pool: Any, imap_account: ImapAccount, dovecot: Any
) -> None:
    limit = 3
    await asyncio.to_thread(seed_folders, imap_account)
    config = {"live_mirror": True, "imap_max_connections": limit, "sync_batch_size": 5}
    db_samples: list[int] = []
    with ServerCount(dovecot, imap_account.username) as server:
        async with executors(str(pool.conninfo), imap_account, config, config) as (a, b):
            first = await store.enqueue("sync")
            assert (await wait_for_job(store, first.job_id)).status is JobStatus.COMPLETED
            await asyncio.to_thread(
                append, imap_account, *[f"late {i}" for i in range(5)], folder="Folder0"
            )
            jobs = [
                await store.enqueue("sync", {"folders": [folder], "batch_size": 2})
                for folder in FOLDERS * 2
            ]
            db_samples += await finish_all_counting_slots(store, pool, imap_account, jobs)
            # Both executors worked, and they waited for each other's slots.
            assert a.watcher is not None and b.watcher is not None
            assert [a.watcher.watching, b.watcher.watching].count(True) == 1
            assert a.budget.waits + b.budget.waits > 0
    assert max(db_samples) <= limit, db_samples
    assert server.samples and max(server.samples) <= limit, server.samples
    assert await mirror_state(pool) == await asyncio.to_thread(server_state, imap_account)
    print(f"\nserver-side connections: max {max(server.samples)} (limit {limit})")


async def test_with_a_budget_of_two_the_watcher_keeps_its_slot_while_three_workers_share_one(
    store: JobStore, pool: Any, imap_account: ImapAccount
) -> None:
    await asyncio.to_thread(seed_folders, imap_account)
    config = {"live_mirror": True, "imap_max_connections": 2, "sync_batch_size": 5}
    async with executors(str(pool.conninfo), imap_account, config) as (ex,):
        first = await store.enqueue("sync")
        assert (await wait_for_job(store, first.job_id)).status is JobStatus.COMPLETED
        await eventually(lambda: _watching(ex), 10, "the watcher is watching")
        jobs = [await store.enqueue("sync", {"folders": [f], "batch_size": 1}) for f in FOLDERS]
        # New mail is seen live while every worker queues for the one worker slot.
        await asyncio.to_thread(append, imap_account, "while the workers queue")
        await eventually(
            lambda: _has(pool, "while the workers queue"), 10, "live mail under a full budget"
        )
        for job in jobs:
            done = await wait_for_job(store, job.job_id, timeout=60)
            assert done.status is JobStatus.COMPLETED, done.error
        held = await slots_in_use(pool, imap_account)
        assert {s["slot"]: s["purpose"] for s in held}.get(2) == WATCHER
        assert all(s["purpose"] == WORKER for s in held if s["slot"] != 2)


async def _watching(ex: Executor) -> bool:
    return ex.watcher is not None and ex.watcher.watching


async def _has(pool: Any, subject: str) -> bool:
    return subject in await mirrored_subjects(pool)


async def test_a_worker_elsewhere_gets_an_idle_connection_given_back_within_a_renewal(
    store: JobStore, pool: Any, imap_account: ImapAccount
) -> None:
    """Executor A holds the only worker slot with an idle connection; executor B's
    job needs it. A gives it back when it sees B waiting, long before the idle
    timeout (60 s)."""
    await asyncio.to_thread(append, imap_account, "one")
    holder = {"workers": 1, "imap_max_connections": 2, "job_types": ["rescore"]}
    taker = {"workers": 1, "imap_max_connections": 2}
    async with executors(str(pool.conninfo), imap_account, holder, taker) as (a, b):
        await eventually(lambda: _bound(a), 5, "executor A started")
        await a.slots[0].imap.ensure()  # A's worker connects and goes idle
        assert a.slots[0].imap.slot is not None
        started = time.monotonic()
        job = await store.enqueue("sync")
        done = await wait_for_job(store, job.job_id, timeout=30)
        took = time.monotonic() - started
        assert done.status is JobStatus.COMPLETED, done.error
        assert a.slots[0].imap.client is None  # A closed its idle connection
        assert b.budget.waits == 1
        assert took < 3.0 / 4 * 2 + 3, took  # about one renewal interval, not 60 s
    print(f"\nidle connection handed over in {took:.1f}s")


async def _bound(ex: Executor) -> bool:
    return ex.budget.pool is not None


async def test_a_worker_that_cannot_get_a_slot_in_time_is_retried_later_not_stuck(
    store: JobStore, pool: Any, imap_account: ImapAccount
) -> None:
    await asyncio.to_thread(append, imap_account, "one")
    squatter = ConnectionBudget(account_key(imap_account), 2, lease_seconds=60, process="other")
    squatter.bind(pool)
    taken = await squatter.try_acquire("someone-else", WORKER)  # the only worker slot
    assert taken is not None
    config = {"workers": 1, "imap_max_connections": 2}
    async with executors(str(pool.conninfo), imap_account, config) as (ex,):
        ex.budget.acquire_timeout = 1.0
        job = await store.enqueue("sync")
        retried = await wait_for_job(
            store, job.job_id, until=lambda j: j.status is JobStatus.PENDING and j.attempt == 1
        )
        assert "no IMAP connection free" in (retried.error or "")
        await squatter.release(taken)
        done = await wait_for_job(store, job.job_id, timeout=30)
        assert done.status is JobStatus.COMPLETED and done.attempt == 2


async def test_slots_of_a_dead_holder_come_back_after_one_lease_and_never_go_to_two(
    pool: Any,
) -> None:
    dead = ConnectionBudget("me@h:1", 3, lease_seconds=1.0, process="dead")
    alive = ConnectionBudget("me@h:1", 3, lease_seconds=1.0, process="alive")
    dead.bind(pool)
    alive.bind(pool)
    held = [await dead.try_acquire(f"d{i}", WORKER) for i in range(3)]
    assert [s.number for s in held if s] == [1, 2]  # slot 3 is the watcher's
    assert held[2] is None
    assert await dead.try_acquire("dw", WATCHER) is not None
    grabs = await asyncio.gather(*(alive.try_acquire(f"a{i}", WORKER) for i in range(10)))
    assert grabs == [None] * 10
    await asyncio.sleep(1.1)  # the dead process renews nothing: its leases run out
    grabs = await asyncio.gather(*(alive.try_acquire(f"a{i}", WORKER) for i in range(10)))
    assert sorted(s.number for s in grabs if s) == [1, 2]  # two free slots, two winners
    # The dead holder coming back can neither free nor renew what it lost.
    for slot in held:
        if slot is not None:
            await dead.release(slot)
    assert sorted(s["slot"] for s in await alive.in_use() if s["process"] == "alive") == [1, 2]
    lost, _ = await alive.renew()
    assert lost == []


async def test_a_budget_of_one_runs_every_job_with_sweeps_and_no_watcher(
    store: JobStore, pool: Any, imap_account: ImapAccount
) -> None:
    await asyncio.to_thread(seed_folders, imap_account, 3)
    config = {"live_mirror": True, "imap_max_connections": 1}
    async with executors(str(pool.conninfo), imap_account, config) as (ex,):
        jobs = [await store.enqueue("sync", {"folders": [f]}) for f in FOLDERS]
        samples = []
        while not await _all_finished(store, jobs):
            samples.append(len(await slots_in_use(pool, imap_account)))
            await asyncio.sleep(0.05)
        for job in jobs:
            assert (await wait_for_job(store, job.job_id)).status is JobStatus.COMPLETED
        assert ex.watcher is None and ex.sweeper is not None
        assert samples and max(samples) <= 1


async def _all_finished(store: JobStore, jobs: list[Job]) -> bool:
    for job in jobs:
        now = await store.get(job.job_id)
        if now is None or not now.status.is_terminal:
            return False
    return True
