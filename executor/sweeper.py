"""Interval sweeps: every `SECRETARY_SYNC_INTERVAL` seconds, one ordinary
`sync` of every folder, for the folders no watcher follows (SPEC §5).

The decision is the database's, in one statement (`enqueue_sweep_if_due`), so
it holds fleet-wide: any number of executors run a sweeper, and a sweep is made
only when no all-folder sync is pending or running and none was made within
the interval (a person's /sync counts). Sweeps therefore never stack, and the
folder fence (executor/folder_lock.py) keeps any two syncs from working on the
same folder at the same time. Nothing is swept before the first sync: that
one is the person's to ask for.

The sweeper also prunes the mirror change log the web follows.
"""

from __future__ import annotations

import logging
import time

from app.db.queries import query
from app.jobs.store import JobStore
from app.jobs.sync_requests import enqueue_sweep_if_due
from executor.services import Service

log = logging.getLogger("executor.sweeper")

DEFAULT_SYNC_INTERVAL = 300.0
# mirror_changes rows older than this are deleted (the page only needs recent ones).
CHANGE_LOG_KEEP_SECONDS = 3600.0
PRUNE_EVERY_SECONDS = 300.0


class Sweeper(Service):
    name = "sweeper"

    def __init__(self, store: JobStore, *, account: str, interval: float) -> None:
        super().__init__()
        self.store = store
        self.account = account
        self.interval = interval
        # Looked at a few times per interval, so a sweep is at most a quarter
        # interval late (at most 15 s) after a busy spell.
        self.check_every = max(0.2, min(15.0, interval / 4))
        self.sweeps = 0
        self._pruned_at = 0.0

    async def tick(self) -> None:
        job = await enqueue_sweep_if_due(self.store, self.account, interval=self.interval)
        if job is not None:
            self.sweeps += 1
            log.info("sweep of every folder: job_id=%s", job.job_id)
        if time.monotonic() - self._pruned_at >= PRUNE_EVERY_SECONDS:
            async with self.store.pool.connection() as conn:
                await conn.execute(
                    query("mirror_changes_prune"), {"keep_seconds": CHANGE_LOG_KEEP_SECONDS}
                )
            self._pruned_at = time.monotonic()
        await self._sleep(self.check_every)
