"""The completer: writes the workers' progress events and completions in
batches, and hands each freed worker its next job in the same statement.

Without it every job cost at least three round trips and three commits of its
own (claim, its events, completion). A worker hands its write here and waits;
whatever the other workers hand in while one batch is being written goes into
the next one (group commit, no added wait). One `claim` statement writes the
batch, each job's writes fenced by its own status, attempt and owner, and
claims one job for each worker that completed one and will take another.
A job's writes keep the order they were queued in, within a batch and
across batches (one batch is written at a time).

Safety, as for the worker's own write:
* a write whose lease was lost changes nothing and comes back as lost;
* a progress write returns only once committed, with its event's seq (gapless,
  in commit order: the job row is locked while its seq is taken) and the
  job's cancel flag; one written behind (`JobContext.progress(wait=False)`)
  reports them to its context when its batch commits;
* until its completion is written, the job is still its worker's current
  job, so the lease renewer keeps renewing it;
* if a batch cannot be written (database away, a bug here), every worker in it
  gets `WriteFailed` and writes for itself (`JobContext.progress`,
  `worker.run_job`): no completion and no awaited event is lost (an event
  written behind is logged and dropped); if the worker's own write fails too,
  the lease runs out and the reaper returns the job, which runs again (as
  without the completer).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from app.jobs.models import Job, Lease
from app.jobs.store import JobStore, JobWrite, WriteKind
from executor.services import Service

log = logging.getLogger("executor.completer")


class WriteFailed(Exception):
    """The batch holding this write was not written."""


@dataclass(frozen=True)
class Written:
    """What became of one write."""

    job: Job | None  # the job's row after the batch; None when the lease had been lost
    seq: int | None = None  # this write's event
    next_job: Job | None = None  # claimed for the same worker in the same statement
    claimed_at: float = 0.0  # monotonic time the statement was sent: the next lease runs from here


@dataclass
class _Pending:
    write: JobWrite
    want_next: bool
    future: asyncio.Future[Written] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


def _take_batch(queue: list[_Pending]) -> tuple[list[_Pending], list[_Pending]]:
    """What goes into one statement, in queue order: a job's writes under one
    lease and none after its completion. A write that breaks that (a job
    reclaimed under a new lease, a write after a completion) waits for the
    next batch, with every later write of its job, so their order holds."""
    batch: list[_Pending] = []
    later: list[_Pending] = []
    leases: dict[object, Lease] = {}
    held_back: set[object] = set()
    for pending in queue:
        lease = pending.write.lease
        job_id = lease.job_id
        if job_id in held_back or leases.setdefault(job_id, lease) != lease:
            held_back.add(job_id)
            later.append(pending)
            continue
        batch.append(pending)
        if pending.write.kind is WriteKind.COMPLETE:
            held_back.add(job_id)
    return batch, later


class Completer(Service):
    name = "completer"
    max_backoff = 1.0  # workers write for themselves meanwhile

    def __init__(
        self,
        store: JobStore,
        *,
        lease_seconds: float,
        job_types: Iterable[str] | None = None,
        stopping: asyncio.Event | None = None,
    ) -> None:
        """Once `stopping` is set, no next jobs are claimed (writes still go)."""
        super().__init__()
        self.store = store
        self.lease_seconds = lease_seconds
        self.job_types = list(job_types) if job_types is not None else None
        self.stopping = stopping
        self._queue: list[_Pending] = []
        self._ready = asyncio.Event()
        self.batches = 0  # statements written, for tests and the bench
        self.writes = 0

    async def write(self, write: JobWrite, *, want_next: bool = False) -> Written:
        """Write `write` in the next batch; for a completion with `want_next`,
        also claim a job for its owner (unless the executor is stopping)."""
        return await self.submit(write, want_next=want_next)

    def submit(self, write: JobWrite, *, want_next: bool = False) -> asyncio.Future[Written]:
        """Queue `write` now (a job's writes go in the order they are queued)
        and return what will say how it went."""
        if not self.running:
            raise WriteFailed("the completer is not running")
        pending = _Pending(write, want_next and write.kind is WriteKind.COMPLETE)
        self._queue.append(pending)
        self._ready.set()
        return pending.future

    async def tick(self) -> None:
        await self._ready.wait()
        self._ready.clear()
        batch, self._queue = _take_batch(self._queue)
        if self._queue:
            self._ready.set()
        try:
            if batch:
                await self._write(batch)
        finally:  # whatever went wrong, no worker waits for a batch that is gone
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(WriteFailed("the batch was not written"))

    async def stop(self) -> None:
        await super().stop()
        for pending in self._queue:
            if not pending.future.done():
                pending.future.set_exception(WriteFailed("the completer stopped"))
        self._queue = []

    async def _write(self, batch: list[_Pending]) -> None:
        claiming = self.stopping is None or not self.stopping.is_set()
        owners = [p.write.lease.owner for p in batch if p.want_next and claiming]
        sent = time.monotonic()
        try:
            result = await self.store.write_and_claim(
                [p.write for p in batch],
                owners,
                lease_seconds=self.lease_seconds,
                job_types=self.job_types,
            )
        except BaseException as exc:
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(WriteFailed(f"batch not written: {exc!r}"))
            raise
        self.batches += 1
        self.writes += len(batch)
        next_for = {job.lease_owner: job for job in result.claimed}
        # A job's writes took its seqs in batch order, up to its row's last_seq.
        left = {job_id: 0 for job_id in result.written}
        for pending in batch:
            job_id = pending.write.lease.job_id
            if job_id in left:
                left[job_id] += 1
        for pending in batch:
            lease = pending.write.lease
            job = result.written.get(lease.job_id)
            seq = None
            if job is not None:
                left[lease.job_id] -= 1
                seq = job.last_seq - left[lease.job_id]
            next_job = next_for.pop(lease.owner, None) if pending.want_next else None
            if pending.future.done():  # its worker was cancelled meanwhile
                if next_job is not None:
                    await self._hand_back(next_job)
                continue
            pending.future.set_result(Written(job, seq, next_job, sent))
        for job in next_for.values():  # cannot happen: one owner per completion
            await self._hand_back(job)

    async def _hand_back(self, job: Job) -> None:
        """A job claimed for a worker that is gone goes back, its attempt unspent."""
        log.warning("job_id=%s was claimed for a worker that left; releasing it", job.job_id)
        await self.store.release(Lease.of(job))
