"""The job event stream (SPEC §6) against a real uvicorn and Postgres."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from app.jobs.models import Job, JobStatus, Lease
from app.jobs.store import JobStore
from tests.support.sse_client import SSEMessage, collect, read_sse


@pytest.fixture
async def client(web: Any) -> Any:
    async with httpx.AsyncClient(base_url=web.url, timeout=30) as c:
        yield c


async def run_fake_worker(
    store: JobStore,
    job: Job,
    batches: int,
    *,
    delay: float = 0.02,
    fail: bool = False,
    claimed: Job | None = None,
) -> None:
    if claimed is None:
        [claimed] = await store.claim([f"w-{job.job_id}"], lease_seconds=30)
    assert claimed.job_id == job.job_id
    lease = Lease.of(claimed)
    for i in range(1, batches + 1):
        await asyncio.sleep(delay)
        await store.progress(
            lease,
            f"batch {i}",
            processed=i * 10,
            total_estimate=batches * 10,
            data={"phase": "fetch", "batch": i, "items_found": 10, "has_more": i < batches},
        )
    if fail:
        await store.finish(lease, JobStatus.FAILED, "failed", error="boom")
    else:
        await store.finish(lease, JobStatus.COMPLETED, "completed", data={"summary": {"uids": []}})


def check_shapes(messages: list[SSEMessage]) -> None:
    for m in messages:
        payload = m.json()
        assert payload["type"] == m.event
        if m.event == "job_event":
            assert set(payload) == {
                "type",
                "job_id",
                "seq",
                "level",
                "message",
                "data",
                "created_at",
            }
            assert m.id == str(payload["seq"])
        elif m.event == "job_status":
            assert set(payload) == {
                "type",
                "job_id",
                "status",
                "processed",
                "total_estimate",
                "error",
            }
        else:
            assert m.event == "heartbeat" and set(payload) == {"type", "ts"}


async def test_stream_shapes_snapshot_first_and_terminal_status_last(
    client: httpx.AsyncClient, store: JobStore
) -> None:
    job = await store.enqueue("sync")
    reader = asyncio.create_task(collect(client, f"/api/jobs/{job.job_id}/events"))
    await asyncio.sleep(0.3)
    await run_fake_worker(store, job, 8)
    messages = await asyncio.wait_for(reader, 20)
    check_shapes(messages)
    assert messages[0].event == "job_status" and messages[0].json()["status"] == "pending"
    assert messages[-1].event == "job_status" and messages[-1].json()["status"] == "completed"
    seqs = [m.json()["seq"] for m in messages if m.event == "job_event"]
    assert (
        seqs == list(range(1, len(seqs) + 1)) and len(seqs) == 10
    )  # claim + 8 batches + completion
    processed = [m.json()["processed"] for m in messages if m.event == "job_status"]
    assert processed == sorted(processed) and processed[-1] == 80


async def test_resume_by_last_event_id_and_after_neither_repeats_nor_skips(
    client: httpx.AsyncClient, store: JobStore
) -> None:
    job = await store.enqueue("sync")
    await run_fake_worker(store, job, 5)
    by_header = await collect(
        client, f"/api/jobs/{job.job_id}/events", headers={"Last-Event-ID": "3"}
    )
    by_query = await collect(client, f"/api/jobs/{job.job_id}/events?after=3")
    for messages in (by_header, by_query):
        assert messages[0].event == "job_status"
        assert [m.json()["seq"] for m in messages if m.event == "job_event"] == [4, 5, 6, 7]
        assert messages[-1].json()["status"] == "completed"


async def test_finished_job_whose_events_were_all_seen_is_204(
    client: httpx.AsyncClient, store: JobStore
) -> None:
    job = await store.enqueue("sync")
    await run_fake_worker(store, job, 2)
    r = await client.get(f"/api/jobs/{job.job_id}/events", headers={"Last-Event-ID": "4"})
    assert r.status_code == 204
    r = await client.get(f"/api/jobs/{job.job_id}/events?after=3")
    assert r.status_code == 200


async def test_bad_resume_point_is_422(client: httpx.AsyncClient, store: JobStore) -> None:
    job = await store.enqueue("sync")
    r = await client.get(f"/api/jobs/{job.job_id}/events", headers={"Last-Event-ID": "abc"})
    assert r.status_code == 422 and r.json()["error"]


async def test_heartbeat_while_nothing_happens(client: httpx.AsyncClient, store: JobStore) -> None:
    job = await store.enqueue("sync")
    got: list[SSEMessage] = []
    async with client.stream("GET", f"/api/jobs/{job.job_id}/events") as r:
        async for m in read_sse(r):
            got.append(m)
            if m.event == "heartbeat":
                break
    check_shapes(got)
    assert got[0].event == "job_status" and got[-1].event == "heartbeat"


async def test_failed_job_ends_with_its_error(client: httpx.AsyncClient, store: JobStore) -> None:
    job = await store.enqueue("sync")
    reader = asyncio.create_task(collect(client, f"/api/jobs/{job.job_id}/events"))
    await asyncio.sleep(0.2)
    await run_fake_worker(store, job, 2, fail=True)
    messages = await asyncio.wait_for(reader, 20)
    assert messages[-1].json() == {
        "type": "job_status",
        "job_id": str(job.job_id),
        "status": "failed",
        "processed": 20,
        "total_estimate": 20,
        "error": "boom",
    }


async def test_100_concurrent_subscribers_each_get_every_event_of_their_own_job(
    client: httpx.AsyncClient, store: JobStore
) -> None:
    jobs = [await store.enqueue("sync") for _ in range(25)]
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    async with httpx.AsyncClient(base_url=str(client.base_url), timeout=60, limits=limits) as many:
        readers = [
            asyncio.create_task(collect(many, f"/api/jobs/{job.job_id}/events"))
            for job in jobs
            for _ in range(4)
        ]
        await asyncio.sleep(1.0)
        claimed = {
            j.job_id: j for j in await store.claim([f"w{i}" for i in range(25)], lease_seconds=30)
        }
        await asyncio.gather(
            *(
                run_fake_worker(store, job, 6, delay=0.01, claimed=claimed[job.job_id])
                for job in jobs
            )
        )
        results = await asyncio.wait_for(asyncio.gather(*readers), 60)
    for index, messages in enumerate(results):
        job = jobs[index // 4]
        events = [m.json() for m in messages if m.event == "job_event"]
        assert {e["job_id"] for e in events} == {str(job.job_id)}
        assert [e["seq"] for e in events] == list(range(1, 9))
        assert messages[-1].json()["status"] == "completed"
