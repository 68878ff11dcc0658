"""The page follows the mirror: one feed per web process tells every open
stream when the mirror changed, and what INBOX looks like now.

The mirror is written only by the executor. Every statement that changes
`emails` leaves a row in `mirror_changes` and a NOTIFY on `mirror_changes`
(triggers in 007). The hub's one LISTEN connection passes those hints here
(`hint()`); a poll of the log's head every `poll_seconds` catches any that were
missed. On a change the feed reads INBOX once — counts, and the rows that
arrived after the oldest point any open stream counts from — and wakes every
stream, so the database load follows the number of changes, not of streams.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from app.db.queries import query
from app.jobs.store import JobStore

log = logging.getLogger(__name__)

CHANNEL = "mirror_changes"
FOLDER = "INBOX"
ARRIVALS_LIMIT = 100  # the notice counts up to this many, then says "100+"
COALESCE_SECONDS = 0.1


@dataclass(frozen=True)
class Arrival:
    """A message that appeared in the folder's mirror."""

    id: int
    uid: int
    sender: str
    subject: str
    date: datetime | None
    unread: bool

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Arrival:
        return cls(
            id=row["id"],
            uid=row["uid"],
            sender=row["from_name"] or row["from_addr"] or "(unknown sender)",
            subject=row["subject"] or "(no subject)",
            date=row["date"],
            unread="\\Seen" not in (row["flags"] or ()),
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "uid": self.uid,
            "from": self.sender,
            "subject": self.subject,
            "date": self.date.isoformat() if self.date else None,
            "unread": self.unread,
        }


@dataclass(frozen=True)
class MirrorView:
    """The folder as the feed last read it. `arrivals` (newest first) holds the
    rows with an id above `floor`; a stream counts those above its own point."""

    version: int
    folder: str
    mirrored: bool  # the folder is in the mirror
    complete: bool  # and a sync of it has finished since its UIDVALIDITY began
    messages: int
    unread: int
    last_id: int
    synced_at: datetime | None
    floor: int
    arrivals: tuple[Arrival, ...]

    def since(self, after: int) -> tuple[list[Arrival], bool]:
        """Arrivals after row id `after`, and whether there may be more than listed."""
        fresh = [a for a in self.arrivals if a.id > after]
        # A full list that is all news: older rows past the limit may be news too.
        more = len(self.arrivals) >= ARRIVALS_LIMIT and len(fresh) == len(self.arrivals)
        return fresh, more

    def as_dict(self, after: int) -> dict[str, Any]:
        fresh, more = self.since(after)
        return {
            "type": "mirror_changed",
            "folder": self.folder,
            "mirrored": self.mirrored,
            "complete": self.complete,
            "messages": self.messages,
            "unread": self.unread,
            "new": len(fresh),
            "more": more,
            "arrivals": [a.as_dict() for a in fresh],
            "synced_at": self.synced_at.isoformat() if self.synced_at else None,
        }


class MirrorFeed:
    def __init__(self, store: JobStore, *, poll_seconds: float = 1.0, folder: str = FOLDER) -> None:
        self.store = store
        self.poll_seconds = poll_seconds
        self.folder = folder
        self.view: MirrorView | None = None
        self._points: Counter[int] = Counter()  # open streams' "new since" points
        self._dirty = asyncio.Event()
        self._changed = asyncio.Event()
        self._head: tuple[int, int] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.reads = 0  # summary reads (tests, benchmarks)

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._refresher(), name="mirror-refresh"),
            asyncio.create_task(self._poll(), name="mirror-poll"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def hint(self) -> None:
        """Something in the mirror changed (a NOTIFY, or a reconnect)."""
        if self._points:
            self._dirty.set()

    async def subscribe(self) -> tuple[MirrorView, int]:
        """A fresh view, and the point this stream counts new mail from (now)."""
        view = await self._read(floor=self.view.floor if self.view else None)
        point = view.last_id
        self._points[point] += 1
        return view, point

    def repoint(self, point: int, new: int) -> int:
        """Move a stream's point (while a first sync fills the folder, its rows
        are not news: the point follows them until the sync completes)."""
        if new != point:
            self._points[new] += 1
            self.unsubscribe(point)
        return new

    def unsubscribe(self, point: int) -> None:
        self._points[point] -= 1
        if self._points[point] <= 0:
            del self._points[point]

    async def wait(self, version: int, timeout: float) -> MirrorView | None:
        """The next view after `version`, or None after `timeout` seconds."""
        while self.view is None or self.view.version <= version:
            changed = self._changed
            try:
                await asyncio.wait_for(changed.wait(), timeout)
            except TimeoutError:
                return None
        return self.view

    async def _read(self, floor: int | None = None) -> MirrorView:
        """Read the folder once; `floor`: list arrivals above this row id."""
        self.reads += 1
        async with self.store.pool.connection() as conn:
            # The log's head first: a change committed after it and before the
            # summary is in the summary and still moves the head for the poll.
            head = await (await conn.execute(query("mirror_changes_head"))).fetchone()
            summary = await (
                await conn.execute(query("mirror_folder_summary"), {"folder": self.folder})
            ).fetchone()
            last_id = int(summary["last_id"]) if summary else 0
            if floor is None:
                floor = min(self._points, default=last_id)
            rows = await (
                await conn.execute(
                    query("mirror_arrivals"),
                    {"folder": self.folder, "after": floor, "limit": ARRIVALS_LIMIT},
                )
            ).fetchall()
        self._head = (int(head["last_id"]), int(head["n"])) if head else (0, 0)
        version = (self.view.version if self.view else 0) + 1
        view = MirrorView(
            version=version,
            folder=self.folder,
            mirrored=bool(summary and summary["synced_at"] is not None),
            complete=bool(summary and summary["complete"]),
            messages=int(summary["messages"]) if summary else 0,
            unread=int(summary["unread"]) if summary else 0,
            last_id=last_id,
            synced_at=summary["synced_at"] if summary else None,
            floor=floor,
            arrivals=tuple(Arrival.from_row(r) for r in rows),
        )
        self._publish(view)
        return view

    def _publish(self, view: MirrorView) -> None:
        self.view = view
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def _refresher(self) -> None:
        while True:
            await self._dirty.wait()
            await asyncio.sleep(COALESCE_SECONDS)  # a burst of commits shares one read
            self._dirty.clear()
            if not self._points:
                continue
            try:
                await self._read()
            except Exception as exc:  # noqa: BLE001 - this task must outlive any one failure
                log.warning(
                    "mirror feed read failed: %s", exc, exc_info=not isinstance(exc, psycopg.Error)
                )
                self._dirty.set()
                await asyncio.sleep(0.5)

    async def _poll(self) -> None:
        """The fallback for missed NOTIFYs: the log's head, only while someone watches."""
        while True:
            await asyncio.sleep(self.poll_seconds)
            if not self._points:
                self._head = None
                continue
            try:
                async with self.store.pool.connection() as conn:
                    row = await (await conn.execute(query("mirror_changes_head"))).fetchone()
            except Exception as exc:  # noqa: BLE001 - the fallback must keep polling
                log.warning("mirror feed poll failed: %s", exc)
                continue
            head = (int(row["last_id"]), int(row["n"])) if row else (0, 0)
            if head != self._head:  # since the last read
                self._dirty.set()
