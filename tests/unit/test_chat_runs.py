"""A streamed turn runs on its own; every follower gets all of it, from the first event."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from app.graph.service import ChatError, ChatTurn, TurnStarted
from app.web.chat_runs import FAILED, ChatRuns


async def turn(
    events: int, *, fail: bool = False, gate: asyncio.Event | None = None
) -> AsyncIterator[Any]:
    yield TurnStarted("t1")
    for i in range(events):
        if gate is not None and i == 1:
            await gate.wait()
        yield {"type": "token", "text": str(i)}
    if fail:
        raise RuntimeError("database went away")
    yield ChatTurn("t1", [], None)


async def refused() -> AsyncIterator[Any]:
    raise ChatError(409, "stale")
    yield  # an async generator


async def test_followers_early_and_late_get_every_event_then_the_turn() -> None:
    runs = ChatRuns()
    gate = asyncio.Event()
    run = await runs.start(turn(3, gate=gate))
    early = asyncio.create_task(_all(run.follow()))
    await asyncio.sleep(0.01)
    gate.set()
    got = await early
    late = await _all(run.follow())
    assert got == late and [i["text"] for i in got[:-1]] == ["0", "1", "2"]
    assert isinstance(got[-1], ChatTurn) and runs.get(run.id) is run


async def test_a_refused_turn_raises_before_anything_runs() -> None:
    with pytest.raises(ChatError):
        await ChatRuns().start(refused())


async def test_a_failing_turn_ends_with_a_readable_error() -> None:
    run = await ChatRuns().start(turn(1, fail=True))
    got = await _all(run.follow())
    assert got == [{"type": "token", "text": "0"}, {"type": "error", "error": FAILED}]


async def test_finished_runs_are_kept_boundedly() -> None:
    runs = ChatRuns(max_kept=2)
    started = [await runs.start(turn(0)) for _ in range(5)]
    for run in started:
        await _all(run.follow())
    await runs.start(turn(0))
    assert sum(runs.get(r.id) is not None for r in started) <= 2


async def _all(items: AsyncIterator[Any]) -> list[Any]:
    return [item async for item in items]
