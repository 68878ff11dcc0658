"""The fence of a split first sync is yielded only when no connection has a
batch between "fetch started" and "written" (executor/sync_parallel.py)."""

from __future__ import annotations

import asyncio
from typing import Any

from executor.sync_pipeline import YieldGate


class FakeFence:
    """Due when told; records how many batches were inside at each yield."""

    def __init__(self, gate_ref: list[YieldGate]) -> None:
        self.is_due = False
        self.inside_at_yield: list[int] = []
        self.gate_ref = gate_ref

    def due(self) -> bool:
        return self.is_due

    async def look_for_waiters(self) -> None:
        pass

    async def yield_(self) -> None:
        self.inside_at_yield.append(self.gate_ref[0].active)
        await asyncio.sleep(0.01)  # another job's turn
        self.is_due = False


def make() -> tuple[YieldGate, FakeFence]:
    ref: list[YieldGate] = []
    fence = FakeFence(ref)
    gate = YieldGate(fence)  # type: ignore[arg-type]
    ref.append(gate)
    return gate, fence


async def test_a_yield_waits_for_every_batch_inside_and_holds_new_ones_back() -> None:
    gate, fence = make()
    log: list[str] = []

    async def batch(name: str, hold: float) -> None:
        await gate.enter()
        log.append(f"{name} in")
        await asyncio.sleep(hold)
        log.append(f"{name} written")
        await gate.leave()

    first = asyncio.create_task(batch("a", 0.03))
    second = asyncio.create_task(batch("b", 0.05))
    await asyncio.sleep(0)
    fence.is_due = True
    yielder = asyncio.create_task(gate.maybe_yield())
    await asyncio.sleep(0.005)
    late = asyncio.create_task(batch("c", 0))
    await asyncio.gather(first, second, yielder, late)
    assert fence.inside_at_yield == [0]
    assert log.index("c in") > log.index("b written"), log
    assert gate.generation == 1 and gate.active == 0


async def test_no_prefetch_enters_while_a_yield_is_due_or_under_way() -> None:
    gate, fence = make()
    assert gate.try_enter() == 0
    await gate.leave()
    fence.is_due = True
    assert gate.try_enter() is None
    await gate.maybe_yield()
    assert fence.inside_at_yield == [0] and gate.try_enter() == 1


async def test_nothing_to_yield_when_not_due() -> None:
    gate, fence = make()
    entered: Any = await gate.enter()
    await gate.maybe_yield()  # not due: returns at once, even with a batch inside
    assert entered == 0 and fence.inside_at_yield == []
    await gate.leave()
