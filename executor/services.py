"""The small services that keep the queue healthy, each with start/stop:
the lease renewer, the reaper and the NOTIFY listener.

Every service is supervised by `Service._run`: whatever a tick raises (short of
cancellation) is logged and the tick runs again after a backoff, so a service
never dies silently. That matters most for the renewer: if it stopped, the
reaper would hand running jobs to other workers while their first worker still
touched the mailbox. (Even so, a worker does not trust a lease it has not seen
renewed: see `JobContext.checkpoint`.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable

import psycopg

from app.db.queries import query
from app.jobs.store import JobStore
from executor.context import JobContext, renew_interval

log = logging.getLogger("executor.services")

# Expected trouble (the database or the network is away) is logged in one line;
# anything else is a bug and is logged with its traceback. Both are retried.
EXPECTED_ERRORS: tuple[type[Exception], ...] = (psycopg.Error, OSError)


class Service:
    """A loop that runs `tick` until stopped and survives anything `tick` raises.

    After a failure the next tick waits `backoff` seconds, doubling up to
    `max_backoff`; one successful tick resets it. The counters are for tests
    and health reports.
    """

    name = "service"
    min_backoff = 0.5
    max_backoff = 15.0

    def __init__(self) -> None:
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self.ticks = 0  # ticks that returned normally
        self.failures = 0  # ticks that raised an expected error (database, network)
        self.restarts = 0  # ticks that raised anything else (a bug), logged with traceback

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self.name)
        self._task.add_done_callback(self._ended)

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    async def _sleep(self, seconds: float) -> None:
        """Sleep, but wake at once when the service is stopped."""
        if seconds <= 0:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)

    async def _run(self) -> None:
        backoff = self.min_backoff
        while not self._stop.is_set():
            try:
                await self.tick()
            except EXPECTED_ERRORS as exc:
                self.failures += 1
                log.warning("%s: %s; retrying in %.1fs", self.name, exc, backoff)
            except Exception:
                # CancelledError is not an Exception: stop() still works.
                self.restarts += 1
                log.exception("%s crashed; restarting in %.1fs", self.name, backoff)
            else:
                self.ticks += 1
                backoff = self.min_backoff
                continue
            await self._sleep(backoff)
            backoff = min(backoff * 2, self.max_backoff)

    def _ended(self, task: asyncio.Task[None]) -> None:
        """Last line of defence: say so if the loop itself ever ends unasked."""
        if self._stop.is_set() or task.cancelled():
            return
        exc = task.exception()
        log.critical("%s stopped unexpectedly", self.name, exc_info=exc)

    async def tick(self) -> None:
        raise NotImplementedError


class LeaseRenewer(Service):
    """Renews every lease this process holds in one query per interval, and
    tells handlers about lost leases and cancel requests between their writes.

    A renewal that succeeds moves each job's local lease deadline forward; one
    that fails is retried soon (the backoff is capped well below the lease), and
    if renewals keep failing the jobs' workers stop on their own before their
    leases can expire (`JobContext.checkpoint`).
    """

    name = "lease-renewer"

    def __init__(
        self, store: JobStore, in_flight: Callable[[], Iterable[JobContext]], lease_seconds: float
    ) -> None:
        super().__init__()
        self.store = store
        self.in_flight = in_flight
        self.lease_seconds = lease_seconds
        self.interval = renew_interval(lease_seconds)
        # A failed renewal is retried well within the interval (the soft
        # deadline is only a few intervals away), and never waits longer.
        self.min_backoff = min(self.min_backoff, self.interval / 2)
        self.max_backoff = self.interval
        self._due = time.monotonic() + self.interval

    async def tick(self) -> None:
        # Due one interval after the last *successful* renewal: after a failure
        # the supervisor's short backoff is the only wait before trying again.
        await self._sleep(self._due - time.monotonic())
        await self.renew_once()

    async def renew_once(self) -> None:
        contexts = [c for c in self.in_flight() if not (c.lease_lost or c.finished)]
        sent = time.monotonic()
        if not contexts:
            self._due = sent + self.interval
            return
        held = await self.store.renew_leases(
            [c.lease for c in contexts], lease_seconds=self.lease_seconds
        )
        self._due = sent + self.interval
        for ctx in contexts:
            if ctx.lease.job_id in held:
                # The database set expiry = its now() + lease, and its now() came
                # after `sent`: deadlines counted from `sent` err on the safe side.
                ctx.lease_renewed(sent, self.lease_seconds)
                if held[ctx.lease.job_id]:
                    ctx.cancel_seen = True
            elif ctx.finishing or ctx.finished:
                # It ended between our snapshot and our query: not a lost lease.
                log.info("job_id=%s finished while its lease was being renewed", ctx.job.job_id)
            else:
                ctx.lease_lost = True
                log.warning("lease lost job_id=%s worker=%s", ctx.job.job_id, ctx.worker)


class Reaper(Service):
    """Returns jobs whose lease expired (their worker died) to the queue."""

    name = "reaper"

    def __init__(self, store: JobStore, interval: float, wake: asyncio.Event) -> None:
        super().__init__()
        self.store = store
        self.interval = interval
        self.wake = wake

    async def tick(self) -> None:
        reaped = await self.store.reap()
        for job in reaped:
            log.warning(
                "reaped job_id=%s status=%s attempt=%s", job.job_id, job.status, job.attempt
            )
        if reaped:
            self.wake.set()
        await self._sleep(self.interval)


class Listener(Service):
    """LISTEN for new jobs. Only a hint: the producer polls anyway."""

    name = "listener"

    def __init__(self, conninfo: str, wake: asyncio.Event) -> None:
        super().__init__()
        self.conninfo = conninfo
        self.wake = wake

    async def tick(self) -> None:
        async with await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True) as conn:
            await conn.execute(query("listen_pending_jobs"))
            self.wake.set()  # anything enqueued while we were not listening
            async for _ in conn.notifies():
                self.wake.set()
                if self._stop.is_set():
                    return
