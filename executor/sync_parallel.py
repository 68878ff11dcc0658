"""A big folder's first sync over several IMAP connections of the account.

Why: a far-away server (Gmail answers over tens of milliseconds) leaves one
connection that fetches batch after batch waiting most of the time. So the
first pass over a big folder is split into UID ranges (executor/sync_ranges.py)
and fetched over the worker's own connection plus connections borrowed for the
pass, each range's batches committed on their own.

What holds, and how:

* The budget (SPEC §9): borrowed connections take free worker slots of the
  account's budget (`try_acquire`: never waited for, never more than
  `IMAP_MAX_CONNECTIONS`); none free means the worker's own connection does
  the ranges alone. A borrowed connection is given back between batches as
  soon as anyone waits for a slot (`ConnectionBudget.contended`), its range
  going back to the queue for the others.
* One job, one counter: every batch is written under one lock, in one fenced
  transaction with its rows, its range's progress, the folder's cursor and the
  job's progress event, so `processed` only grows and events stay in order.
* The folder's fence (executor/folder_lock.py) is the job's, shared by its
  connections: all of them read and write under it. It is yielded only when
  no connection has a batch between "fetched" and "written" (`YieldGate`), so
  nothing read before a yield is written after it.
* Cancel, lease loss and shutdown are checked before each write: after one is
  seen nothing more is committed, and every connection stops after its
  current command (none is abandoned mid-command on a shared client).
* Any failure stops every connection and fails the attempt; the retry
  continues the recorded ranges. Only a borrowed connection that cannot be
  opened is simply done without.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import imapclient
from imapclient.exceptions import IMAPClientError

from executor import mirror_writes as mirror
from executor import sync_ranges
from executor.connection_budget import WORKER, Slot
from executor.context import LeaseBoundImap
from executor.folder_lock import FolderFence
from executor.imap_fetch import UidFetcher, chunks
from executor.imap_session import CONNECTION_ERRORS, ImapSession, ImapUnavailable
from executor.parsing import RawMessage

if TYPE_CHECKING:
    from executor.handlers.sync import FolderState, SyncRun

log = logging.getLogger(__name__)

# A folder is split when it has at least this many batches of new messages...
MIN_SPLIT_BATCHES = 4
# ...into this many ranges per allowed connection (a connection that finishes
# early takes the next range instead of idling).
RANGES_PER_CONNECTION = 2

FetchFn = Callable[..., tuple[list[RawMessage], list[dict[str, Any]]]]
ExamineFn = Callable[[imapclient.IMAPClient, str], "FolderState"]


class _Stopped(Exception):
    """Another connection of the pass failed or was told to stop."""


class YieldGate:
    """Lets the folder's fence be yielded only between whole batches.

    Each connection's "fetch → parse → write" runs inside `batch()`. When the
    fence is due, `maybe_yield` stops new batches from starting, waits for the
    ones in flight to be written, yields, and lets them go on. `generation`
    counts yields: a connection that sees it change forgets what it had learnt
    about the folder (a job in between may have expunged).
    """

    def __init__(self, fence: FolderFence) -> None:
        self.fence = fence
        self.active = 0
        self.generation = 0
        self._yielding = False
        self._changed = asyncio.Condition()

    @contextlib.asynccontextmanager
    async def batch(self) -> AsyncIterator[int]:
        async with self._changed:
            await self._changed.wait_for(lambda: not self._yielding)
            self.active += 1
        try:
            yield self.generation
        finally:
            async with self._changed:
                self.active -= 1
                self._changed.notify_all()

    async def maybe_yield(self) -> None:
        if self._yielding or not self.fence.due():
            return
        async with self._changed:
            if self._yielding or not self.fence.due():
                return
            self._yielding = True
            try:
                await self._changed.wait_for(lambda: self.active == 0)
                await self.fence.yield_()
                self.generation += 1
            finally:
                self._yielding = False
                self._changed.notify_all()


@dataclass
class _Link:
    """One connection of the pass."""

    name: str
    imap: LeaseBoundImap
    borrowed: bool
    fetcher: UidFetcher | None = None
    condstore: bool = False
    generation: int = 0
    batches: int = 0


class ParallelFirstSync:
    """The split part of one folder's first pass (see the module docstring)."""

    def __init__(
        self,
        run: SyncRun,
        folder: str,
        state: FolderState,
        fence: FolderFence,
        fetcher: UidFetcher,
        *,
        fetch: FetchFn,
        examine: ExamineFn,
    ) -> None:
        self.run = run
        self.ctx = run.ctx
        self.folder = folder
        self.state = state
        self.fetcher = fetcher
        self.fetch = fetch
        self.examine = examine
        self.gate = YieldGate(fence)
        self.write_lock = asyncio.Lock()
        self.ranges: list[sync_ranges.UidRange] = []
        self.queue: list[sync_ranges.UidRange] = []
        # The ranges as an earlier attempt left them: rows up to each done_uid
        # came from before this pass (their flags are checked again).
        self.earlier: list[sync_ranges.UidRange] = []
        self.uids: list[int] = []
        self.last_seen = 0
        self.error: BaseException | None = None
        self.given_back = 0

    # -- what folder_pass asks ------------------------------------------------------

    @property
    def resumed(self) -> bool:
        """An earlier attempt mirrored part of the ranges."""
        return any(r.done_uid >= r.lo for r in self.earlier)

    def done_before(self, uid: int) -> bool:
        """Whether `uid`'s row was written by an earlier attempt of the split."""
        return any(r.lo <= uid <= r.done_uid for r in self.earlier)

    async def run_ranges(
        self, uids: list[int], last_seen: int, result: dict[str, int]
    ) -> list[int]:
        """Fetch what the recorded ranges (or a new split) still need; returns
        the UIDs above them, for the serial pass. Without a split (a small
        folder, or no connection to borrow) that is all of `uids`."""
        ctx = self.ctx
        self.uids, self.last_seen = uids, last_seen
        async with ctx.store.pool.connection() as conn:
            self.ranges = await sync_ranges.load(conn, self.folder, self.state.uidvalidity)
        if self.ranges:
            self.earlier = [dataclasses.replace(r) for r in self.ranges]
            slots = await self._borrow_slots()
        else:
            if not self._worth_splitting(uids):
                return uids
            slots = await self._borrow_slots()
            if not slots:
                return uids
            await self._record_split(uids, last_seen, len(slots) + 1)
        top = self.ranges[-1].hi
        tail = [u for u in uids if u > top]
        self.queue = [r for r in self.ranges if not r.complete]
        self.run.remaining[self.folder] = sum(len(r.todo(uids)) for r in self.queue) + len(tail)
        links = [_Link(ctx.worker, ctx.imap, borrowed=False, fetcher=self.fetcher)]
        links[0].condstore = ctx.imap.condstore
        links += [self._borrowed_link(i, slot) for i, slot in enumerate(slots, 1)]
        await asyncio.gather(*(self._work(link, result) for link in links))
        if self.gate.generation:
            self.fetcher.dense = None  # the serial pass goes on with it
        if self.error is not None:
            raise self.error
        result["connections"] = max(result.get("connections", 0), len(links))
        return tail

    # -- planning -------------------------------------------------------------------

    def _worth_splitting(self, uids: Sequence[int]) -> bool:
        return (
            self.ctx.settings.sync_first_connections > 1
            and len(uids) >= MIN_SPLIT_BATCHES * self.run.batch_size
        )

    async def _record_split(self, uids: list[int], last_seen: int, connections: int) -> None:
        ctx = self.ctx
        parts = min(
            RANGES_PER_CONNECTION * ctx.settings.sync_first_connections,
            len(uids) // self.run.batch_size,
        )
        self.ranges = sync_ranges.split(uids, max(2, parts), last_seen + 1)
        async with ctx.store.fenced_transaction(ctx.lease) as conn:
            await sync_ranges.record(conn, self.folder, self.state.uidvalidity, self.ranges)
            await ctx.progress(
                f"{self.folder}: first sync of {len(uids)} message(s) split into "
                f"{len(self.ranges)} UID ranges over {connections} connections",
                data={
                    "phase": "split",
                    "folder": self.folder,
                    "ranges": [[r.lo, r.hi] for r in self.ranges],
                    "connections": connections,
                    "has_more": True,
                },
                conn=conn,
            )

    async def _borrow_slots(self) -> list[Slot | None]:
        """Free worker slots of the budget, up to the setting; never waited for."""
        ctx = self.ctx
        want = ctx.settings.sync_first_connections - 1
        budget = ctx.imap.session.budget
        if budget is None:
            return [None] * max(0, want)
        slots: list[Slot | None] = []
        for index in range(1, want + 1):
            if budget.contended:
                break
            slot = await budget.try_acquire(f"{ctx.worker}:r{index}", WORKER)
            if slot is None:
                break
            slots.append(slot)
        return slots

    def _borrowed_link(self, index: int, slot: Slot | None) -> _Link:
        own = self.ctx.imap.session
        name = f"{self.ctx.worker}:r{index}"
        session = ImapSession(own.account, timeout=own.timeout, name=name, budget=own.budget)
        session.slot = slot  # taken above: connect() uses it instead of waiting
        return _Link(name, LeaseBoundImap(session, self.ctx), borrowed=True)

    # -- the connections ----------------------------------------------------------------

    async def _work(self, link: _Link, result: dict[str, int]) -> None:
        try:
            if link.borrowed and not await self._open(link):
                return
            while self.error is None:
                rng = self._next_range()
                if rng is None:
                    return
                if not await self._fetch_range(link, rng, result):
                    return  # gave its connection back
        except _Stopped:
            pass
        except BaseException as exc:
            if self.error is None:
                self.error = exc
            if not isinstance(exc, Exception):
                raise
        finally:
            if link.borrowed:
                with contextlib.suppress(Exception):
                    await link.imap.discard()  # logs out and gives the slot back

    async def _open(self, link: _Link) -> bool:
        """Connect and EXAMINE; a borrowed connection that fails is done without."""
        try:
            client = await link.imap.ensure()
            state = await link.imap.call(self.examine, client, self.folder)
        except (ImapUnavailable, IMAPClientError, *CONNECTION_ERRORS) as exc:
            log.warning(
                "job_id=%s %s: could not open a connection for the split sync of %s: %s",
                self.ctx.job.job_id,
                link.name,
                self.folder,
                exc,
            )
            return False
        if state.uidvalidity != self.state.uidvalidity:
            return False  # the folder was recreated: this attempt's own connection finds out
        link.fetcher = UidFetcher.for_folder(
            client,
            exists=state.messages,
            uidnext=state.uidnext,
            known_uids=self.uids if self.last_seen == 0 else None,
        )
        link.condstore = link.imap.condstore
        return True

    def _next_range(self) -> sync_ranges.UidRange | None:
        return self.queue.pop(0) if self.queue else None

    def _give_back(self, link: _Link) -> bool:
        """Whether a borrowed connection should go back to the budget now."""
        if not link.borrowed:
            return False
        budget, slot = link.imap.session.budget, link.imap.session.slot
        return (budget is not None and budget.contended) or (slot is not None and slot.lost)

    async def _fetch_range(
        self, link: _Link, rng: sync_ranges.UidRange, result: dict[str, int]
    ) -> bool:
        """One range, batch by batch; False when the connection was given back."""
        todo = rng.todo(self.uids)
        if not todo:  # what was left of it was expunged between attempts
            await self._write(link, rng, [], rng.hi, [], [], result)
            return True
        batches = list(chunks(todo, self.run.batch_size))
        for index, uids in enumerate(batches):
            self.ctx.checkpoint()
            if self._give_back(link):
                self.queue.append(rng)
                self.queue.sort(key=lambda r: r.lo)
                self.given_back += 1
                log.info("%s: giving its IMAP connection back (a slot is wanted)", link.name)
                return False
            async with self.gate.batch() as generation:
                assert link.fetcher is not None
                if generation != link.generation:
                    link.fetcher.dense = None
                    link.generation = generation
                raws, problems = await link.imap.call(
                    self.run.mentions.fetch, self.fetch, link.fetcher, uids, link.condstore
                )
                if self.error is not None:
                    raise _Stopped()
                fetched, more = await self.run.parser.parse(raws, self.run.mentions.identity)
                # UIDs of the range the server did not list do not exist: its
                # last batch completes it.
                done_uid = rng.hi if index + 1 == len(batches) else uids[-1]
                await self._write(link, rng, uids, done_uid, fetched, problems + more, result)
            link.batches += 1
            await self.gate.maybe_yield()
        return True

    async def _write(
        self,
        link: _Link,
        rng: sync_ranges.UidRange,
        uids: Sequence[int],
        done_uid: int,
        fetched: Sequence[mirror.FetchedMessage],
        problems: list[dict[str, Any]],
        result: dict[str, int],
    ) -> None:
        """Rows, range progress, cursor and progress event: one fenced transaction."""
        ctx = self.ctx
        async with self.write_lock:
            if self.error is not None:
                raise _Stopped()
            ctx.checkpoint()  # a cancel seen by any connection: nothing more is written
            validity = self.state.uidvalidity
            async with ctx.store.fenced_transaction(ctx.lease) as conn:
                await mirror.upsert_messages(conn, self.folder, validity, fetched)
                cursor = await sync_ranges.advance(conn, self.folder, validity, rng.lo, done_uid)
                if uids:
                    await self.run.record_batch(
                        conn,
                        self.folder,
                        uids,
                        fetched,
                        problems,
                        result,
                        data={"range": [rng.lo, rng.hi], "cursor": cursor},
                    )
            rng.done_uid = max(rng.done_uid, done_uid)
