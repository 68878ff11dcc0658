"""How the completer cuts its queue into statements (executor/completer.py)."""

from __future__ import annotations

import uuid

from app.jobs.models import Lease
from app.jobs.store import JobWrite, WriteKind
from executor.completer import _Pending, _take_batch

A, B = uuid.uuid4(), uuid.uuid4()


def write(lease: Lease, kind: WriteKind = WriteKind.PROGRESS) -> _Pending:
    return _Pending(JobWrite(kind, lease, kind.value), want_next=False)


async def test_a_jobs_writes_go_together_in_queue_order() -> None:
    a, b = Lease(A, 1, "w1"), Lease(B, 1, "w2")
    queue = [write(a), write(b), write(a), write(a, WriteKind.COMPLETE)]
    batch, later = _take_batch(queue)
    assert batch == queue and later == []


async def test_a_write_under_another_lease_waits_with_everything_after_it() -> None:
    old, new, b = Lease(A, 1, "w1"), Lease(A, 2, "w3"), Lease(B, 1, "w2")
    queue = [write(old), write(new), write(b), write(old), write(new, WriteKind.COMPLETE)]
    batch, later = _take_batch(queue)
    assert batch == [queue[0], queue[2]]
    assert later == [queue[1], queue[3], queue[4]]  # their order kept for the next batch


async def test_nothing_of_a_job_follows_its_completion_into_the_same_statement() -> None:
    a = Lease(A, 1, "w1")
    queue = [write(a, WriteKind.COMPLETE), write(a)]
    batch, later = _take_batch(queue)
    assert batch == [queue[0]] and later == [queue[1]]
