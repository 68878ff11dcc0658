"""The small services that keep the queue healthy, each with start/stop:
the lease renewer, the reaper and the NOTIFY listener."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable

import psycopg

from app.jobs.store import JobStore
from executor.context import JobContext

log = logging.getLogger("executor.services")


class Service:
    """A loop that runs until stopped and survives database outages."""

    name = "service"

    def __init__(self) -> None:
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self.name)

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)

    async def _run(self) -> None:
        backoff = 0.5
        while not self._stop.is_set():
            try:
                await self.tick()
                backoff = 0.5
            except (psycopg.Error, OSError) as exc:
                log.warning("%s: %s; retrying in %.1fs", self.name, exc, backoff)
                await self._sleep(backoff)
                backoff = min(backoff * 2, 15)

    async def tick(self) -> None:
        raise NotImplementedError


class LeaseRenewer(Service):
    """Renews every lease this process holds in one query per interval, and
    tells handlers about lost leases and cancel requests between their writes."""

    name = "lease-renewer"

    def __init__(
        self, store: JobStore, in_flight: Callable[[], Iterable[JobContext]], lease_seconds: float
    ) -> None:
        super().__init__()
        self.store = store
        self.in_flight = in_flight
        self.lease_seconds = lease_seconds

    async def tick(self) -> None:
        await self._sleep(max(0.2, self.lease_seconds / 3))
        contexts = [c for c in self.in_flight() if not c.lease_lost]
        if not contexts:
            return
        held = await self.store.renew_leases(
            [c.lease for c in contexts], lease_seconds=self.lease_seconds
        )
        for ctx in contexts:
            if ctx.lease.job_id not in held:
                ctx.lease_lost = True
                log.warning("lease lost job_id=%s worker=%s", ctx.job.job_id, ctx.worker)
            elif held[ctx.lease.job_id]:
                ctx.cancel_seen = True


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
    channel = "imap_jobs_pending"

    def __init__(self, conninfo: str, wake: asyncio.Event) -> None:
        super().__init__()
        self.conninfo = conninfo
        self.wake = wake

    async def tick(self) -> None:
        async with await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True) as conn:
            await conn.execute(f"LISTEN {self.channel}")
            self.wake.set()  # anything enqueued while we were not listening
            async for _ in conn.notifies():
                self.wake.set()
                if self._stop.is_set():
                    return
