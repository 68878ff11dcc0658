"""Per-thread chat state is bounded: a thread's lock lives only while a turn
holds it (app/graph/service.py), however many threads come and go."""

from __future__ import annotations

import asyncio
import gc
import weakref

from app.graph.service import ChatService


def service() -> ChatService:
    chat = ChatService.__new__(ChatService)  # only the locks: no graph, no database
    chat._locks = weakref.WeakValueDictionary()
    return chat


async def test_a_thousand_threads_leave_no_lock_behind() -> None:
    chat = service()

    async def turn(thread: str) -> None:
        async with chat._lock(thread):
            await asyncio.sleep(0)

    await asyncio.gather(*(turn(f"thread-{i}") for i in range(1000)))
    gc.collect()
    assert len(chat._locks) == 0


async def test_two_turns_of_one_thread_still_take_turns() -> None:
    chat = service()
    inside: list[str] = []
    overlaps = 0

    async def turn(name: str) -> None:
        nonlocal overlaps
        async with chat._lock("same"):
            overlaps += bool(inside)
            inside.append(name)
            await asyncio.sleep(0.01)
            inside.remove(name)

    await asyncio.gather(*(turn(f"t{i}") for i in range(20)))
    assert overlaps == 0
