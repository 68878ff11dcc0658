"""Executor services never die silently, and a lease that cannot be renewed
stops its worker before it expires (real Postgres, a real Dovecot).

The long jobs here use a test handler that flags INBOX messages one per batch,
recording each flag in a fenced progress event and, out of band, the wall-clock
time of each IMAP STORE: that is how the tests see when the mailbox was touched
and whether any message was changed twice.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import imapclient
import psycopg
import pytest

from app.config import ImapAccount
from app.demo.mailbox import generate_mailbox, seed_via_imap
from app.jobs.models import JobEvent, JobStatus, JobType, Lease
from app.jobs.store import JobStore
from executor.cleaner import Cleaner
from executor.completer import Completer
from executor.connection_budget import BudgetKeeper
from executor.context import JobContext, lease_margin
from executor.handlers import HANDLERS, Handler
from executor.imap_session import ImapSession
from executor.services import LeaseRenewer, Listener, Reaper, Service
from executor.worker import WorkerSlot, run_job
from tests.support.executor_harness import (
    executor_settings,
    imap_connect,
    running_executor,
    wait_for_job,
)

NOW = datetime(2026, 11, 20, 15, 0, tzinfo=UTC)
FLAG = b"\\Flagged"


# -- a slow, resumable, mailbox-changing test job ---------------------------------


@dataclass(frozen=True)
class Store:
    """One IMAP STORE the test handler made: by which attempt, when (wall clock)."""

    attempt: int
    worker: str
    uid: int
    started: float
    ended: float


def seed(account: ImapAccount, count: int) -> list[int]:
    client = imap_connect(account)
    try:
        seed_via_imap(client, generate_mailbox(count, now=NOW))
        client.select_folder("INBOX", readonly=True)
        return sorted(client.search("ALL"))
    finally:
        client.logout()


def flagged_on_server(account: ImapAccount) -> set[int]:
    client = imap_connect(account)
    try:
        client.select_folder("INBOX", readonly=True)
        return set(client.search(["FLAGGED"]))
    finally:
        client.logout()


def flagging_handler(stores: list[Store], *, pause: float) -> Handler:
    """Flag every INBOX message, one per batch, resuming from what earlier
    attempts recorded, like the real mutation handlers do."""

    async def handle(ctx: JobContext) -> dict[str, Any]:
        wait = float(ctx.job.payload.get("pause", pause))
        done = {
            e.data["uid"] for e in await ctx.store.events_after(ctx.job.job_id) if "uid" in e.data
        }
        client = await ctx.imap.ensure()
        await ctx.imap.call(client.select_folder, "INBOX")
        uids = sorted(await ctx.imap.call(client.search, "ALL"))
        for uid in uids:
            if uid in done:
                continue
            ctx.checkpoint()
            started = time.time()
            await ctx.imap.call(client.add_flags, [uid], [FLAG])
            stores.append(Store(ctx.lease.attempt, ctx.worker, uid, started, time.time()))
            done.add(uid)
            await ctx.progress(
                f"flagged {uid}",
                processed=len(done),
                total_estimate=len(uids),
                data={"uid": uid, "attempt": ctx.lease.attempt},
            )
            await asyncio.sleep(wait)
        return {"flagged": len(done)}

    return handle


def claims(events: list[JobEvent]) -> list[JobEvent]:
    return [e for e in events if e.message.startswith("claimed by")]


# -- Service supervision, on its own --------------------------------------------------


class Flaky(Service):
    name = "flaky"
    min_backoff = 0.05
    max_backoff = 0.2

    def __init__(self, failures: list[BaseException]) -> None:
        super().__init__()
        self.script = failures
        self.calls = 0

    async def tick(self) -> None:
        self.calls += 1
        if self.script:
            raise self.script.pop(0)
        await self._sleep(0.01)


async def _until(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


async def test_a_service_that_raises_an_unexpected_error_logs_the_traceback_and_runs_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="executor.services")
    service = Flaky([RuntimeError("a bug in tick"), psycopg.OperationalError("db away")])
    service.start()
    try:
        await _until(lambda: service.ticks >= 3)
        assert service.running
    finally:
        await service.stop()
    assert service.restarts == 1 and service.failures == 1
    crashed = [r for r in caplog.records if "flaky crashed" in r.getMessage()]
    assert len(crashed) == 1 and crashed[0].levelno == logging.ERROR
    assert crashed[0].exc_info is not None and isinstance(crashed[0].exc_info[1], RuntimeError)
    assert "a bug in tick" in caplog.text and "Traceback" in caplog.text
    # An expected outage is one warning line, without a traceback.
    outage = [r for r in caplog.records if "db away" in r.getMessage()]
    assert len(outage) == 1 and outage[0].levelno == logging.WARNING and not outage[0].exc_info


async def test_a_service_that_keeps_failing_backs_off_to_its_cap_and_still_stops() -> None:
    service = Flaky([RuntimeError(f"bug {i}") for i in range(1000)])
    service.start()
    await asyncio.sleep(1.0)
    # 0.05, 0.1, 0.2, 0.2, ...: about 6 tries in a second, not a hot loop.
    assert 4 <= service.restarts <= 9, service.restarts
    started = time.monotonic()
    await service.stop()
    assert time.monotonic() - started < 0.5
    assert not service.running


async def test_stop_ends_a_service_blocked_inside_its_tick() -> None:
    class Blocked(Service):
        name = "blocked"

        async def tick(self) -> None:
            await asyncio.Event().wait()  # never set: only cancellation ends it

    service = Blocked()
    service.start()
    await asyncio.sleep(0.05)
    async with asyncio.timeout(1):
        await service.stop()
    assert not service.running and service.restarts == 0


# -- the executor's services restart, and the executor keeps working ---------------


def crash_once(
    monkeypatch: pytest.MonkeyPatch,
    crashed: set[str],
    cls: type[Service],
    method: str,
    when: Any = lambda service: True,
) -> None:
    """`cls.method` raises RuntimeError the first time `when(service)` holds."""
    original = getattr(cls, method)

    async def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        if self.name not in crashed and when(self):
            crashed.add(self.name)
            raise RuntimeError(f"injected bug in {self.name}")
        return await original(self, *args, **kwargs)

    monkeypatch.setattr(cls, method, wrapper)


async def test_every_executor_service_restarts_after_an_unexpected_error_and_jobs_keep_completing(
    store: JobStore,
    pool: Any,
    imap_account: ImapAccount,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    uids = await asyncio.to_thread(seed, imap_account, 12)
    stores: list[Store] = []
    handlers = {**HANDLERS, JobType.SYNC: flagging_handler(stores, pause=0.4)}
    lease = 4.0
    # A long poll: a job enqueued while the executor idles is picked up
    # promptly only if the (restarted) listener delivers its NOTIFY.
    settings = executor_settings(lease_seconds=lease, poll_seconds=60, cleaner_interval=0.5)

    # A job whose worker "died": its lease runs out, and only a working reaper
    # brings it back.
    orphan = await store.enqueue("sync", {"pause": 0})
    [ghost] = await store.claim(["ghost-worker"], lease_seconds=1)
    assert ghost.job_id == orphan.job_id

    crashed: set[str] = set()
    long_jobs: set[uuid.UUID] = set()
    crash_once(monkeypatch, crashed, Reaper, "tick")
    crash_once(monkeypatch, crashed, Listener, "tick")
    crash_once(monkeypatch, crashed, BudgetKeeper, "tick")
    crash_once(monkeypatch, crashed, Cleaner, "tick")
    # The completer fails a batch it already took: its workers write for themselves.
    crash_once(monkeypatch, crashed, Completer, "_write")
    crash_once(  # on its first renewal of the long job, while that job runs
        monkeypatch,
        crashed,
        LeaseRenewer,
        "renew_once",
        when=lambda r: any(c.job.job_id in long_jobs for c in r.in_flight()),
    )

    async with running_executor(
        str(pool.conninfo), imap_account, workers=2, settings=settings
    ) as ex:
        ex.handlers = handlers  # before its first await: the executor has not claimed yet
        reaped = await wait_for_job(store, orphan.job_id, timeout=30)
        assert reaped.status is JobStatus.COMPLETED and reaped.attempt == 2
        await _until(lambda: {"reaper", "listener"} <= crashed, 10)
        await asyncio.sleep(0.5)  # the producer idles now, on its 60 s poll

        enqueued = time.monotonic()
        long_job = await store.enqueue("sync")
        long_jobs.add(long_job.job_id)
        await wait_for_job(
            store, long_job.job_id, until=lambda j: j.status is not JobStatus.PENDING, timeout=10
        )
        assert time.monotonic() - enqueued < 5, "the NOTIFY did not wake the executor"
        # 12 batches at 0.4 s outlast the 4 s lease: only renewals keep the job
        # ours, and the renewer crashed on its first renewal of it.
        done = await wait_for_job(store, long_job.job_id, timeout=60)
        services = {s.name: s for s in ex.services}

    assert done.status is JobStatus.COMPLETED, done.error
    assert done.attempt == 1, "the renewer stayed dead and the job lost its lease"
    assert crashed == {
        "reaper",
        "listener",
        "lease-renewer",
        "connection-budget",
        "cleaner",
        "completer",
    }
    assert set(services) == crashed
    for name, service in services.items():
        assert service.restarts == 1, name
        if name != "listener":  # its tick is one long LISTEN; the NOTIFY above proved it
            assert service.ticks >= 1, name
        [record] = [r for r in caplog.records if r.getMessage().startswith(f"{name} crashed")]
        assert record.exc_info is not None and f"injected bug in {name}" in str(record.exc_info[1])
    assert {s.uid for s in stores if s.attempt == 1} == set(uids)  # the long job did them all
    assert await asyncio.to_thread(flagged_on_server, imap_account) == set(uids)


# -- a lease that cannot be renewed stops its worker in time ----------------------


@pytest.mark.parametrize(
    "outage",
    [
        pytest.param("renewer_bug", id="renewer-raises-a-bug-then-worker-hands-the-job-back"),
        pytest.param("database_unreachable", id="database-unreachable-then-reaper-requeues"),
    ],
)
async def test_a_job_whose_lease_cannot_be_renewed_stops_before_it_expires_and_never_runs_twice_concurrently(
    store: JobStore,
    pool: Any,
    imap_account: ImapAccount,
    monkeypatch: pytest.MonkeyPatch,
    outage: str,
) -> None:
    uids = await asyncio.to_thread(seed, imap_account, 24)
    stores: list[Store] = []
    handlers = {**HANDLERS, JobType.SYNC: flagging_handler(stores, pause=0.25)}
    lease = 3.0
    settings = executor_settings(lease_seconds=lease, poll_seconds=0.2)
    sick_owners: set[str] = set()  # the first executor's workers
    sick_claims = 0

    real_renew, real_claim, real_retry = (
        JobStore.renew_leases,
        JobStore.claim,
        JobStore.retry_later,
    )

    def fail() -> Exception:
        if outage == "renewer_bug":
            return RuntimeError("injected bug in renew_leases")
        return psycopg.OperationalError("injected: connection to the database lost")

    async def renew_leases(self: JobStore, leases: Any, **kw: Any) -> Any:
        if any(lease.owner in sick_owners for lease in leases):
            raise fail()
        return await real_renew(self, leases, **kw)

    async def claim(self: JobStore, owners: Any, **kw: Any) -> Any:
        nonlocal sick_claims
        if set(owners) & sick_owners:
            if sick_claims:
                return []  # the sick executor takes this one job only
            jobs = await real_claim(self, owners, **kw)
            sick_claims += len(jobs)
            return jobs
        return await real_claim(self, owners, **kw)

    async def retry_later(self: JobStore, lease: Lease, *args: Any, **kw: Any) -> Any:
        if lease.owner in sick_owners and outage == "database_unreachable":
            raise psycopg.OperationalError("injected: connection to the database lost")
        return await real_retry(self, lease, *args, **kw)

    monkeypatch.setattr(JobStore, "renew_leases", renew_leases)
    monkeypatch.setattr(JobStore, "claim", claim)
    monkeypatch.setattr(JobStore, "retry_later", retry_later)

    url = str(pool.conninfo)
    job = await store.enqueue("sync")
    async with running_executor(url, imap_account, workers=1, settings=settings) as sick:
        sick.handlers = handlers  # before its first await: nothing claimed yet
        sick_owners.update(slot.owner for slot in sick.slots)
        first = await wait_for_job(
            store, job.job_id, until=lambda j: j.status is JobStatus.RUNNING, timeout=10
        )
        assert first.lease_owner in sick_owners
        # A healthy executor, running alongside, is there to take the job over.
        async with running_executor(url, imap_account, workers=1, settings=settings) as healthy:
            healthy.handlers = handlers
            done = await wait_for_job(store, job.job_id, timeout=60)

    assert done.status is JobStatus.COMPLETED, done.error
    assert done.attempt == 2
    events = await store.events_after(job.job_id)
    claim1, claim2 = claims(events)
    assert claim1.data["worker"] in sick_owners and claim2.data["worker"] not in sick_owners
    expires1 = claim1.created_at.timestamp() + lease  # never renewed: claim + lease

    first_run = [s for s in stores if s.attempt == 1]
    second_run = [s for s in stores if s.attempt == 2]
    assert first_run and second_run
    # The first worker touched the mailbox only while its lease was certainly
    # valid, and stopped at least a margin before it expired...
    assert max(s.ended for s in first_run) < expires1 - lease_margin(lease) / 2
    # ...wrote nothing after the second attempt was claimed...
    assert all(e.seq < claim2.seq for e in events if e.data.get("attempt") == 1)
    # ...and the two attempts never worked at the same time.
    assert max(s.ended for s in first_run) < min(s.started for s in second_run)
    assert claim2.created_at.timestamp() < min(s.started for s in second_run)
    # No message was changed twice, every message was changed once.
    assert Counter(s.uid for s in stores) == Counter(uids)
    assert await asyncio.to_thread(flagged_on_server, imap_account) == set(uids)

    messages = [e.message for e in events]
    if outage == "renewer_bug":
        # The worker handed the job back itself, before the reaper had to.
        assert any(m.startswith("will retry: ") and "lease" in m for m in messages)
        assert not any("expired" in m for m in messages)
    else:
        assert any("expired" in m for m in messages)


# -- an IMAP command cannot outlive the lease -----------------------------------------


async def test_an_imap_call_still_waiting_at_the_lease_deadline_is_abandoned_and_its_connection_dropped(
    store: JobStore, imap_account: ImapAccount
) -> None:
    lease = 2.0
    settings = executor_settings(lease_seconds=lease)
    thread_done = threading.Event()
    reached: list[str] = []

    def wait_for_news(client: imapclient.IMAPClient) -> Any:
        try:
            client.idle()
            # Blocks on the server's socket until the worker drops the connection;
            # an untagged line the server sends meanwhile (Dovecot's "* OK Still
            # here", a busy machine's late EXISTS) must not end the wait early.
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                if not client.idle_check(timeout=deadline - time.monotonic()):
                    break  # nothing but the end: the connection was dropped
            return None
        finally:
            thread_done.set()

    async def handler(ctx: JobContext) -> dict[str, Any]:
        client = await ctx.imap.ensure()
        await ctx.imap.call(client.select_folder, "INBOX")
        await ctx.imap.call(wait_for_news, client)
        reached.append("after the call")  # never: the call is abandoned
        return {}

    job = await store.enqueue("sync")
    sent = time.monotonic()
    [claimed] = await store.claim(["w-bounded"], lease_seconds=lease)
    slot = WorkerSlot(0, "w-bounded", ImapSession(imap_account, name="w-bounded"))
    async with asyncio.timeout(lease + 3):
        await run_job(
            claimed, slot, store, settings, handlers={JobType.SYNC: handler}, claimed_at=sent
        )
    stopped = time.monotonic()
    assert stopped - sent < lease, "the worker waited past its lease"
    assert reached == []
    assert slot.imap.client is None  # dropped, not handed to the next job half-used
    assert await asyncio.to_thread(thread_done.wait, 5), "the blocked IMAP thread never ended"
    after = await store.get(job.job_id)
    assert after is not None and after.status is JobStatus.PENDING
    last = (await store.events_after(job.job_id))[-1]
    assert last.message.startswith("will retry: ") and "lease" in last.message


async def test_an_imap_call_after_the_lease_was_reported_lost_is_never_sent(
    store: JobStore, imap_account: ImapAccount
) -> None:
    sent_calls: list[str] = []

    async def handler(ctx: JobContext) -> dict[str, Any]:
        client = await ctx.imap.ensure()
        ctx.lease_lost = True  # what the renewer sets when the row is no longer ours
        await ctx.imap.call(lambda: sent_calls.append("select") or client.select_folder("INBOX"))
        return {}

    job = await store.enqueue("sync")
    [claimed] = await store.claim(["w-lost"], lease_seconds=30)
    slot = WorkerSlot(0, "w-lost", ImapSession(imap_account, name="w-lost"))
    await run_job(claimed, slot, store, executor_settings(), handlers={JobType.SYNC: handler})
    assert sent_calls == []
    after = await store.get(job.job_id)
    assert after is not None and after.status is JobStatus.RUNNING  # left for the reaper
    await slot.imap.discard()


# -- no spurious "lease lost" ----------------------------------------------------------


def _lease_lost_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.WARNING and "lease lost" in r.getMessage()
    ]


@pytest.mark.parametrize("window", ["between-snapshot-and-query", "before-the-worker-returns"])
async def test_a_job_that_finishes_while_its_lease_is_renewed_is_not_reported_lost(
    store: JobStore,
    imap_account: ImapAccount,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    window: str,
) -> None:
    caplog.set_level(logging.INFO)
    settings = executor_settings(lease_seconds=30)
    slot = WorkerSlot(0, f"w-{uuid.uuid4().hex[:6]}", ImapSession(imap_account))
    renewer = LeaseRenewer(
        store, lambda: [slot.current] if slot.current else [], settings.lease_seconds
    )
    may_finish = asyncio.Event()
    seen: list[JobContext] = []

    async def handler(ctx: JobContext) -> dict[str, Any]:
        seen.append(ctx)
        await may_finish.wait()
        return {"ok": True}

    job = await store.enqueue("sync")
    [claimed] = await store.claim([slot.owner], lease_seconds=30)

    if window == "between-snapshot-and-query":
        real_renew = store.renew_leases

        async def renew_after_the_job_finished(leases: Any, **kw: Any) -> Any:
            may_finish.set()  # the snapshot is taken: now let the job end...
            await wait_for_job(store, job.job_id, timeout=10)  # ...and commit
            return await real_renew(leases, **kw)

        monkeypatch.setattr(store, "renew_leases", renew_after_the_job_finished)
        worker = asyncio.create_task(
            run_job(claimed, slot, store, settings, handlers={JobType.SYNC: handler})
        )
        await _until(lambda: bool(seen))
        await renewer.renew_once()
        await worker
    else:
        real_finish = store.finish

        async def finish_then_renew(*args: Any, **kw: Any) -> Any:
            final = await real_finish(*args, **kw)
            await renewer.renew_once()  # committed, but run_job has not returned yet
            return final

        monkeypatch.setattr(store, "finish", finish_then_renew)
        may_finish.set()
        await run_job(claimed, slot, store, settings, handlers={JobType.SYNC: handler})

    done = await store.get(job.job_id)
    assert done is not None and done.status is JobStatus.COMPLETED
    assert _lease_lost_warnings(caplog) == []
    assert not seen[0].lease_lost
    assert "finished while its lease was being renewed" in caplog.text


async def test_a_lease_taken_over_by_someone_else_is_reported_lost_and_the_job_stops(
    store: JobStore, imap_account: ImapAccount, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    settings = executor_settings(lease_seconds=30)
    slot = WorkerSlot(0, "w-taken", ImapSession(imap_account))
    renewer = LeaseRenewer(
        store, lambda: [slot.current] if slot.current else [], settings.lease_seconds
    )
    batches = 0

    async def handler(ctx: JobContext) -> dict[str, Any]:
        nonlocal batches
        while True:
            ctx.checkpoint()
            batches += 1
            await asyncio.sleep(0.05)

    job = await store.enqueue("sync")
    [claimed] = await store.claim([slot.owner], lease_seconds=30)
    worker = asyncio.create_task(
        run_job(claimed, slot, store, settings, handlers={JobType.SYNC: handler})
    )
    await _until(lambda: batches >= 2)
    # Someone else re-queued the job (a reaper that saw it expired, an operator).
    assert await store.release(Lease.of(claimed)) is not None
    await renewer.renew_once()
    async with asyncio.timeout(2):
        await worker  # stopped at its next checkpoint
    assert f"lease lost job_id={job.job_id} worker=w-taken" in _lease_lost_warnings(caplog)
    after = await store.get(job.job_id)
    assert after is not None and after.status is JobStatus.PENDING  # as the other party left it
