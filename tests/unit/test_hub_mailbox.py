"""A stream's hub mailbox (app/web/hub.py): updates are appended, a wake lets
the stream take them all at once, throttled streams wait for the hub's tick,
and a stream that falls too far behind is told to re-read by seq."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from app.jobs.models import JobStatus
from app.web import hub as hub_module
from app.web.hub import JobHead, Subscription, Update, _wake_in_slices

JOB = uuid.uuid4()


def update(seq: int) -> Update:
    return Update(JobHead(JOB, JobStatus.RUNNING, seq, None, None, False, seq), ())


async def test_a_woken_stream_takes_everything_offered_meanwhile() -> None:
    sub = Subscription(JOB)
    taker = asyncio.create_task(sub.take())
    await asyncio.sleep(0)
    sub.offer(update(1))
    sub.offer(update(2))
    assert [u.head.last_seq for u in await taker] == [1, 2]
    sub.offer(update(3))
    assert [u.head.last_seq for u in await sub.take()] == [3]  # woken meanwhile: no wait


async def test_a_throttled_stream_waits_for_its_wake_and_a_bare_wake_brings_nothing() -> None:
    sub = Subscription(JOB, throttled=True)
    taker = asyncio.create_task(sub.take())
    sub.offer(update(1), wake=False)
    await asyncio.sleep(0.05)
    assert not taker.done()
    sub.wake()
    assert [u.head.last_seq for u in await taker] == [1]
    sub.wake()  # woken with nothing pending
    assert await sub.take() == []
    sub.offer(update(2), wake=False)
    sub.poke()  # its heartbeat: no updates before the throttle's tick
    assert await sub.take() == []
    sub.wake()
    assert [u.head.last_seq for u in await sub.take()] == [2]


async def test_a_stream_too_far_behind_keeps_a_bounded_mailbox_and_rereads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(hub_module, "QUEUE_LIMIT", 3)
    sub = Subscription(JOB)
    for seq in range(1, 11):
        sub.offer(update(seq))
        assert len(sub.pending) <= 3
    assert sub.lagging
    taken = await sub.take()
    assert taken[-1].head.last_seq == 10 and all(not u.events for u in taken)


async def test_streams_are_woken_a_slice_per_loop_turn() -> None:
    """Between two slices the loop turns, so other work (a timer, a request)
    runs after at most OFFER_SLICE woken streams, not after all of them."""
    subs = [Subscription(JOB) for _ in range(5 * hub_module.OFFER_SLICE)]
    woken_before_turn: list[int] = []

    async def other_work() -> None:
        for _ in range(10):
            woken_before_turn.append(sum(s._ready for s in subs))
            await asyncio.sleep(0)

    other = asyncio.create_task(other_work())
    await asyncio.sleep(0)  # it takes its first look: none woken yet
    await _wake_in_slices(subs)
    await other
    steps = [b - a for a, b in zip(woken_before_turn, woken_before_turn[1:], strict=False)]
    assert woken_before_turn[0] == 0 and max(steps) <= hub_module.OFFER_SLICE
    assert woken_before_turn[-1] == len(subs)
