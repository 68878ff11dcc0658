"""Fan job updates out to every open stream with one LISTEN connection per process.

A NOTIFY (or, if one was missed, the polling fallback) makes the hub read a
changed job once — its row, then its new events — and hand the result to
every subscriber of that job. Database load therefore grows with the number of
changing jobs, not with the number of open streams. A subscriber whose buffer
overflows is told to catch up from the database by seq: nothing is skipped.

Handing an update to a stream is a list append and, if the stream sleeps, one
future resolved: no task, queue or timer per stream per update. Streams are
woken a slice at a time, so one event-loop turn runs at most OFFER_SLICE of
them (each then writes once), and the loop's other work — a page request, a
timer — waits one slice, not the whole job's audience. Throttled streams (the
page's cards) collect updates without waking and are woken together, a slice
at a time, at most every THROTTLE_SECONDS per job: one timer per job, not one
per stream, so hundreds of cards never come due in the same loop turn.
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
from app.web.stall_guard import StallGuard

log = logging.getLogger(__name__)
CHANNEL = "imap_job_updates"
QUEUE_LIMIT = 1000  # updates a stream may have waiting before it re-reads by seq
REFRESH_LIMIT = 5000
COALESCE_SECONDS = 0.01
OFFER_SLICE = 8  # streams woken per event-loop turn when a job changes
THROTTLE_SECONDS = 0.25  # throttled streams of a job are woken at most this often


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
    """One stream's view of a job, and its mailbox.

    `head` is the job as the hub had published it when the stream subscribed:
    every later change reaches the mailbox, so it is a sound snapshot to start
    from. An update's head is the job's row as read (its `last_seq` may run
    ahead of the events in that update when the hub read a partial page; the
    rest follow).
    """

    job_id: uuid.UUID
    head: JobHead | None = None
    throttled: bool = False  # woken by the hub's per-job tick, not by each update
    pending: list[Update] = field(default_factory=list)
    lagging: bool = False
    _ready: bool = False  # woken to take its updates since the last take
    _poked: bool = False  # woken for something else (its heartbeat) since the last take
    _waiter: asyncio.Future[None] | None = None

    def offer(self, update: Update, *, wake: bool = True) -> None:
        if len(self.pending) >= QUEUE_LIMIT:
            # Too slow: drop the buffer; the stream re-reads from the database by seq.
            self.lagging = True
            self.pending = [Update(update.head, ())]
        else:
            self.pending.append(update)
        if wake:
            self.wake()

    def wake(self) -> None:
        """Let `take()` return with whatever is pending (maybe nothing)."""
        self._ready = True
        self._resume()

    def poke(self) -> None:
        """Let `take()` return, handing out nothing unless the stream was woken
        too: a throttled stream's heartbeat does not take updates early."""
        self._poked = True
        self._resume()

    def _resume(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def drain(self) -> list[Update]:
        """Every update offered since the last take, without waiting."""
        taken, self.pending = self.pending, []
        return taken

    async def take(self) -> list[Update]:
        """Every update offered since the last take, once the stream has been
        woken (at once if it was woken meanwhile); an empty list when it was
        only poked (its heartbeat timer does that) or woken with nothing new."""
        if not (self._ready or self._poked):
            waiter = self._waiter = asyncio.get_running_loop().create_future()
            try:
                await waiter
            finally:
                self._waiter = None
        self._poked = False
        if not self._ready:
            return []
        self._ready = False
        return self.drain()


class EventHub:
    def __init__(self, store: JobStore, conninfo: str, *, poll_seconds: float = 1.0) -> None:
        self.store = store
        self.conninfo = conninfo
        self.poll_seconds = poll_seconds
        self.subs: defaultdict[uuid.UUID, set[Subscription]] = defaultdict(set)
        self.known: dict[uuid.UUID, JobHead] = {}
        self._dirty: set[uuid.UUID] = set()
        self._wake = asyncio.Event()
        self._throttle_at: dict[uuid.UUID, float] = {}  # job -> when its throttled streams wake
        self._throttled_at: dict[uuid.UUID, float] = {}  # job -> when they last woke
        self._throttle_wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.queries = 0  # for benchmarks: database round trips made by the hub
        # Mirror changes ride on the same LISTEN connection (app/web/mirror_feed.py).
        self.mirror = MirrorFeed(store, poll_seconds=poll_seconds)
        # Every SSE stream of the process (jobs, cards, mirror) is guarded by it.
        self.guard = StallGuard()

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._listen(), name="hub-listen"),
            asyncio.create_task(self._refresher(), name="hub-refresh"),
            asyncio.create_task(self._poll(), name="hub-poll"),
            asyncio.create_task(self._throttler(), name="hub-throttle"),
        ]
        await self.mirror.start()
        await self.guard.start()

    async def stop(self) -> None:
        await self.guard.stop()
        await self.mirror.stop()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def subscribe(self, job_id: uuid.UUID, *, throttled: bool = False) -> Subscription:
        if job_id not in self.known:
            heads = await self._heads([job_id])
            if job_id in heads and job_id not in self.known:
                self.known[job_id] = heads[job_id]
        # No await from here on: the snapshot and the subscription are atomic
        # with respect to the refresher, so no change falls between them.
        sub = Subscription(job_id, self.known.get(job_id), throttled)
        self.subs[job_id].add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        subs = self.subs.get(sub.job_id)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self.subs[sub.job_id]
                self.known.pop(sub.job_id, None)
                self._throttle_at.pop(sub.job_id, None)
                self._throttled_at.pop(sub.job_id, None)

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
            subs = list(self.subs.get(job_id, ()))
            for sub in subs:
                sub.offer(update, wake=False)
            if any(sub.throttled for sub in subs):
                self._throttle(job_id)
            await _wake_in_slices([sub for sub in subs if not sub.throttled])

    def _throttle(self, job_id: uuid.UUID) -> None:
        """Wake the job's throttled streams THROTTLE_SECONDS after they last
        woke (or now), unless a wake is already due: they take everything
        offered meanwhile in one step."""
        if job_id in self._throttle_at:
            return
        now = asyncio.get_running_loop().time()
        self._throttle_at[job_id] = max(now, self._throttled_at.get(job_id, 0.0) + THROTTLE_SECONDS)
        self._throttle_wake.set()

    async def _throttler(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._throttle_wake.clear()
            if not self._throttle_at:
                await self._throttle_wake.wait()
                continue
            job_id = min(self._throttle_at, key=self._throttle_at.__getitem__)
            delay = self._throttle_at[job_id] - loop.time()
            if delay > 0:  # sleep until then, or until another job is due sooner
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._throttle_wake.wait()
                continue
            del self._throttle_at[job_id]
            self._throttled_at[job_id] = loop.time()
            await _wake_in_slices([s for s in self.subs.get(job_id, ()) if s.throttled])

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


async def _wake_in_slices(subs: list[Subscription]) -> None:
    """Wake `subs`, letting the loop run each slice of woken streams (and any
    timer due) before the next: a job with hundreds of watchers never holds
    the loop in one go."""
    for n, sub in enumerate(subs, 1):
        sub.wake()
        if n % OFFER_SLICE == 0 and n < len(subs):
            await asyncio.sleep(0)
