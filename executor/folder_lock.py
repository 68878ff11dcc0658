"""The mirror fence: one job at a time reads a folder on IMAP and writes its rows.

The job row's fence (status, attempt, lease owner) stops a worker that lost
its lease; it does not stop two *live* jobs from writing stale state over each
other. A sync that fetched a message's flags, then a mark_read that changed
them and wrote the row, then the sync writing what it fetched earlier: the
mirror now says unread for a message the server has read. So every
"look at the server, then write the rows" of a folder happens while holding
that folder's fence.

The fence is a session-level Postgres advisory lock
(`hashtextextended('piper.mirror:' || folder, 0)`) on a pool connection kept
for as long as it is held. Postgres drops it when the session ends, so a
worker killed with -9 never leaves a folder locked. Waiting is done in slices
of `WAIT_SLICE` (a transaction-local `lock_timeout`), and between slices the
job's checkpoint runs, so a cancel, a lost lease or a shutdown ends the wait.
A waiter stays queued inside Postgres during each slice, and Postgres grants
locks in queue order, so a long holder that calls `yield_()` lets a waiting
job in instead of taking the folder straight back.

A long holder yields only when someone waits (`look_for_waiters`, a look at
`pg_locks` at most every `LOOK_EVERY_SECONDS` once the fence is due): a yield
makes a split first sync drain every connection's batches in flight, which
cost 0.2-0.3 s every 2 s of a first sync over a 40 ms link, for nobody.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import psycopg
from psycopg import AsyncConnection

from app.db.queries import query
from executor.context import JobContext

log = logging.getLogger(__name__)

# How long one wait for a lock lasts before the job's checkpoint runs again.
WAIT_SLICE = "500ms"
# A waiting job says so in its events after this many seconds.
WAIT_NOTICE_SECONDS = 1.0
# A long holder (a first sync of a big folder) lets waiters in this often.
YIELD_AFTER_SECONDS = 2.0
# How often a holder past that looks whether anyone waits.
LOOK_EVERY_SECONDS = 0.25


class FolderFence:
    """The held fence of one or more folders (taken in sorted order: no deadlocks)."""

    def __init__(self, ctx: JobContext, folders: Sequence[str], conn: AsyncConnection[Any]) -> None:
        self.ctx = ctx
        self.folders = sorted(set(folders))
        self.conn = conn
        self.held = False
        self.held_since = 0.0
        self.yields = 0
        self.waited = False  # someone was seen waiting since the fence was taken
        self._looked = 0.0
        # The connection runs one statement at a time: a look for waiters and
        # a yield or release from another connection's pipeline take turns.
        self._using = asyncio.Lock()

    async def acquire(self) -> None:
        async with self._using:
            for folder in self.folders:
                await self._wait_for(folder)
            self.held = True
            self.held_since = time.monotonic()
            self.waited = False

    def _long_held(self) -> bool:
        return self.held and time.monotonic() - self.held_since >= YIELD_AFTER_SECONDS

    def due(self) -> bool:
        """Held long enough, and someone waits: time for their turn (see `yield_`)."""
        return self.waited and self._long_held()

    async def look_for_waiters(self) -> None:
        """Once held long enough, see (at most every LOOK_EVERY_SECONDS) whether
        another job waits for one of these folders; `due()` answers from it."""
        now = time.monotonic()
        if self.waited or not self._long_held() or now - self._looked < LOOK_EVERY_SECONDS:
            return
        self._looked = now
        async with self._using:
            if not self.held:
                return
            cursor = await self.conn.execute(
                query("mirror_fence_waited"), {"folders": self.folders}
            )
            row = await cursor.fetchone()
            self.waited = bool(row and row["waited"])

    async def yield_(self) -> None:
        """Let a queued job go first, then take the fence back.

        Only call between complete "read IMAP → write rows" steps: anything
        read from the server before the yield is stale after it.
        """
        await self._unlock()
        self.yields += 1
        await self.acquire()

    async def release(self) -> None:
        """Give the fence back; a connection that cannot say so is thrown away."""
        async with self._using:
            await self._release()

    async def _release(self) -> None:
        try:
            await self.conn.execute(query("mirror_fence_release_all"))
        except Exception:
            # Returning a connection that may still hold the lock would lend
            # the fence to whoever borrows it next: close it instead.
            log.warning(
                "could not release the mirror fence of %s; closing its connection", self.folders
            )
            with contextlib.suppress(Exception):
                await self.conn.close()
        self.held = False

    async def _unlock(self) -> None:
        async with self._using:
            for folder in reversed(self.folders):
                await self.conn.execute(query("mirror_fence_release"), {"folder": folder})
            self.held = False

    async def _wait_for(self, folder: str) -> None:
        started = time.monotonic()
        noticed = False
        while True:
            self.ctx.checkpoint()
            try:
                async with self.conn.transaction():
                    await self.conn.execute(query("mirror_fence_timeout"), {"timeout": WAIT_SLICE})
                    await self.conn.execute(query("mirror_fence_wait"), {"folder": folder})
                return
            except psycopg.errors.LockNotAvailable:
                pass
            if not noticed and time.monotonic() - started >= WAIT_NOTICE_SECONDS:
                noticed = True
                await self.ctx.event(
                    f"{folder}: waiting for another job working on this folder",
                    data={"phase": "waiting", "folder": folder},
                )


@contextlib.asynccontextmanager
async def folder_lock(ctx: JobContext, *folders: str) -> AsyncIterator[FolderFence]:
    """Hold the mirror fence of `folders` for the body of the `async with`.

    Use it around a folder's whole "read the server → write the rows" work:
    a sync's pass over a folder, a mutation's changes in a folder (with the
    folder messages move to).
    """
    async with ctx.store.pool.connection() as conn:
        fence = FolderFence(ctx, folders, conn)
        try:
            await fence.acquire()
            yield fence
        finally:
            await fence.release()
