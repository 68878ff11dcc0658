"""Chat turns that run on their own while pages and API clients watch them.

A streamed turn is not tied to the connection that asked for it: it runs in a
task of its own until the graph is done (a closed tab or a dropped client
never stops a turn half-way, which would leave a tool call unanswered), and
whoever follows it gets every event from the first. The page starts a turn
with a POST and follows it with an EventSource (GET); an API client's POST
follows the turn it started. Finished turns are kept a few minutes (a
reconnect still gets the end), at most `max_kept` of them.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator
from typing import Any

from app.graph.service import ChatTurn, StreamItem, TurnStarted

log = logging.getLogger(__name__)
FAILED = "Something went wrong while I was working on that; nothing was changed. Please try again."

# What a follower gets: chat events ({"type": "token" | "tool" | "error", ...}),
# then the finished ChatTurn (absent when the turn failed).
RunItem = dict[str, Any] | ChatTurn


class ChatRun:
    def __init__(self, started: TurnStarted) -> None:
        self.id = uuid.uuid4().hex
        self.started = started
        self.thread_id = started.thread_id
        self.items: list[RunItem] = []
        self.finished_at: float | None = None
        self._changed = asyncio.Condition()

    async def add(self, item: RunItem) -> None:
        async with self._changed:
            self.items.append(item)
            self._changed.notify_all()

    async def finish(self) -> None:
        async with self._changed:
            self.finished_at = time.monotonic()
            self._changed.notify_all()

    async def follow(self) -> AsyncIterator[RunItem]:
        """Every item from the first, then the new ones as they come, until the end."""
        async for batch in self.batches():
            for item in batch:
                yield item

    async def batches(self) -> AsyncIterator[list[RunItem]]:
        """The same items, as lists of what came since the last one was taken:
        a follower that waits between takes gets what came meanwhile at once."""
        seen = 0
        while True:
            async with self._changed:
                while len(self.items) == seen and self.finished_at is None:
                    await self._changed.wait()
                batch, done = self.items[seen:], self.finished_at is not None
            seen += len(batch)
            if batch:
                yield batch
            if done and seen == len(self.items):
                return


class ChatRuns:
    def __init__(self, *, keep_seconds: float = 300.0, max_kept: int = 200) -> None:
        self.keep_seconds = keep_seconds
        self.max_kept = max_kept
        self._runs: OrderedDict[str, ChatRun] = OrderedDict()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self, stream: AsyncIterator[StreamItem]) -> ChatRun:
        """Start a turn; a ChatError (bad input, unknown thread, stale approval)
        is raised here, before anything ran."""
        first = await anext(stream)
        assert isinstance(first, TurnStarted)
        run = ChatRun(first)
        self._prune()
        self._runs[run.id] = run
        task = asyncio.create_task(self._pump(run, stream), name=f"chat-run-{run.id[:8]}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return run

    def get(self, run_id: str) -> ChatRun | None:
        return self._runs.get(run_id)

    async def _pump(self, run: ChatRun, stream: AsyncIterator[StreamItem]) -> None:
        try:
            async for item in stream:
                if not isinstance(item, TurnStarted):
                    await run.add(item)
        except Exception:
            log.exception("chat turn on thread %s failed", run.thread_id)
            await run.add({"type": "error", "error": FAILED})
        finally:
            await run.finish()

    def _prune(self) -> None:
        now = time.monotonic()
        finished = [r for r in self._runs.values() if r.finished_at is not None]
        excess = len(finished) - self.max_kept
        for run in finished:
            assert run.finished_at is not None
            if excess > 0 or now - run.finished_at > self.keep_seconds:
                del self._runs[run.id]
                excess -= 1

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
