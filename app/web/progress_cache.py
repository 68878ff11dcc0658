"""Where the web gets a job's `Progress` without replaying every event.

A state is found, cheapest first: in this process's byte-bounded cache (the
page's render leaves it there, so the card stream that connects a moment later
folds only what came after); else, for a finished job, in its stored summary
(`imap_jobs.progress`); else it is folded from the job's events, from seq 0.
A finished job's state is complete once its change record is attached (for
mutations), and its summary is then stored once, so later reads, other web
processes and the cleaner start from it.

Cached states never go stale: events are append-only and every change of a
job's counters comes with an event, so a state folded to seq N is right for
seq N forever; a reader folds whatever follows on top.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Sequence

from psycopg.types.json import Jsonb

from app.db.queries import query
from app.jobs.models import Job
from app.jobs.progress import NO_CHANGES, Progress, Record, fold_all
from app.jobs.store import JobStore
from app.web.byte_lru import ByteLRU

CACHE_BYTES = 8 * 1024 * 1024
EVENT_PAGE = 1000


@dataclasses.dataclass(frozen=True)
class _Entry:
    state: Progress
    saved: bool  # its summary is stored on the job (finished jobs only)


class ProgressCache:
    def __init__(self, budget: int = CACHE_BYTES) -> None:
        self.entries: ByteLRU[str, _Entry] = ByteLRU(budget, lambda e: e.state.nbytes())

    def remember(self, state: Progress, *, saved: bool = False) -> None:
        old = self.entries.get(state.job_id)
        if old is not None and old.state.seq >= state.seq:
            # Another stream of the job got here first (every stream watching a
            # job folds the same events): keep its entry unless this adds to it.
            adds = (saved and not old.saved) or (
                state.record is not None and old.state.record is None
            )
            if old.state.seq > state.seq or not adds:
                return
        self.entries.put(state.job_id, _Entry(state, saved or (old is not None and old.saved)))

    def clear(self) -> None:
        self.entries.clear()

    def cached(self, job: Job) -> Progress | None:
        entry = self.entries.get(str(job.job_id))
        if entry is None or entry.state.seq > job.last_seq:
            return None  # (a state ahead of the row: another database; never trust it)
        return entry.state.with_head(job)

    async def base(self, store: JobStore, job: Job) -> Progress:
        """A state to fold `job`'s newer events onto: cached, stored, or empty."""
        cached = self.cached(job)
        if cached is not None:
            return cached
        return (await self._stored(store, [job]))[job.job_id]

    async def current(self, store: JobStore, jobs: Sequence[Job]) -> list[Progress]:
        """Each job's state up to its `last_seq`, finished ones complete: what
        the page renders. A few queries for the lot when nothing is cached."""
        states: dict[uuid.UUID, Progress] = {}
        missing = []
        for job in jobs:
            cached = self.cached(job)
            if cached is None:
                missing.append(job)
            else:
                states[job.job_id] = cached
        states.update(await self._stored(store, missing))
        for job in jobs:
            state = states[job.job_id]
            if state.seq < job.last_seq:
                state = await self._fold_from_events(store, state, job)
            states[job.job_id] = state
        done = [s for s in states.values() if s.finished]
        for state in await self.settle(store, done):
            states[uuid.UUID(state.job_id)] = state
        for job in jobs:
            if not states[job.job_id].finished:
                self.remember(states[job.job_id])
        return [states[job.job_id] for job in jobs]

    async def settle(self, store: JobStore, states: Sequence[Progress]) -> list[Progress]:
        """Finished states made complete: the change record attached to each
        mutation, the summary stored on each job once. Returns them in order.

        A job's many streams end together: the first to settle it does the
        reads and the write, the others take its result from the cache."""
        out: dict[str, Progress] = {}
        for state in states:
            entry = self.entries.get(state.job_id)
            settled = entry is not None and entry.saved and entry.state.seq >= state.seq
            if entry is not None and settled and (entry.state.record or not state.is_mutation):
                out[state.job_id] = entry.state.with_head(state)
        todo = [s for s in states if s.job_id not in out]
        need_record = [s for s in todo if s.is_mutation and s.record is None]
        records = await store.change_summaries([uuid.UUID(s.job_id) for s in need_record])
        for state in todo:
            if state.is_mutation and state.record is None:
                found = records.get(uuid.UUID(state.job_id))
                record = Record(found.applied, tuple(found.uids)) if found else NO_CHANGES
                state = state.with_record(record)
            entry = self.entries.get(state.job_id)
            saved = entry is not None and entry.saved and entry.state.seq >= state.seq
            self.remember(state, saved=True)  # before the write: one writer per process
            if not saved:
                await self._save(store, state)
            out[state.job_id] = state
        return [out[s.job_id] for s in states]

    # -- the database -----------------------------------------------------------

    async def _stored(self, store: JobStore, jobs: Sequence[Job]) -> dict[uuid.UUID, Progress]:
        """Fresh states, from the stored summary where a finished job has one."""
        states = {job.job_id: Progress.start(job) for job in jobs}
        finished = [job.job_id for job in jobs if job.status.is_terminal]
        if finished:
            async with store.pool.connection() as conn:
                rows = await (
                    await conn.execute(query("job_progress_many"), {"job_ids": finished})
                ).fetchall()
            last_seq = {job.job_id: job.last_seq for job in jobs}
            for row in rows:
                restored = states[row["job_id"]].from_summary(row["progress"])
                if restored is not None and restored.seq <= last_seq[row["job_id"]]:
                    states[row["job_id"]] = restored
                    # Stored and complete: settle() need not write it again.
                    self.remember(restored, saved=restored.seq == last_seq[row["job_id"]])
        return states

    async def _fold_from_events(self, store: JobStore, state: Progress, job: Job) -> Progress:
        while state.seq < job.last_seq:
            page = await store.events_after(job.job_id, state.seq, limit=EVENT_PAGE)
            state = fold_all(state, page)
            if len(page) < EVENT_PAGE:
                break
        return state

    async def _save(self, store: JobStore, state: Progress) -> None:
        async with store.pool.connection() as conn:
            await conn.execute(
                query("job_progress_save"),
                {
                    "job_id": uuid.UUID(state.job_id),
                    "seq": state.seq,
                    "progress": Jsonb(state.summary()),
                },
            )


# The web process's one cache (the page and the card streams share it).
CACHE = ProgressCache()
