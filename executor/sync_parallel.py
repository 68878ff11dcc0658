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
* One job, one counter: every batch is written in one fenced transaction
  with its rows, its range's progress, the folder's cursor and the job's
  progress event, so `processed` only grows and events stay in order. The
  rows' upsert (most of the write) runs beside the other connections'; the
  rest, and COMMIT, under one lock (`_write`).
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
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import imapclient
from imapclient.exceptions import IMAPClientError

from executor import mirror_writes as mirror
from executor import sync_ranges, throttle
from executor.connection_budget import WORKER, Slot
from executor.context import JobContext, LeaseBoundImap
from executor.folder_lock import FolderFence
from executor.imap_fetch import UidFetcher, chunks
from executor.imap_session import CONNECTION_ERRORS, ImapSession, ImapUnavailable
from executor.mentions import SearchAhead
from executor.parsing import ParsedBatch, RawMessage
from executor.sync_pipeline import BatchPipeline, YieldGate

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


@dataclass(frozen=True)
class _Batch:
    """UIDs of one range to fetch together; once written, the range is
    mirrored up to `done_uid` (its top for its last batch: UIDs of a range the
    server did not list do not exist)."""

    rng: sync_ranges.UidRange
    uids: list[int]
    done_uid: int
    ahead: SearchAhead | None = dataclasses.field(default=None, compare=False)


@dataclass
class _Link:
    """One connection of a split pass: the worker's own or a borrowed one."""

    name: str
    imap: LeaseBoundImap
    borrowed: bool
    fetcher: UidFetcher | None = None
    condstore: bool = False
    generation: int = 0
    batches: int = 0
    connecting: asyncio.Future[Any] | None = None  # a borrowed one opened ahead of need
    dropped: bool = False  # closed (failed to open, given back): not used again


class BorrowedConnections:
    """The connections one sync job borrows for its split first syncs.

    Taken from free worker slots of the budget (never waited for, up to
    `sync_first_connections - 1`), opened as soon as the job sees a folder
    worth splitting (so the logins overlap the work before it), kept from one
    big folder to the next, and closed when the job ends, when one fails to
    open, or when anyone waits for a slot (`ConnectionBudget.contended`).
    """

    def __init__(self, ctx: JobContext) -> None:
        self.ctx = ctx
        self.links: list[_Link] = []
        self._named = 0

    @staticmethod
    def worth_splitting(ctx: JobContext, batch_size: int, new_messages: int) -> bool:
        """A first pass of this many new messages is split."""
        return (
            ctx.settings.sync_first_connections > 1
            and new_messages >= MIN_SPLIT_BATCHES * batch_size
        )

    async def borrow(self) -> list[_Link]:
        """The open (or opening) borrowed connections, topped up from free slots."""
        ctx = self.ctx
        own = ctx.imap.session
        self.links = [link for link in self.links if not link.dropped]
        while len(self.links) < ctx.settings.sync_first_connections - 1:
            self._named += 1
            name = f"{ctx.worker}:r{self._named}"
            slot: Slot | None = None
            if own.budget is not None:
                if own.budget.contended:
                    break
                slot = await own.budget.try_acquire(name, WORKER)
                if slot is None:
                    break
            session = ImapSession(
                own.account,
                timeout=own.timeout,
                name=name,
                budget=own.budget,
                sign_in=own.sign_in,  # the process's one sign-in (shared tokens)
            )
            session.slot = slot  # taken here: connect() uses it instead of waiting
            self.links.append(_Link(name, LeaseBoundImap(session, ctx), borrowed=True))
        return list(self.links)

    async def open_early(self) -> None:
        """Borrow and start logging in now; the split pass finds them ready."""
        for link in await self.borrow():
            if link.connecting is None and link.imap.client is None:
                link.connecting = asyncio.ensure_future(link.imap.ensure())

    async def drop(self, link: _Link) -> None:
        """Close a borrowed connection (waiting for its login, never abandoning
        a thread on it) and give its slot back."""
        link.dropped = True
        if link.connecting is not None:
            with contextlib.suppress(BaseException):
                await link.connecting
            link.connecting = None
        with contextlib.suppress(Exception):
            await link.imap.discard()

    async def give_back_if_wanted(self) -> None:
        """Between folders: someone waits for a slot, so the idle ones go back."""
        budget = self.ctx.imap.session.budget
        if self.links and budget is not None and budget.contended:
            await self.close()

    async def close(self) -> None:
        for link in self.links:
            await self.drop(link)
        self.links = []


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
        elif not BorrowedConnections.worth_splitting(ctx, self.run.batch_size, len(uids)):
            return uids
        borrowed = await self.run.borrowed.borrow()
        if not self.ranges:
            if not borrowed:
                return uids  # nobody to share the work with: the serial pass does it
            await self._record_split(uids, last_seen, len(borrowed) + 1)
        top = self.ranges[-1].hi
        tail = [u for u in uids if u > top]
        self.queue = [r for r in self.ranges if not r.complete]
        self.run.remaining[self.folder] = sum(len(r.todo(uids)) for r in self.queue) + len(tail)
        own = _Link(ctx.worker, ctx.imap, borrowed=False, fetcher=self.fetcher)
        own.condstore = ctx.imap.condstore
        links = [own, *borrowed]
        await asyncio.gather(*(self._work(link, result) for link in links))
        if self.gate.generation:
            self.fetcher.dense = None  # the serial pass goes on with it
        if self.error is not None:
            raise self.error
        result["connections"] = max(result.get("connections", 0), len(links))
        if self.given_back:  # borrowed connections handed to a worker that wanted a slot
            result["given_back"] = result.get("given_back", 0) + self.given_back
        return tail

    # -- planning -------------------------------------------------------------------

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

    # -- the connections ----------------------------------------------------------------

    async def _work(self, link: _Link, result: dict[str, int]) -> None:
        keep = False
        try:
            if link.borrowed and not await self._open(link):
                return
            keep = await self._fetch_ranges(link, result)
        except _Stopped:
            pass
        except BaseException as exc:
            if self.error is None:
                self.error = exc
            if not isinstance(exc, Exception):
                raise
        finally:
            if link.borrowed and not keep:
                await self.run.borrowed.drop(link)  # logs out and gives the slot back

    async def _open(self, link: _Link) -> bool:
        """Connect (or finish logging in) and EXAMINE; a borrowed connection that
        fails is done without."""
        try:
            if link.connecting is not None:
                connecting, link.connecting = link.connecting, None
                await connecting
            client = await link.imap.ensure()
            state = await link.imap.call(self.examine, client, self.folder)
        except (
            ImapUnavailable,
            IMAPClientError,
            *CONNECTION_ERRORS,
            throttle.ServerThrottled,
        ) as exc:
            if isinstance(exc, throttle.ServerThrottled) and exc.kind != throttle.CONNECTIONS:
                raise  # a bandwidth limit: the whole job backs off (executor/throttle.py)
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
        link.generation = 0  # this folder's gate
        return True

    def _next_range(self) -> sync_ranges.UidRange | None:
        return self.queue.pop(0) if self.queue else None

    def _requeue(self, rng: sync_ranges.UidRange) -> None:
        if not rng.complete and rng not in self.queue:
            self.queue.append(rng)
            self.queue.sort(key=lambda r: r.lo)

    def _batches(self) -> Iterator[_Batch]:
        """One connection's work: ranges from the queue, batch by batch."""
        while self.error is None:
            rng = self._next_range()
            if rng is None:
                return
            todo = rng.todo(self.uids)
            if not todo:  # what was left of it was expunged between attempts
                yield _Batch(rng, [], rng.hi)
                continue
            parts = list(chunks(todo, self.run.batch_size))
            ahead = self.run.search_ahead(todo)  # the range is this connection's alone
            for index, uids in enumerate(parts):
                done = rng.hi if index + 1 == len(parts) else uids[-1]
                yield _Batch(rng, uids, done, ahead)

    def _give_back(self, link: _Link) -> bool:
        """Whether a borrowed connection should go back to the budget now."""
        if not link.borrowed:
            return False
        budget, slot = link.imap.session.budget, link.imap.session.slot
        return (budget is not None and budget.contended) or (slot is not None and slot.lost)

    def _start_fetch(
        self, link: _Link, batch: _Batch, generation: int
    ) -> asyncio.Future[tuple[list[RawMessage], list[dict[str, Any]]]]:
        assert link.fetcher is not None
        if generation != link.generation:
            link.fetcher.dense = None
            link.generation = generation
        if not batch.uids:
            done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            done.set_result(([], []))
            return done
        return asyncio.ensure_future(
            link.imap.call(
                self.run.mentions.fetch,
                self.fetch,
                link.fetcher,
                batch.uids,
                link.condstore,
                self.run.gmail,
                ahead=batch.ahead,
            )
        )

    async def _fetch_ranges(self, link: _Link, result: dict[str, int]) -> bool:
        """Batch after batch on one connection through its pipeline
        (executor/sync_pipeline.py); returns whether a borrowed connection is
        kept. One given back stops once its batches in flight are written,
        and its range goes back to the queue for the others."""

        def stop_before(batch: _Batch) -> bool:
            if self.error is not None:
                raise _Stopped()
            self.ctx.checkpoint()
            return self._give_back(link)

        async def fetch(
            batch: _Batch, generation: int
        ) -> tuple[list[RawMessage], list[dict[str, Any]]]:
            raws, problems = await self._start_fetch(link, batch, generation)
            self.run.count_fetched(raws)
            return raws, problems

        async def write(batch: _Batch, parsed: ParsedBatch, problems: list[dict[str, Any]]) -> None:
            await self._write(batch, parsed, problems, result)
            link.batches += 1

        pipeline: BatchPipeline[_Batch] = BatchPipeline(
            self.gate,
            fetch=fetch,
            parse=self.run.parse_for(self.folder, self.state.uidvalidity),
            write=write,
            stop_before=stop_before,
        )
        stopped = await pipeline.run(self._batches())
        if stopped is not None:
            self._requeue(stopped.rng)
            self.given_back += 1
            log.info("%s: giving its IMAP connection back (a slot is wanted)", link.name)
            return False
        return not self._give_back(link)

    async def _write(
        self,
        batch: _Batch,
        parsed: ParsedBatch,
        problems: list[dict[str, Any]],
        result: dict[str, int],
    ) -> None:
        """Rows, range progress, cursor and progress event: one fenced transaction.

        The rows go first, beside the other connections' writes (the upsert
        is most of a write's time); the rest waits for `write_lock`, takes the
        job's row (`late_fenced_transaction`) and commits with them, so the
        counter, the events and the cursor still move one batch at a time, in
        order, and never without their rows. A stop seen by then rolls the
        rows back: nothing is committed after it."""
        ctx, rng = self.ctx, batch.rng
        self._check_writable()
        locked = False  # from the fence to after COMMIT: the next batch's cursor sees this one's
        try:
            async with ctx.store.late_fenced_transaction(ctx.lease) as tx:
                await mirror.upsert_rows(tx.conn, parsed.rows)
                await tx.sent()
                await self.write_lock.acquire()
                locked = True
                self._check_writable()  # a stop seen meanwhile: the rows roll back
                # Fence, range, cursor and event go out together: under the lock
                # only two round trips (this one, COMMIT), each of which can wait
                # a GIL switch interval while the fetching threads parse.
                await tx.fence()
                moved = await sync_ranges.advance_queued(
                    tx.conn, self.folder, self.state.uidvalidity, rng.lo, batch.done_uid
                )
                after = dataclasses.replace(rng, done_uid=max(rng.done_uid, batch.done_uid))
                cursor = sync_ranges.cursor_of([after if r is rng else r for r in self.ranges])
                if batch.uids:
                    await self.run.record_batch(
                        tx.conn,
                        self.folder,
                        batch.uids,
                        parsed.rows.uids,
                        problems + parsed.problems,
                        result,
                        data={"range": [rng.lo, rng.hi], "cursor": cursor},
                    )
                if await moved() != cursor:  # the database's ranges are not ours: start again
                    raise RuntimeError(
                        f"{self.folder}: the recorded UID ranges changed under the sync"
                    )
            rng.done_uid = max(rng.done_uid, batch.done_uid)
        finally:
            if locked:
                self.write_lock.release()

    def _check_writable(self) -> None:
        """Another connection failed, or a cancel, lease loss or shutdown was
        seen by any of them: nothing more is written."""
        if self.error is not None:
            raise _Stopped()
        self.ctx.checkpoint()
