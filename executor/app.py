"""The imap-executor: a fixed pool of workers fed by one producer and by the
completer (which writes the workers' events and completions in batches and
claims each freed worker's next job in the same statement), plus the lease
renewer, the reaper and the listener; and for the live mirror the
connection budget keeper, the INBOX watcher and the interval sweeper. Several
executors (on one host or many) can share a database: claims skip each other's
locked rows, one of them watches, and all count against one connection budget."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Iterable, Mapping

import psycopg

from app.config import ImapAccount, Settings
from app.db.pool import open_pool
from app.jobs.models import Job, Lease
from app.jobs.store import JobStore
from executor.cleaner import Cleaner
from executor.completer import Completer
from executor.connection_budget import WATCHER, BudgetKeeper, ConnectionBudget, account_key
from executor.context import JobContext
from executor.handlers import Handler
from executor.imap_auth import ImapSignIn
from executor.imap_session import ImapSession
from executor.parsing import ParserPool
from executor.services import LeaseRenewer, Listener, Reaper, Service
from executor.sweeper import Sweeper
from executor.watcher import InboxWatcher
from executor.worker import WorkerSlot, run_job

log = logging.getLogger("executor")


class Executor:
    def __init__(
        self,
        settings: Settings,
        conninfo: str,
        account: ImapAccount,
        *,
        workers: int = 3,
        job_types: Iterable[str] | None = None,
        shutdown_grace: float = 5.0,
        release_timeout: float = 10.0,
        handlers: Mapping[object, Handler] | None = None,
    ) -> None:
        """`handlers` replaces the job-type → handler table (tests use it)."""
        if workers < 1:
            raise ValueError("an executor needs at least one worker")
        self.settings = settings
        self.conninfo = conninfo
        self.job_types = list(job_types) if job_types is not None else None
        self.shutdown_grace = shutdown_grace
        self.release_timeout = release_timeout
        self.handlers = handlers
        instance = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.instance = instance
        self.account_key = account_key(account)
        # Every IMAP connection of this process takes a slot of the account's budget.
        self.budget = ConnectionBudget(
            self.account_key,
            settings.imap_max_connections,
            lease_seconds=settings.lease_seconds,
            process=instance,
        )
        # One sign-in for every connection of this process: one access token, one refresh.
        self.sign_in = ImapSignIn(account, settings.data_dir)
        self.slots = [
            WorkerSlot(
                i,
                f"{instance}:w{i}",
                ImapSession(
                    account, name=f"{instance}:w{i}", budget=self.budget, sign_in=self.sign_in
                ),
            )
            for i in range(workers)
        ]
        self.budget.idle_sessions = lambda: [s.imap for s in self.slots if not s.busy]
        # The watcher's own connection, in the budget's watcher slot (never
        # waited for: the slot is free unless another executor's watcher holds it).
        self.watch_session = ImapSession(
            account,
            name=f"{instance}:watch",
            budget=self.budget,
            purpose=WATCHER,
            slot_wait=0,
            sign_in=self.sign_in,
        )
        self.watcher: InboxWatcher | None = None  # made by run(), when the live mirror is on
        self.sweeper: Sweeper | None = None
        self.parser = ParserPool(settings.parse_processes)
        self.tasks: set[asyncio.Task[None]] = set()
        self.stopping = asyncio.Event()
        self.wake = asyncio.Event()
        self.services: list[Service] = []
        self.completer: Completer | None = None  # made by run()

    def in_flight(self) -> list[JobContext]:
        return [s.current for s in self.slots if s.current is not None]

    def stop(self) -> None:
        """Stop claiming; in-flight jobs finish or are released (see `run`)."""
        self.stopping.set()
        self.wake.set()

    async def run(self) -> None:
        pool = await open_pool(
            self.conninfo, min_size=1, max_size=2 * len(self.slots) + 6, quick_check=True
        )
        # The claim statement (the completer's batches, the producer's claims)
        # on connections that plan it once: planning it cost as much as running it.
        try:
            claims = await open_pool(
                self.conninfo, min_size=1, max_size=2, quick_check=True, generic_plans=True
            )
        except BaseException:
            await pool.close()
            raise
        store = JobStore(pool, claims=claims)
        lease = self.settings.lease_seconds
        self.budget.bind(pool)
        self.completer = Completer(
            store, lease_seconds=lease, job_types=self.job_types, stopping=self.stopping
        )
        self.services = services = [
            self.completer,
            LeaseRenewer(store, self.in_flight, lease),
            Reaper(store, max(0.5, lease / 2), self.wake),
            Listener(self.conninfo, self.wake),
            BudgetKeeper(self.budget),
            Cleaner(
                store,
                retention_days=self.settings.retention_days,
                interval=self.settings.cleaner_interval,
            ),
        ]
        if self.settings.live_mirror:
            services.extend(self._live_mirror_services(store))
        for service in services:
            service.start()
        log.info(
            "executor started workers=%d owners=%s", len(self.slots), [s.owner for s in self.slots]
        )
        try:
            await self._produce(store)
            await self._drain()
        finally:
            for service in services:
                await service.stop()
            for slot in self.slots:
                await slot.imap.discard()
            self.parser.close()
            await claims.close()
            await pool.close()
            log.info("executor stopped")

    def _live_mirror_services(self, store: JobStore) -> list[Service]:
        """The INBOX watcher (when the budget has room for it) and the sweeper."""
        self.sweeper = Sweeper(
            store, account=self.account_key, interval=self.settings.sync_interval
        )
        if not self.budget.watcher_enabled:
            log.warning(
                "IMAP_MAX_CONNECTIONS=1 leaves no connection for the INBOX watcher: "
                "the mirror is kept fresh by the interval sweeps only"
            )
            return [self.sweeper]
        self.watcher = InboxWatcher(
            store,
            self.watch_session,
            account=self.account_key,
            owner=self.instance,
            lease_seconds=self.settings.lease_seconds,
        )
        return [self.watcher, self.sweeper]

    async def _produce(self, store: JobStore) -> None:
        backoff = 0.5
        while not self.stopping.is_set():
            self.wake.clear()
            free = [s for s in self.slots if not s.busy]
            claimed = 0
            if free:
                sent = time.monotonic()  # the leases run from here at the latest
                try:
                    jobs = await store.claim(
                        [s.owner for s in free],
                        lease_seconds=self.settings.lease_seconds,
                        job_types=self.job_types,
                    )
                    backoff = 0.5
                except Exception as exc:
                    if isinstance(exc, psycopg.Error | OSError):
                        log.warning("claim failed: %s; retrying in %.1fs", exc, backoff)
                    else:
                        log.exception("claim crashed; retrying in %.1fs", backoff)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 15)
                    continue
                by_owner = {s.owner: s for s in free}
                for job in jobs:
                    slot = by_owner[job.lease_owner or ""]
                    self._start(job, slot, store, sent)
                claimed = len(jobs)
            if free and claimed == len(free):
                continue  # every free worker got a job: look again once one frees up
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.wake.wait(), self.settings.poll_seconds)

    def _start(self, job: Job, slot: WorkerSlot, store: JobStore, claimed_at: float) -> None:
        async def runner() -> None:
            # The completer may hand this worker its next job with each completion.
            handoff: tuple[Job, float] | None = (job, claimed_at)
            try:
                while handoff is not None:
                    current, at = handoff
                    handoff = None
                    try:
                        handoff = await run_job(
                            current,
                            slot,
                            store,
                            self.settings,
                            handlers=self.handlers,
                            parser=self.parser,
                            claimed_at=at,
                            completer=self.completer,
                        )
                    except Exception:
                        log.exception(
                            "worker %s: job_id=%s escaped its handler", slot.owner, current.job_id
                        )
                    if handoff is not None and self.stopping.is_set():
                        await self._hand_back(store, handoff[0])  # claimed as we were stopping
                        handoff = None
            finally:
                slot.busy = False
                self.wake.set()

        slot.busy = True  # at once, so the next claim cannot give this worker a second job
        task = asyncio.create_task(runner(), name=slot.owner)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _hand_back(self, store: JobStore, job: Job) -> None:
        """A job claimed for a worker that will not run it goes back, its attempt unspent."""
        try:
            await store.release(Lease.of(job))
        except psycopg.Error as exc:
            log.warning("could not release job_id=%s (%s); its lease will expire", job.job_id, exc)

    async def _drain(self) -> None:
        """Let in-flight jobs finish for a while, then ask them to hand back."""
        if not self.tasks:
            return
        _, pending = await asyncio.wait(self.tasks, timeout=self.shutdown_grace)
        if not pending:
            return
        for ctx in self.in_flight():
            ctx.stopping = True
        _, pending = await asyncio.wait(pending, timeout=self.release_timeout)
        for task in pending:
            task.cancel()
        if pending:
            log.warning("%d job(s) did not stop in time; their leases will expire", len(pending))
