"""The cleaner: keeps `imap_jobs` and `imap_job_events` from growing forever
(River's `job_cleaner` is the model).

Every `SECRETARY_CLEANER_INTERVAL` seconds, jobs that finished more than
`SECRETARY_RETENTION_DAYS` ago are cleaned:

- a read-only job (`sync`, `rescore`: `imap_job_types.is_mutation` false) is
  deleted with its events: first its events, then the job row;
- a mutation job is kept, with its approval and its change record, because
  undo is offered for every finished mutation for as long as its record
  exists; only its events go, after their fold (app/jobs/progress.py, the same
  fold the page uses) is stored on the job, in the transaction that deletes
  them, so its card renders the same afterwards.

Every statement deletes at most a batch of rows and skips rows another
transaction holds, so no statement holds locks for long, workers and streams
never wait on the cleaner, and any number of executors may each run one.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import Any

from psycopg.types.json import Jsonb

from app.db.queries import query
from app.jobs.models import Job, JobEvent
from app.jobs.progress import Progress, fold_all
from app.jobs.store import JobStore
from executor.services import Service

log = logging.getLogger("executor.cleaner")

DEFAULT_RETENTION_DAYS = 30.0
DEFAULT_INTERVAL = 300.0
EVENT_BATCH = 1000  # events deleted per statement
JOB_BATCH = 200  # read-only jobs deleted per statement
KEPT_BATCH = 50  # mutation jobs whose events are pruned per round
BATCH_PAUSE = 0.02  # between two statements: let other work at the database in between
EVENT_PAGE = 1000


@dataclass
class CleanResult:
    events: int = 0  # events of read-only jobs deleted
    jobs: int = 0  # read-only jobs deleted
    kept_jobs: int = 0  # mutation jobs whose events were pruned
    kept_events: int = 0  # and how many events that was

    def __bool__(self) -> bool:
        return bool(self.events or self.jobs or self.kept_jobs)


class Cleaner(Service):
    name = "cleaner"

    def __init__(
        self,
        store: JobStore,
        *,
        retention_days: float = DEFAULT_RETENTION_DAYS,
        interval: float = DEFAULT_INTERVAL,
        event_batch: int = EVENT_BATCH,
        job_batch: int = JOB_BATCH,
        kept_batch: int = KEPT_BATCH,
    ) -> None:
        super().__init__()
        self.store = store
        self.keep_seconds = retention_days * 86400.0
        self.interval = interval
        self.event_batch = event_batch
        self.job_batch = job_batch
        self.kept_batch = kept_batch
        self.total = CleanResult()

    async def tick(self) -> None:
        result = await self.clean_once()
        if result:
            log.info(
                "cleaned: %d finished read-only job(s) with %d event(s); events of %d "
                "mutation job(s) (%d event(s)); the mutation jobs and their records are kept",
                result.jobs,
                result.events,
                result.kept_jobs,
                result.kept_events,
            )
        await self._sleep(self.interval)

    async def clean_once(self) -> CleanResult:
        """Clean everything due now, one bounded statement at a time."""
        result = CleanResult()
        params = {"keep_seconds": self.keep_seconds}
        while not self._stop.is_set():
            n = await self._execute("cleaner_prune_read_only_events", params, self.event_batch)
            result.events += n
            if n < self.event_batch:
                break
            await self._sleep(BATCH_PAUSE)
        while not self._stop.is_set():
            gone = await self._delete_jobs(params)
            result.jobs += gone
            if gone < self.job_batch:
                break
            await self._sleep(BATCH_PAUSE)
        while not self._stop.is_set():
            candidates = await self._kept_candidates(params)
            progressed = False
            for job in candidates:
                pruned = await self.prune_kept_job(job)
                if pruned is not None:
                    progressed = True
                    result.kept_jobs += 1
                    result.kept_events += pruned
            # All held by another cleaner: leave them to it, or to the next round.
            if len(candidates) < self.kept_batch or not progressed:
                break
            await self._sleep(BATCH_PAUSE)
        self._add(result)
        return result

    async def prune_kept_job(self, job: Job) -> int | None:
        """Fold a finished mutation job's events onto its stored fold, store the
        result and delete the events, in one transaction that holds the job's
        row. None when another transaction holds it (it is tried next round)."""
        async with self.store.pool.connection() as conn, conn.transaction():
            row = await (
                await conn.execute(query("cleaner_lock_kept_job"), {"job_id": job.job_id})
            ).fetchone()
            if row is None:
                return None
            fresh = Progress.start(job)
            state = fresh.from_summary(row["progress"]) or fresh
            after = state.seq
            while after < row["last_seq"]:
                rows = await (
                    await conn.execute(
                        query("events_after"),
                        {"job_id": job.job_id, "after": after, "limit": EVENT_PAGE},
                    )
                ).fetchall()
                state = fold_all(state, (JobEvent.from_row(r) for r in rows))
                if len(rows) < EVENT_PAGE:
                    break
                after = rows[-1]["seq"]
            done = await (
                await conn.execute(
                    query("cleaner_prune_kept_job"),
                    {
                        "job_id": job.job_id,
                        "seq": state.seq,
                        "progress": Jsonb(state.summary()),
                    },
                )
            ).fetchone()
        return int(done["events"]) if done else 0

    async def _execute(self, name: str, params: dict[str, Any], limit: int) -> int:
        async with self.store.pool.connection() as conn:
            cur = await conn.execute(query(name), {**params, "limit": limit})
            return cur.rowcount

    async def _delete_jobs(self, params: dict[str, Any]) -> int:
        async with self.store.pool.connection() as conn:
            cur = await conn.execute(
                query("cleaner_delete_read_only_jobs"), {**params, "limit": self.job_batch}
            )
            gone: list[uuid.UUID] = [r["job_id"] for r in await cur.fetchall()]
        if gone:
            log.debug("deleted %d finished read-only job(s)", len(gone))
        return len(gone)

    async def _kept_candidates(self, params: dict[str, Any]) -> list[Job]:
        async with self.store.pool.connection() as conn:
            rows = await (
                await conn.execute(query("cleaner_kept_jobs"), {**params, "limit": self.kept_batch})
            ).fetchall()
        return [Job.from_row(r) for r in rows]

    def _add(self, result: CleanResult) -> None:
        self.total.events += result.events
        self.total.jobs += result.jobs
        self.total.kept_jobs += result.kept_jobs
        self.total.kept_events += result.kept_events
