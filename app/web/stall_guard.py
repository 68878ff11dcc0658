"""Drop streams whose client stopped taking bytes.

A client that stops reading (a frozen tab, a suspended laptop, a stuck proxy)
fills its socket; uvicorn then holds that stream's next send until the socket
drains. Nothing else waits on it: every stream sends from its own task, and
what one stream has pending is bounded (its socket buffer, and the hub drops a
mailbox past its limit: the stream re-reads by seq if it ever resumes). What
is left is a stream pinned forever, so one watchdog per process cancels any
stream that has been stuck in one send for longer than the timeout; the client
can reconnect and resume by seq.

One scan every few seconds replaces a timeout around every send (a cancel scope
and a timer per chunk, for every stream): the per-send cost was a measurable
share of the web process's time with hundreds of streams open.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")

SEND_TIMEOUT = 60.0  # seconds a client may take no bytes before its stream is dropped


class _Watch:
    """One open stream: its task and since when it has been sending (None: not sending)."""

    __slots__ = ("sending_since", "task")

    def __init__(self, task: asyncio.Task[object] | None) -> None:
        self.task = task
        self.sending_since: float | None = None


class StallGuard:
    def __init__(self, timeout: float = SEND_TIMEOUT) -> None:
        self.timeout = timeout
        self._watches: set[_Watch] = set()
        self._task: asyncio.Task[None] | None = None
        self.dropped = 0  # streams cancelled so far (tests, health figures)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._watchdog(), name="stall-guard")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def guard(self, stream: AsyncIterator[T]) -> AsyncIterator[T]:
        """`stream`'s items, each handed on with the watch's clock running
        until the sender asks for the next one (that is, while it sends)."""
        # The task that iterates this generator is the one that sends its items.
        watch = _Watch(asyncio.current_task())
        self._watches.add(watch)
        try:
            async for item in stream:
                watch.sending_since = time.monotonic()
                yield item
                watch.sending_since = None
        finally:
            self._watches.discard(watch)
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                await aclose()

    def sweep(self, now: float | None = None) -> int:
        """Cancel every stream stuck in a send for longer than the timeout."""
        now = time.monotonic() if now is None else now
        dropped = 0
        for watch in list(self._watches):
            since = watch.sending_since
            if since is None or now - since <= self.timeout or watch.task is None:
                continue
            self._watches.discard(watch)
            log.warning(
                "dropping a stream whose client took no bytes for %.0f s (it can resume by seq)",
                now - since,
            )
            watch.task.cancel()
            dropped += 1
        self.dropped += dropped
        return dropped

    async def _watchdog(self) -> None:
        while True:
            await asyncio.sleep(max(0.05, min(5.0, self.timeout / 4)))
            self.sweep()
