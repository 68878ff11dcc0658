"""The UID ranges of a parallel first sync: how a folder's first pass is split,
and the record that lets any later attempt continue it.

A split is made once, from the UIDs the server listed, and recorded
(`mail_folder_ranges`) before any range is fetched. Ranges are contiguous,
from the folder's cursor + 1 to the highest UID listed, with about as many
messages in each. A range's `done_uid` says every UID of it up to there is
mirrored; it moves in the same fenced transaction as the rows it covers, and
so does the folder's cursor, which is the progress of the lowest range not yet
done. A retry (after a failure, a lost lease, a `kill -9`) reads the ranges
back and fetches only what each has left: nothing is split or derived again.
"""

from __future__ import annotations

import bisect
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from psycopg import AsyncConnection

from app.db.queries import query


@dataclass
class UidRange:
    """UIDs `lo..hi` of one folder; those up to `done_uid` are mirrored."""

    lo: int
    hi: int
    done_uid: int

    @property
    def complete(self) -> bool:
        return self.done_uid >= self.hi

    def todo(self, uids: Sequence[int]) -> list[int]:
        """The UIDs of sorted `uids` this range has still to fetch."""
        return list(
            uids[bisect.bisect_right(uids, self.done_uid) : bisect.bisect_right(uids, self.hi)]
        )

    def contains(self, uid: int) -> bool:
        return self.lo <= uid <= self.hi


def split(uids: Sequence[int], parts: int, start: int) -> list[UidRange]:
    """Contiguous ranges from `start` to the highest of sorted `uids`, each
    holding about `len(uids) / parts` of them (gaps in the UIDs cost nothing)."""
    if not uids:
        return []
    count = len(uids)
    parts = max(1, min(parts, count))
    ranges: list[UidRange] = []
    lo = start
    for index in range(1, parts + 1):
        hi = uids[index * count // parts - 1]
        ranges.append(UidRange(lo, hi, lo - 1))
        lo = hi + 1
    return ranges


def cursor_of(ranges: Sequence[UidRange]) -> int:
    """The highest UID below which every range's UIDs are mirrored (what
    `sync_ranges_cursor` computes in the database)."""
    for r in ranges:
        if not r.complete:
            return r.done_uid
    return ranges[-1].hi if ranges else 0


async def load(conn: AsyncConnection[Any], folder: str, uidvalidity: int) -> list[UidRange]:
    cur = await conn.execute(
        query("sync_ranges_load"), {"folder": folder, "uidvalidity": uidvalidity}
    )
    return [UidRange(r["lo"], r["hi"], r["done_uid"]) for r in await cur.fetchall()]


async def record(
    conn: AsyncConnection[Any], folder: str, uidvalidity: int, ranges: Sequence[UidRange]
) -> None:
    """Record a fresh split (any older one of the folder is forgotten)."""
    await conn.execute(query("sync_ranges_clear"), {"folder": folder})
    async with conn.cursor() as cur:
        await cur.executemany(
            query("sync_range_record"),
            [
                {"folder": folder, "uidvalidity": uidvalidity, "lo": r.lo, "hi": r.hi}
                for r in ranges
            ],
        )


async def advance_queued(
    conn: AsyncConnection[Any], folder: str, uidvalidity: int, lo: int, done_uid: int
) -> Callable[[], Awaitable[int]]:
    """Mark the range starting at `lo` mirrored up to `done_uid`, set the
    folder's cursor from all ranges, and forget them once all are done. Call
    it in the transaction that writes the rows. The cursor is read only when
    the returned function is awaited: in pipeline mode these statements then
    share a round trip with those that follow them."""
    params = {"folder": folder, "uidvalidity": uidvalidity, "lo": lo, "done_uid": done_uid}
    await conn.execute(query("sync_range_advance"), params)
    cursor = await conn.execute(query("sync_ranges_cursor"), params)
    await conn.execute(query("sync_ranges_drop_done"), params)

    async def moved() -> int:
        row = await cursor.fetchone()
        return int(row["last_seen_uid"]) if row else 0

    return moved
