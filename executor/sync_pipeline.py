"""One connection's new messages as a pipeline: fetch → parse → write.

Why: the fetching process is the bottleneck of a sync. imapclient reads and
parses the server's answer under the GIL, so anything else Python does in
that process (MIME decoding, the "mentions you" check, scoring, building the
rows) comes straight off the fetch rate. So the connection fetches batch
after batch without waiting for anything else; each fetched batch goes at
once to a parse process (executor/parsing.py `parse_batch`), which sends back
its rows already encoded for the one statement that writes them; the batches
are written in the order they were fetched, each in one fenced transaction
with its cursor move and progress event. Up to `depth` batches are between
"fetch started" and "written", which bounds memory whatever the folder's size.

What holds:

* The cursor (the folder's, or a range's) only moves in the transaction that
  writes the batch up to it, and batches are written in order, so a crash at
  any point leaves the cursor below every batch not yet written.
* The folder's fence (executor/folder_lock.py) is yielded only between whole
  batches: every batch enters the `YieldGate` before its fetch starts and
  leaves once written or dropped; a pipeline with batches inside drains them
  before it lets a due yield happen.
* A fetch in flight is always awaited, never abandoned (the connection's
  client is not thread-safe); after a failure nothing more is written and
  whatever was fetched is dropped, so the retry continues from the cursor.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from executor.folder_lock import FolderFence
from executor.parsing import ParsedBatch, RawMessage

B = TypeVar("B")
Problems = list[dict[str, Any]]
# Batches in flight per connection: one being fetched, the others parsing or
# waiting to be written. Two parse processes stay busy with one connection.
DEPTH = 3


class YieldGate:
    """Lets the folder's fence be yielded only between whole batches.

    A batch enters the gate before its fetch starts and leaves it once it is
    written (or dropped). When the fence is due, `maybe_yield` stops new
    batches from entering, waits for those inside to be written, yields, and
    lets them go on. `generation` counts yields: a connection that sees it
    change forgets what it had learnt about the folder (a job in between may
    have expunged). A connection never waits to enter while it has a batch
    inside (`try_enter`), nor yields while it has one: either would wait for
    itself.
    """

    def __init__(self, fence: FolderFence) -> None:
        self.fence = fence
        self.active = 0
        self.generation = 0
        self._yielding = False
        self._changed = asyncio.Condition()

    async def enter(self) -> int:
        async with self._changed:
            await self._changed.wait_for(lambda: not self._yielding)
            self.active += 1
            return self.generation

    async def look(self) -> None:
        """Let the fence see whether anyone waits (a yield is due only then)."""
        await self.fence.look_for_waiters()

    def try_enter(self) -> int | None:
        """Enter unless a yield is due or under way (then: None, do not wait)."""
        if self._yielding or self.fence.due():
            return None
        self.active += 1
        return self.generation

    async def leave(self) -> None:
        async with self._changed:
            self.active -= 1
            self._changed.notify_all()

    async def maybe_yield(self) -> None:
        """Yield the fence if it is due; call only with no batch of one's own inside."""
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


@dataclass(frozen=True)
class _End:
    error: BaseException | None


class BatchPipeline(Generic[B]):
    """Runs one connection's batches; see the module docstring.

    `fetch(batch, generation)` fetches on the connection (a worker thread);
    `parse(raws)` parses in a parse process; `write(batch, parsed, problems)`
    commits. `stop_before(batch)` is asked before each batch enters: it may
    raise (a cancel) or answer True to stop there once the batches in flight
    are written; `run` then returns that batch, for its caller to hand on.
    """

    def __init__(
        self,
        gate: YieldGate,
        *,
        fetch: Callable[[B, int], Awaitable[tuple[list[RawMessage], Problems]]],
        parse: Callable[[list[RawMessage]], Awaitable[ParsedBatch]],
        write: Callable[[B, ParsedBatch, Problems], Awaitable[None]],
        stop_before: Callable[[B], bool] = lambda _batch: False,
        depth: int = DEPTH,
    ) -> None:
        self.gate = gate
        self.fetch = fetch
        self.parse = parse
        self.write = write
        self.stop_before = stop_before
        self.depth = max(1, depth)
        self.queue: asyncio.Queue[tuple[B, asyncio.Future[ParsedBatch], Problems] | _End] = (
            asyncio.Queue()
        )
        self.inside = 0  # this pipeline's batches in the gate
        self._drained = asyncio.Condition()
        self.stopping = False
        self.ended = False  # the producer's _End was taken from the queue
        self.stopped_at: B | None = None

    async def run(self, batches: Iterable[B]) -> B | None:
        producer = asyncio.ensure_future(self._produce(batches))
        try:
            await self._consume()
        finally:
            self.stopping = True
            while not self.ended:  # nothing more is written: drop what was fetched
                item = await self.queue.get()
                if isinstance(item, _End):
                    self.ended = True
                    break
                item[1].cancel()
                with contextlib.suppress(BaseException):
                    await item[1]
                await self._left()
            await producer  # it ends with _End, so it has finished
        return self.stopped_at

    async def _consume(self) -> None:
        while True:
            item = await self.queue.get()
            if isinstance(item, _End):
                self.ended = True
                if item.error is not None:
                    raise item.error
                return
            batch, parsing, problems = item
            try:
                parsed = await parsing
                await self.write(batch, parsed, problems)
            finally:
                await self._left()

    async def _produce(self, batches: Iterable[B]) -> None:
        error: BaseException | None = None
        try:
            for batch in batches:
                if self.stopping:
                    break
                if self.stop_before(batch):
                    await self._wait_drained()
                    if not self.stopping:
                        self.stopped_at = batch
                    break
                await self._wait_below(self.depth)
                if self.stopping:
                    break
                await self.gate.look()
                generation = self.gate.try_enter() if self.inside else None
                if generation is None:
                    await self._wait_drained()
                    if self.stopping:
                        break
                    await self.gate.maybe_yield()
                    generation = await self.gate.enter()
                self.inside += 1
                try:
                    raws, problems = await self.fetch(batch, generation)
                except BaseException:
                    await self._left()
                    raise
                parsing = asyncio.ensure_future(self.parse(raws))
                await self.queue.put((batch, parsing, problems))
        except BaseException as exc:
            error = exc
        finally:
            await self.queue.put(_End(error))

    async def _left(self) -> None:
        await self.gate.leave()
        async with self._drained:
            self.inside -= 1
            self._drained.notify_all()

    async def _wait_drained(self) -> None:
        await self._wait_below(1)

    async def _wait_below(self, count: int) -> None:
        async with self._drained:
            await self._drained.wait_for(lambda: self.inside < count)
