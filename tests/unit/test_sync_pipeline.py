"""One connection's fetch → parse → write pipeline (executor/sync_pipeline.py):
batches are written once each, in fetch order, at most `depth` in flight; a
failure anywhere writes nothing more and never abandons a fetch; a due fence
is yielded only with no batch inside."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest

from executor.mirror_writes import EncodedRows
from executor.parsing import ParsedBatch
from executor.sync_pipeline import BatchPipeline, YieldGate


class Fence:
    def __init__(self) -> None:
        self.is_due = False
        self.gate: YieldGate | None = None
        self.inside_at_yield: list[int] = []

    def due(self) -> bool:
        return self.is_due

    async def look_for_waiters(self) -> None:
        pass

    async def yield_(self) -> None:
        assert self.gate is not None
        self.inside_at_yield.append(self.gate.active)
        await asyncio.sleep(0.002)
        self.is_due = False


class Stage:
    """Fetch, parse and write with random delays, recording what happens."""

    def __init__(
        self, seed: int = 0, *, fail_fetch: int | None = None, fail_write: int | None = None
    ):
        self.rng = random.Random(seed)
        self.fail_fetch, self.fail_write = fail_fetch, fail_write
        self.fetching = 0
        self.fetches_done: list[int] = []
        self.written: list[int] = []
        self.generations: list[int] = []
        self.max_inside = 0
        self.pipeline: BatchPipeline[int] | None = None

    async def fetch(self, batch: int, generation: int) -> tuple[list[Any], list[dict[str, Any]]]:
        assert self.fetching == 0, "one fetch at a time on a connection"
        assert self.pipeline is not None
        self.max_inside = max(self.max_inside, self.pipeline.inside)
        self.fetching += 1
        try:
            await asyncio.sleep(self.rng.random() * 0.002)
            if batch == self.fail_fetch:
                raise ConnectionResetError("injected")
            self.generations.append(generation)
            return [batch], []
        finally:
            self.fetching -= 1
            self.fetches_done.append(batch)

    async def parse(self, raws: list[Any]) -> ParsedBatch:
        await asyncio.sleep(self.rng.random() * 0.004)
        return ParsedBatch(EncodedRows("[]", tuple(raws)), [])

    async def write(self, batch: int, parsed: ParsedBatch, problems: list[Any]) -> None:
        assert parsed.rows.uids == (batch,)
        await asyncio.sleep(self.rng.random() * 0.002)
        if batch == self.fail_write:
            raise RuntimeError("write failed")
        self.written.append(batch)


def pipeline(stage: Stage, fence: Fence, **kw: Any) -> BatchPipeline[int]:
    gate = YieldGate(fence)  # type: ignore[arg-type]
    fence.gate = gate
    p: BatchPipeline[int] = BatchPipeline(
        gate, fetch=stage.fetch, parse=stage.parse, write=stage.write, **kw
    )
    stage.pipeline = p
    return p


@pytest.mark.parametrize("seed", range(5))
async def test_every_batch_is_written_once_in_fetch_order_with_a_bounded_number_in_flight(
    seed: int,
) -> None:
    stage, fence = Stage(seed), Fence()
    p = pipeline(stage, fence, depth=3)
    assert await p.run(range(40)) is None
    assert stage.written == list(range(40))
    assert stage.max_inside <= 3 and stage.max_inside >= 2, stage.max_inside
    assert p.gate.active == 0 and p.inside == 0


@pytest.mark.parametrize("seed", range(5))
async def test_a_failed_fetch_writes_nothing_after_it_and_ends_with_its_error(seed: int) -> None:
    stage, fence = Stage(seed, fail_fetch=17), Fence()
    p = pipeline(stage, fence)
    with pytest.raises(ConnectionResetError):
        await asyncio.wait_for(p.run(range(40)), 5)
    assert stage.written == list(range(len(stage.written)))
    assert all(b < 17 for b in stage.written)
    assert max(stage.fetches_done) == 17, "no fetch after the failure"
    assert p.gate.active == 0 and stage.fetching == 0


@pytest.mark.parametrize("seed", range(5))
async def test_a_failed_write_stops_everything_and_never_abandons_a_fetch(seed: int) -> None:
    stage, fence = Stage(seed, fail_write=9), Fence()
    p = pipeline(stage, fence)
    with pytest.raises(RuntimeError, match="write failed"):
        await asyncio.wait_for(p.run(range(40)), 5)
    assert stage.written == list(range(9))
    assert stage.fetching == 0, "the fetch in flight was awaited"
    assert max(stage.fetches_done) <= 9 + 3, "fetching stopped within the pipeline's depth"
    assert p.gate.active == 0


async def test_stop_before_lets_the_batches_in_flight_be_written_and_returns_where_it_stopped() -> (
    None
):
    stage, fence = Stage(3), Fence()
    p = pipeline(stage, fence, stop_before=lambda b: b == 12)
    assert await p.run(range(40)) == 12
    assert stage.written == list(range(12))
    assert p.gate.active == 0


async def test_a_cancel_raised_before_a_batch_ends_the_run_with_it() -> None:
    class Cancelled(Exception):
        pass

    def stop_before(batch: int) -> bool:
        if batch == 7:
            raise Cancelled()
        return False

    stage, fence = Stage(4), Fence()
    p = pipeline(stage, fence, stop_before=stop_before)
    with pytest.raises(Cancelled):
        await p.run(range(40))
    assert stage.written == list(range(7))


async def test_a_due_fence_is_yielded_with_no_batch_inside_and_fetches_learn_the_generation() -> (
    None
):
    stage, fence = Stage(5), Fence()
    p = pipeline(stage, fence)
    original = stage.write

    async def write(batch: int, parsed: ParsedBatch, problems: list[Any]) -> None:
        await original(batch, parsed, problems)
        if batch in (10, 25):
            fence.is_due = True

    p.write = write
    await p.run(range(40))
    assert stage.written == list(range(40))
    assert fence.inside_at_yield == [0, 0]
    assert p.gate.generation == 2
    assert stage.generations == sorted(stage.generations) and stage.generations[-1] == 2


async def test_two_connections_share_one_gate_and_the_yield_waits_for_both() -> None:
    fence = Fence()
    gate = YieldGate(fence)  # type: ignore[arg-type]
    fence.gate = gate
    stages = [Stage(6), Stage(7)]
    pipes = []
    for stage in stages:
        p: BatchPipeline[int] = BatchPipeline(
            gate, fetch=stage.fetch, parse=stage.parse, write=stage.write
        )
        stage.pipeline = p
        pipes.append(p)

    async def due_soon() -> None:
        await asyncio.sleep(0.01)
        fence.is_due = True

    await asyncio.gather(pipes[0].run(range(30)), pipes[1].run(range(100, 130)), due_soon())
    assert stages[0].written == list(range(30)) and stages[1].written == list(range(100, 130))
    assert fence.inside_at_yield == [0] and gate.active == 0
