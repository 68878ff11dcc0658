"""The job event stream (SPEC §6) against a real uvicorn and Postgres."""

from __future__ import annotations

import asyncio
import re
import socket
import time
from typing import Any

import httpx
import pytest

from app.jobs.models import Job, JobStatus, Lease
from app.jobs.store import JobStore
from tests.support.live_mail import eventually
from tests.support.sse_client import SSEMessage, collect, read_sse
from tests.support.uvicorn_server import serve


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


@pytest.mark.parametrize("bad", ["abc", "+1", "1_0", "-1", "1.5", "\u0661"])
async def test_bad_resume_point_is_422(
    client: httpx.AsyncClient, store: JobStore, bad: str
) -> None:
    job = await store.enqueue("sync")
    r = await client.get(
        f"/api/jobs/{job.job_id}/events", headers={"Last-Event-ID": bad.encode("utf-8")}
    )
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


async def test_heartbeats_keep_coming_while_events_stream(
    client: httpx.AsyncClient, store: JobStore
) -> None:
    """The fixture's heartbeat interval is 0.5 s; a steady trickle of events
    must not push heartbeats back."""
    job = await store.enqueue("sync")
    reader = asyncio.create_task(collect(client, f"/api/jobs/{job.job_id}/events"))
    await asyncio.sleep(0.2)
    await run_fake_worker(store, job, 25, delay=0.1)
    messages = await asyncio.wait_for(reader, 30)
    check_shapes(messages)
    beats = [m.json()["ts"] for m in messages if m.event == "heartbeat"]
    assert len(beats) >= 3, beats
    assert max(b - a for a, b in zip(beats, beats[1:], strict=False)) < 1.2


async def test_job_status_only_when_something_changed(
    client: httpx.AsyncClient, store: JobStore
) -> None:
    job = await store.enqueue("sync")
    reader = asyncio.create_task(collect(client, f"/api/jobs/{job.job_id}/events"))
    await asyncio.sleep(0.3)
    [claimed] = await store.claim(["w"], lease_seconds=30)
    lease = Lease.of(claimed)
    for i in range(4):  # events that move no counter
        await store.progress(lease, f"note {i}")
        await asyncio.sleep(0.05)
    await store.finish(lease, JobStatus.COMPLETED, "done")
    messages = await asyncio.wait_for(reader, 20)
    statuses = [m.json() for m in messages if m.event == "job_status"]
    assert [s["status"] for s in statuses] == ["pending", "running", "completed"]


async def test_a_missed_notify_never_stalls_a_stream(
    client: httpx.AsyncClient, store: JobStore
) -> None:
    """With the NOTIFY trigger off, the hub's poll (0.5 s in the fixture) still
    delivers every event."""
    async with store.pool.connection() as conn:
        await conn.execute("ALTER TABLE imap_jobs DISABLE TRIGGER imap_jobs_notify")
    job = await store.enqueue("sync")
    reader = asyncio.create_task(collect(client, f"/api/jobs/{job.job_id}/events"))
    await asyncio.sleep(0.3)
    await run_fake_worker(store, job, 5)
    messages = await asyncio.wait_for(reader, 10)
    assert [m.json()["seq"] for m in messages if m.event == "job_event"] == list(range(1, 8))
    assert messages[-1].json()["status"] == "completed"


async def test_the_listen_connection_comes_back_after_being_killed(
    database_url: str, store: JobStore
) -> None:
    """Polling is slowed to a minute here, so only NOTIFY can deliver in time."""
    with serve(database_url, sse_heartbeat_seconds=0.5, sse_poll_seconds=60) as web:
        async with httpx.AsyncClient(base_url=web.url, timeout=30) as c:
            job = await store.enqueue("sync")
            async with store.pool.connection() as conn:
                killed = await (
                    await conn.execute(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                        " WHERE datname = current_database() AND query ILIKE 'LISTEN%%'"
                    )
                ).fetchall()
            assert killed, "the hub holds no LISTEN connection"
            await asyncio.sleep(1.5)  # the hub reconnects after its first backoff step
            reader = asyncio.create_task(collect(c, f"/api/jobs/{job.job_id}/events"))
            await asyncio.sleep(0.3)
            await run_fake_worker(store, job, 3)
            messages = await asyncio.wait_for(reader, 10)
    assert [m.json()["seq"] for m in messages if m.event == "job_event"] == list(range(1, 6))


class _Connected:
    """Just enough of a Request for the stream generator: never disconnected."""

    async def is_disconnected(self) -> bool:
        return False


async def test_a_slow_subscriber_catches_up_from_the_database(
    database_url: str, store: JobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A subscriber whose buffer overflows loses its buffer, not events: the
    stream re-reads from the database by seq."""
    from app.web import hub as hub_module
    from app.web.routes.events import _job_stream

    monkeypatch.setattr(hub_module, "QUEUE_LIMIT", 2)
    hub = hub_module.EventHub(store, database_url, poll_seconds=0.2)
    await hub.start()
    try:
        job = await store.enqueue("sync")
        stream = _job_stream(_Connected(), store, hub, job, 0, 30.0)  # type: ignore[arg-type]
        first = await anext(stream)
        assert b"event: job_status" in first
        [sub] = hub.subs[job.job_id]
        await run_fake_worker(store, job, 20, delay=0.03)  # the stream is not read meanwhile
        await asyncio.sleep(0.5)
        assert sub.lagging and len(sub.pending) <= 2
        body = b"".join([chunk async for chunk in stream])  # type: ignore[misc]
    finally:
        await hub.stop()
    text = body.decode()
    seqs = [int(line[4:]) for line in text.splitlines() if line.startswith("id: ")]
    assert seqs == list(range(1, 23))
    assert '"status": "completed"' in text.rsplit("event: job_status", 1)[1]


async def test_a_stalled_client_delays_no_other_stream_and_is_dropped(
    web: Any, client: httpx.AsyncClient, store: JobStore
) -> None:
    """A client that stops reading fills its socket, and its stream waits in
    uvicorn's send. Its neighbour on the same job still gets every event as it
    comes; the stalled stream's mailbox stays bounded; and the stall guard
    drops it once it has been stuck past the timeout (the client could resume
    by seq), closing its connection."""
    from app.web import hub as hub_module

    hub = web.server.config.app.state.hub
    hub.guard.timeout = 3600.0  # not yet: first show the neighbour is not held up
    job = await store.enqueue("sync")
    host, port = web.url.removeprefix("http://").split(":")
    stalled = socket.socket()
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: a small window
    stalled.connect((host, int(port)))
    stalled.sendall(
        f"GET /api/jobs/{job.job_id}/events HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()
    )
    normal = asyncio.create_task(collect(client, f"/api/jobs/{job.job_id}/events"))
    try:
        await asyncio.sleep(0.5)
        [claimed] = await store.claim(["w"], lease_seconds=60)
        lease = Lease.of(claimed)
        committed: dict[int, float] = {}
        blob = "x" * 100_000  # 60 events of 100 kB: far more than the stalled socket takes
        for i in range(1, 61):
            result = await store.progress(
                lease, f"batch {i}", data={"phase": "fetch", "blob": blob}
            )
            committed[result.seq] = time.monotonic()
            await asyncio.sleep(0.01)
        await store.finish(lease, JobStatus.COMPLETED, "done")
        messages = await asyncio.wait_for(normal, 60)
        assert [m.json()["seq"] for m in messages if m.event == "job_event"] == list(range(1, 63))
        assert messages[-1].json()["status"] == "completed"
        # The stalled stream is still there, stuck in a send, its mailbox bounded.
        [sub] = hub.subs[job.job_id]
        assert len(sub.pending) <= hub_module.QUEUE_LIMIT
        assert hub.guard.dropped == 0
        hub.guard.timeout = 0.5

        async def dropped() -> bool:
            return job.job_id not in hub.subs

        # The watchdog's current nap (up to 5 s), then the timeout.
        await eventually(dropped, 15, "the stalled stream is dropped", step=0.1)
        assert hub.guard.dropped == 1
        # Its connection is closed: whatever the socket still holds, then EOF.
        stalled.settimeout(10)
        received = 0
        while chunk := await asyncio.to_thread(stalled.recv, 65536):
            received += len(chunk)
        assert 0 < received < 60 * 100_000
    finally:
        stalled.close()
        if not normal.done():
            normal.cancel()


async def test_partial_hub_reads_still_deliver_every_event_in_order(
    client: httpx.AsyncClient, store: JobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hub reads at most REFRESH_LIMIT events a round; with a tiny limit and
    several busy jobs, streams still get every event once, in order."""
    from app.web import hub as hub_module

    monkeypatch.setattr(hub_module, "REFRESH_LIMIT", 3)
    jobs = [await store.enqueue("sync") for _ in range(3)]
    readers = [
        asyncio.create_task(collect(client, f"/api/jobs/{job.job_id}/events")) for job in jobs
    ]
    await asyncio.sleep(0.3)
    claimed = {j.job_id: j for j in await store.claim(["a", "b", "c"], lease_seconds=30)}
    await asyncio.gather(
        *(run_fake_worker(store, j, 12, delay=0.0, claimed=claimed[j.job_id]) for j in jobs)
    )
    results = await asyncio.wait_for(asyncio.gather(*readers), 20)
    for job, messages in zip(jobs, results, strict=True):
        events = [m.json() for m in messages if m.event == "job_event"]
        assert [e["seq"] for e in events] == list(range(1, 15))
        assert {e["job_id"] for e in events} == {str(job.job_id)}
        assert messages[-1].json()["status"] == "completed"
        processed = [m.json()["processed"] for m in messages if m.event == "job_status"]
        assert processed == sorted(processed)


# -- the page's cards: one fold, resumed from the seq the page has ---------------


def card_in(page_html: str, job_id: Any) -> str:
    """A job's card in the page's markup (its <div> and everything inside)."""
    at = page_html.index(f'id="job-{job_id}"')
    begin = page_html.rindex("<div", 0, at)
    depth = 0
    for tag in re.finditer(r"<div\b|</div>", page_html[begin:]):
        depth += 1 if tag.group(0) == "<div" else -1
        if depth == 0:
            return page_html[begin : begin + tag.end()]
    raise AssertionError("unclosed card")


async def test_a_reload_shows_exactly_the_card_the_live_stream_ended_with(
    client: httpx.AsyncClient, store: JobStore
) -> None:
    job = await store.enqueue("sync")
    reader = asyncio.create_task(collect(client, f"/ui/jobs/{job.job_id}/stream"))
    await asyncio.sleep(0.3)
    await run_fake_worker(store, job, 6)
    messages = await asyncio.wait_for(reader, 20)
    [closed] = [m for m in messages if m.event == "job_closed"]
    assert "6 batch(es)" in closed.data
    from app.web.progress_cache import CACHE

    CACHE.clear()  # another web process, or this one restarted
    page = await client.get("/")
    assert card_in(page.text, job.job_id) == closed.data.strip()


async def test_card_streams_swap_at_most_four_times_a_second_and_in_step(
    client: httpx.AsyncClient, store: JobStore
) -> None:
    """Card streams are throttled per job by the hub (THROTTLE_SECONDS): a
    burst of batches costs a few swaps, spaced by the throttle, and every card
    of the job ends on the same finished card."""
    from app.web.hub import THROTTLE_SECONDS

    job = await store.enqueue("sync")

    async def read_card() -> list[tuple[float, SSEMessage]]:
        got = []
        async with client.stream("GET", f"/ui/jobs/{job.job_id}/stream") as r:
            async for m in read_sse(r):
                got.append((time.monotonic(), m))
                if m.event == "job_closed":
                    return got
        return got

    readers = [asyncio.create_task(read_card()) for _ in range(3)]
    await asyncio.sleep(0.3)
    await run_fake_worker(store, job, 40, delay=0.02)
    results = await asyncio.wait_for(asyncio.gather(*readers), 20)
    for got in results:
        # The first swap is the card as the stream found it, on connect.
        swaps = [at for at, m in got if m.event == "batch_progress"][1:]
        assert len(swaps) >= 2
        gaps = [b - a for a, b in zip(swaps, swaps[1:], strict=False)]
        assert min(gaps) > THROTTLE_SECONDS * 0.8, gaps
    closed = [[m.data for _, m in got if m.event == "job_closed"] for got in results]
    assert closed[0] == closed[1] == closed[2] and "40 batch(es)" in closed[0][0]


async def test_a_card_stream_resumes_from_the_seq_the_page_rendered(
    client: httpx.AsyncClient, store: JobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The page renders a running card at seq N and the card streams from N:
    no event at or before N is read again, and the card ends where a fold from
    seq 0 ends."""
    job = await store.enqueue("sync")
    [claimed] = await store.claim(["w"], lease_seconds=30)
    lease = Lease.of(claimed)
    for i in range(1, 31):
        await store.progress(
            lease, f"batch {i}", processed=i, total_estimate=60, data={"phase": "fetch", "batch": i}
        )
    page = await client.get("/")
    [after] = re.findall(rf"/ui/jobs/{job.job_id}/stream\?after=(\d+)", page.text)
    assert int(after) == 31
    reads: list[int] = []
    original = JobStore.events_after

    async def spy(self: JobStore, job_id: Any, after: int = 0, limit: int = 1000) -> Any:
        if job_id == job.job_id:
            reads.append(after)
        return await original(self, job_id, after, limit)

    monkeypatch.setattr(JobStore, "events_after", spy)
    reader = asyncio.create_task(collect(client, f"/ui/jobs/{job.job_id}/stream?after={after}"))
    await asyncio.sleep(0.3)
    for i in range(31, 61):
        await store.progress(
            lease, f"batch {i}", processed=i, total_estimate=60, data={"phase": "fetch", "batch": i}
        )
    await store.finish(lease, JobStatus.COMPLETED, "completed", data={"summary": {}})
    messages = await asyncio.wait_for(reader, 20)
    assert reads and min(reads) >= int(after), reads
    [closed] = [m for m in messages if m.event == "job_closed"]
    assert "60 batch(es)" in closed.data


async def test_a_card_the_page_shows_current_gets_no_swap_until_the_job_moves(
    client: httpx.AsyncClient, store: JobStore
) -> None:
    job = await store.enqueue("sync")
    [claimed] = await store.claim(["w"], lease_seconds=30)
    lease = Lease.of(claimed)
    await store.progress(lease, "batch 1", processed=1, data={"phase": "fetch", "batch": 1})
    page = await client.get("/")
    [after] = re.findall(rf"/ui/jobs/{job.job_id}/stream\?after=(\d+)", page.text)
    got: list[SSEMessage] = []
    async with client.stream("GET", f"/ui/jobs/{job.job_id}/stream?after={after}") as r:
        async for m in read_sse(r):
            got.append(m)
            if m.event == "heartbeat" and len(got) == 1:
                await store.progress(lease, "batch 2", processed=2, data={"phase": "fetch"})
            if m.event == "batch_progress":
                break
    assert [m.event for m in got] == ["heartbeat", "batch_progress"]
    assert "batch 2" in got[-1].data


async def test_a_finished_card_renders_from_its_stored_fold_once_its_events_are_gone(
    client: httpx.AsyncClient, store: JobStore, pool: Any
) -> None:
    job = await store.enqueue("sync")
    await run_fake_worker(store, job, 4)
    first = card_in((await client.get("/")).text, job.job_id)  # folds it, stores the fold
    async with pool.connection() as conn:
        await conn.execute("DELETE FROM imap_job_events WHERE job_id = %s", (job.job_id,))
    from app.web.progress_cache import CACHE

    CACHE.clear()
    again = card_in((await client.get("/")).text, job.job_id)
    assert again == first and "4 batch(es)" in again
    messages = await collect(client, f"/ui/jobs/{job.job_id}/stream")
    assert [m.event for m in messages] == ["batch_complete", "job_closed"]
    assert messages[-1].data.strip() == first


async def test_a_mutation_card_ends_live_exactly_as_the_page_shows_it_with_undo(
    client: httpx.AsyncClient, store: JobStore
) -> None:
    from tests.integration.test_cleaner import approved_mutation, run_mutation

    job = await approved_mutation(store)
    reader = asyncio.create_task(collect(client, f"/ui/jobs/{job.job_id}/stream"))
    await asyncio.sleep(0.3)
    await run_mutation(store, job)
    messages = await asyncio.wait_for(reader, 20)
    [closed] = [m for m in messages if m.event == "job_closed"]
    assert 'class="undo"' in closed.data and "mark read: 2" in closed.data
    assert card_in((await client.get("/")).text, job.job_id) == closed.data.strip()


async def test_the_encoded_event_cache_stays_within_its_byte_budget(
    client: httpx.AsyncClient, store: JobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Events with long UID lists: the cache keeps to its bytes, and streams
    still get every event (an evicted one is encoded again)."""
    from app.web.byte_lru import ByteLRU
    from app.web.routes import events as events_module

    budget = 64 * 1024
    cache: ByteLRU[Any, bytes] = ByteLRU(budget, len)
    monkeypatch.setattr(events_module, "_EVENT_CACHE", cache)
    job = await store.enqueue("sync")
    [claimed] = await store.claim(["w"], lease_seconds=30)
    lease = Lease.of(claimed)
    for i in range(40):
        await store.progress(lease, f"b{i}", data={"phase": "fetch", "uids": list(range(2000))})
    await store.finish(lease, JobStatus.COMPLETED, "done")
    for _ in range(2):
        messages = await collect(client, f"/api/jobs/{job.job_id}/events")
        assert [m.json()["seq"] for m in messages if m.event == "job_event"] == list(range(1, 43))
        assert 0 < cache.nbytes <= budget and len(cache) < 42
