"""Fan job updates out to every open stream with one LISTEN connection per process.

A NOTIFY (or, if one was missed, the polling fallback) makes the hub read a
changed job once — its row, then its new events — and hand the result to
every subscriber of that job. Database load therefore grows with the number of
changing jobs, not with the number of open streams. A subscriber whose buffer
overflows is told to catch up from the database by seq: nothing is skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import defaultdict
from dataclasses import dataclass, field, replace
from typing import Any

import psycopg

from app.db.queries import query
from app.jobs.models import JobEvent, JobStatus
from app.jobs.store import JobStore
from app.web.mirror_feed import CHANNEL as MIRROR_CHANNEL
from app.web.mirror_feed import MirrorFeed

log = logging.getLogger(__name__)
CHANNEL = "imap_job_updates"
QUEUE_LIMIT = 1000
REFRESH_LIMIT = 5000
COALESCE_SECONDS = 0.01
OFFER_SLICE = 32  # streams woken per event-loop turn when a job changes


@dataclass(frozen=True)
class JobHead:
    """The counters and status of a job, as the streams report them."""

    job_id: uuid.UUID
    status: JobStatus
    processed: int
    total_estimate: int | None
    error: str | None
    cancel_requested: bool
    last_seq: int

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> JobHead:
        return cls(
            row["job_id"],
            JobStatus(row["status"]),
            row["processed"],
            row["total_estimate"],
            row["error"],
            row["cancel_requested"],
            row["last_seq"],
        )

    def status_data(self) -> dict[str, Any]:
        return {
            "type": "job_status",
            "job_id": str(self.job_id),
            "status": self.status.value,
            "processed": self.processed,
            "total_estimate": self.total_estimate,
            "error": self.error,
        }


@dataclass(frozen=True)
class Update:
    head: JobHead
    events: tuple[JobEvent, ...]


@dataclass(eq=False)
class Subscription:
    """One stream's view of a job.

    `head` is the job as the hub had published it when the stream subscribed:
    every later change reaches the queue, so it is a sound snapshot to start from.
    An update's head is the job's row as read (its `last_seq` may run ahead of
    the events in that update when the hub read a partial page; the rest follow).
    """

    job_id: uuid.UUID
    head: JobHead | None = None
    queue: asyncio.Queue[Update] = field(default_factory=lambda: asyncio.Queue(QUEUE_LIMIT))
    lagging: bool = False

    def offer(self, update: Update) -> None:
        try:
            self.queue.put_nowait(update)
        except asyncio.QueueFull:
            # Too slow: drop the buffer; the stream re-reads from the database by seq.
            self.lagging = True
            while not self.queue.empty():
                self.queue.get_nowait()
            self.queue.put_nowait(Update(update.head, ()))


class EventHub:
    def __init__(self, store: JobStore, conninfo: str, *, poll_seconds: float = 1.0) -> None:
        self.store = store
        self.conninfo = conninfo
        self.poll_seconds = poll_seconds
        self.subs: defaultdict[uuid.UUID, set[Subscription]] = defaultdict(set)
        self.known: dict[uuid.UUID, JobHead] = {}
        self._dirty: set[uuid.UUID] = set()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.queries = 0  # for benchmarks: database round trips made by the hub
        # Mirror changes ride on the same LISTEN connection (app/web/mirror_feed.py).
        self.mirror = MirrorFeed(store, poll_seconds=poll_seconds)

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._listen(), name="hub-listen"),
            asyncio.create_task(self._refresher(), name="hub-refresh"),
            asyncio.create_task(self._poll(), name="hub-poll"),
        ]
        await self.mirror.start()

    async def stop(self) -> None:
        await self.mirror.stop()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def subscribe(self, job_id: uuid.UUID) -> Subscription:
        if job_id not in self.known:
            heads = await self._heads([job_id])
            if job_id in heads and job_id not in self.known:
                self.known[job_id] = heads[job_id]
        # No await from here on: the snapshot and the subscription are atomic
        # with respect to the refresher, so no change falls between them.
        sub = Subscription(job_id, self.known.get(job_id))
        self.subs[job_id].add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        subs = self.subs.get(sub.job_id)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self.subs[sub.job_id]
                self.known.pop(sub.job_id, None)

    def mark_dirty(self, job_id: uuid.UUID) -> None:
        if job_id in self.subs:
            self._dirty.add(job_id)
            self._wake.set()

    async def _heads(self, job_ids: list[uuid.UUID]) -> dict[uuid.UUID, JobHead]:
        self.queries += 1
        async with self.store.pool.connection() as conn:
            rows = await (await conn.execute(query("job_heads"), {"job_ids": job_ids})).fetchall()
        return {r["job_id"]: JobHead.from_row(r) for r in rows}

    async def _refresh(self, job_ids: list[uuid.UUID]) -> None:
        """Read every changed job in two round trips, whatever the number of streams."""
        heads = await self._heads(job_ids)
        afters = {jid: (self.known[jid].last_seq if jid in self.known else 0) for jid in heads}
        wanted = [jid for jid, head in heads.items() if head.last_seq > afters[jid]]
        events: dict[uuid.UUID, list[JobEvent]] = defaultdict(list)
        if wanted:
            self.queries += 1
            async with self.store.pool.connection() as conn:
                rows = await (
                    await conn.execute(
                        query("events_after_many"),
                        {
                            "job_ids": wanted,
                            "afters": [afters[j] for j in wanted],
                            "limit": REFRESH_LIMIT,
                        },
                    )
                ).fetchall()
            for row in rows:
                events[row["job_id"]].append(JobEvent.from_row(row))
            if len(rows) >= REFRESH_LIMIT:
                self._dirty.update(wanted)  # more to read: go round again
        for job_id, head in heads.items():
            if job_id not in self.subs:
                continue  # the last stream left while we read: forget the job
            old = self.known.get(job_id)
            new_events = events.get(job_id, [])
            read_to = new_events[-1].seq if new_events else afters[job_id]
            # `known` is what has been delivered; after a partial page the next
            # round reads on from read_to.
            delivered = head if read_to >= head.last_seq else replace(head, last_seq=read_to)
            self.known[job_id] = delivered
            if old == delivered and not new_events:
                continue
            update = Update(head, tuple(new_events))
            for n, sub in enumerate(list(self.subs.get(job_id, ())), 1):
                sub.offer(update)
                if n % OFFER_SLICE == 0:
                    # Each offer wakes a stream that then encodes and sends: let
                    # the loop run those (and any timer due) in slices, so a job
                    # with hundreds of watchers never stalls the loop in one go.
                    await asyncio.sleep(0)

    async def _refresher(self) -> None:
        while True:
            await self._wake.wait()
            # A short window lets a burst of commits share one read.
            await asyncio.sleep(COALESCE_SECONDS)
            self._wake.clear()
            dirty, self._dirty = self._dirty, set()
            watched = [job_id for job_id in dirty if job_id in self.subs]
            if watched:
                try:
                    await self._refresh(watched)
                except Exception as exc:  # noqa: BLE001 - this task must outlive any one failure
                    # A dead refresher would silently stall every stream; retry instead.
                    log.warning(
                        "hub refresh failed: %s", exc, exc_info=not isinstance(exc, psycopg.Error)
                    )
                    self._dirty.update(watched)
                    await asyncio.sleep(0.2)  # back off; the poll or the next NOTIFY retries
            if self._dirty:
                self._wake.set()  # more changed while we read: go again at once

    async def _poll(self) -> None:
        """Fallback for missed NOTIFYs: one query covers every watched job."""
        while True:
            await asyncio.sleep(self.poll_seconds)
            watched = list(self.subs)
            if not watched:
                continue
            try:
                heads = await self._heads(watched)
            except Exception as exc:  # noqa: BLE001 - the fallback must keep polling
                log.warning("hub poll failed: %s", exc, exc_info=not isinstance(exc, psycopg.Error))
                continue
            for job_id, head in heads.items():
                if self.known.get(job_id) != head:
                    self.mark_dirty(job_id)

    async def _listen(self) -> None:
        backoff = 0.5
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    self.conninfo, autocommit=True
                ) as conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    await conn.execute(f"LISTEN {MIRROR_CHANNEL}")
                    backoff = 0.5
                    for job_id in list(self.subs):  # anything missed while disconnected
                        self.mark_dirty(job_id)
                    self.mirror.hint()
                    async for note in conn.notifies():
                        if note.channel == MIRROR_CHANNEL:
                            self.mirror.hint()
                            continue
                        with contextlib.suppress(ValueError):
                            self.mark_dirty(uuid.UUID(note.payload))
            except Exception as exc:  # noqa: BLE001 - reconnect whatever broke the connection
                log.warning("hub LISTEN connection lost: %s; reconnecting in %.1fs", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 15)
