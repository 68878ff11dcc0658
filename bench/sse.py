"""SSE latency and database load by number of open streams, and page responsiveness.

    .venv/bin/python bench/sse.py [--streams 1,100,500] [--skip-browser]

For each stream count: a real uvicorn (its own process) serves
`/api/jobs/{id}/events` to that many httpx streams spread over 20 jobs; the
bench commits progress events and measures commit → client receipt latency
(p50/p95), and the web process's database load: its hub's round trips (from
/healthz) and every transaction it ran (pg_stat_database, less the bench's own),
both while events flow, plus the one-off cost of opening a stream. The 1-stream
run is the baseline the ratios refer to. About two minutes: pg_stat_database
publishes an idle backend's counters only every ten seconds.
Then a real Chromium watches 3 syncs run by a real executor and reports the
longest main-thread task and the worst input delay while typing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.db.pool import open_pool  # noqa: E402
from app.jobs.models import JobStatus, Lease  # noqa: E402
from app.jobs.store import JobStore  # noqa: E402
from tests.support.databases import DatabaseFactory, admin_url  # noqa: E402
from tests.support.sse_client import read_sse  # noqa: E402
from tests.support.uvicorn_server import free_port  # noqa: E402

JOBS = 20
EVENTS_PER_JOB = 30
STATS_SETTLE = 11.0


def start_web(database_url: str, **env: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "app.web.main:app",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        env={**os.environ, "DATABASE_URL": database_url, **env},
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            httpx.get(url + "/healthz", timeout=1)
            return proc, url
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError("web did not start")


async def db_transactions(database_url: str) -> int:
    """Committed + rolled-back transactions of the bench database so far.

    An idle Postgres 15+ backend publishes its counters within ten seconds
    (PGSTAT_IDLE_INTERVAL), so callers let STATS_SETTLE pass before reading."""
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        row = await (
            await conn.execute(
                "SELECT xact_commit + xact_rollback FROM pg_stat_database"
                " WHERE datname = current_database()"
            )
        ).fetchone()
    assert row is not None
    return int(row[0])


async def run_case(url: str, database_url: str, store: JobStore, streams: int) -> dict[str, Any]:
    jobs = [await store.enqueue("sync") for _ in range(JOBS)]
    claimed = {
        j.job_id: j for j in await store.claim([f"b{i}" for i in range(JOBS)], lease_seconds=300)
    }
    committed: dict[tuple[str, int], float] = {}  # (job, seq) -> when the commit returned
    received: list[tuple[str, int, float]] = []
    ready = asyncio.Event()
    connected = 0

    async def reader(client: httpx.AsyncClient, job_id: Any) -> None:
        nonlocal connected
        async with client.stream("GET", f"/api/jobs/{job_id}/events") as r:
            async for msg in read_sse(r):
                now = time.time()
                if msg.event == "job_status" and not ready.is_set():
                    connected += 1
                    if connected >= streams:
                        ready.set()
                if msg.event == "job_event":
                    data = msg.json()
                    received.append((data["job_id"], data["seq"], now))
                if msg.event == "job_status" and msg.json()["status"] == "completed":
                    return

    limits = httpx.Limits(max_connections=streams + 10, max_keepalive_connections=streams + 10)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        await asyncio.sleep(STATS_SETTLE)  # earlier counters reach pg_stat_database
        xacts_start = await db_transactions(database_url)
        hub_start = (await client.get("/healthz")).json()["hub_queries"]
        tasks = [asyncio.create_task(reader(client, jobs[i % JOBS].job_id)) for i in range(streams)]
        await asyncio.wait_for(ready.wait(), 120)
        await asyncio.sleep(STATS_SETTLE)
        xacts_before = await db_transactions(database_url)
        before = (await client.get("/healthz")).json()["hub_queries"]
        # Opening the streams: each one's own reads, less the hub's idle polls meanwhile.
        connect_xacts = (xacts_before - xacts_start - 1) - (before - hub_start)
        t0 = time.monotonic()
        bench_xacts = 0
        for step in range(1, EVENTS_PER_JOB + 1):
            for job in jobs:
                lease = Lease.of(claimed[job.job_id])
                result = await store.progress(
                    lease, f"step {step}", processed=step, total_estimate=EVENTS_PER_JOB
                )
                committed[(str(job.job_id), result.seq)] = time.time()
                bench_xacts += 1
            await asyncio.sleep(0.05)
        for job in jobs:
            await store.finish(Lease.of(claimed[job.job_id]), JobStatus.COMPLETED, "done")
            bench_xacts += 1
        await asyncio.wait_for(asyncio.gather(*tasks), 300)
        elapsed = time.monotonic() - t0
        after = (await client.get("/healthz")).json()["hub_queries"]
        await asyncio.sleep(STATS_SETTLE)
        xacts_after = await db_transactions(database_url)
    # The first event (the claim) was committed before the streams opened.
    latencies = sorted(
        at - committed[(job_id, seq)] for job_id, seq, at in received if (job_id, seq) in committed
    )
    return {
        "streams": streams,
        "watched_jobs": min(streams, JOBS),
        "events_received": len(latencies),
        "p50_ms": statistics.median(latencies) * 1000,
        "p95_ms": latencies[max(0, int(len(latencies) * 0.95) - 1)] * 1000,
        "hub_queries_per_s": (after - before) / elapsed,
        # Everything the web process ran, connects and backlogs included: the
        # database's transaction count less the bench's own writes and reading.
        "web_xacts_per_s": (xacts_after - xacts_before - bench_xacts - 1) / elapsed,
        "connect_xacts_per_stream": connect_xacts / streams,
    }


async def sse_bench(database_url: str, counts: list[int]) -> None:
    proc, url = start_web(database_url, SECRETARY_SSE_POLL_SECONDS="1")
    pool = await open_pool(database_url, max_size=5)
    store = JobStore(pool)
    try:
        rows = [await run_case(url, database_url, store, n) for n in counts]
    finally:
        await pool.close()
        proc.terminate()
        proc.wait(30)
    base = rows[0]
    print(
        f"{'streams':>8} {'jobs':>5} {'events':>7} {'p50 ms':>8} {'p95 ms':>8}"
        f" {'hub q/s':>8} {'web tx/s':>9} {'tx/connect':>10}"
    )
    for r in rows:
        print(
            f"{r['streams']:>8} {r['watched_jobs']:>5} {r['events_received']:>7}"
            f" {r['p50_ms']:>8.1f} {r['p95_ms']:>8.1f} {r['hub_queries_per_s']:>8.1f}"
            f" {r['web_xacts_per_s']:>9.1f} {r['connect_xacts_per_stream']:>10.1f}"
            f"  (p95 x{r['p95_ms'] / base['p95_ms']:.1f} of the {base['streams']}-stream baseline)"
        )
    print(
        "latency: from the moment the event's commit returned to the writer until an SSE\n"
        "client read it. While events flow: hub q/s = the web hub's round trips; web tx/s =\n"
        "every transaction the web process ran (pg_stat_database, bench writes subtracted).\n"
        "tx/connect: what opening one stream costs (job, snapshot, backlog), once.\n"
        f"Writers: {JOBS} jobs x {EVENTS_PER_JOB} events, ~20 events/s\n"
        "per job. Aim: p95 < 100 ms at 500 streams; database load follows the number of\n"
        "changing jobs watched, not the number of open streams."
    )


def browser_bench(database_url: str) -> None:
    import shutil
    import tempfile

    from playwright.sync_api import sync_playwright

    from app.demo.dovecot import DovecotServer
    from app.demo.mailbox import generate_mailbox, write_maildir
    from tests.e2e.conftest import CHROMIUM, CHROMIUM_ARGS
    from tests.e2e.test_progress_panel import OBSERVE

    home = Path(tempfile.mkdtemp(prefix="pbs-", dir="/tmp"))
    with DovecotServer(mail_home=home) as server:
        write_maildir(server.maildir, generate_mailbox(3000))
        env = {
            "IMAP_HOST": server.host,
            "IMAP_PORT": str(server.port),
            "IMAP_USERNAME": server.username,
            "IMAP_PASSWORD": server.password,
            "IMAP_SSL": "false",
            "SECRETARY_SYNC_BATCH_SIZE": "20",
        }
        executor = subprocess.Popen(
            [sys.executable, "-m", "executor", "--workers", "3", "--log-level", "WARNING"],
            env={**os.environ, "DATABASE_URL": database_url, **env},
        )
        web, url = start_web(database_url)
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1280, "height": 800})
                page.goto(url)
                page.evaluate(OBSERVE)
                for folders in (["INBOX"], ["INBOX"], ["Receipts", "Archive"]):
                    httpx.post(
                        url + "/api/jobs", json={"job_type": "sync", "params": {"folders": folders}}
                    )
                page.reload()
                page.evaluate(OBSERVE)
                box = page.locator("#chat-input")
                box.click()
                t0 = time.monotonic()
                while page.locator(".counts.complete").count() < 3 and time.monotonic() - t0 < 120:
                    box.press("a")
                    page.mouse.wheel(0, 30)
                perf = page.evaluate("window.__perf")
                browser.close()
        finally:
            executor.terminate()
            web.terminate()
            executor.wait(30)
            web.wait(30)
    shutil.rmtree(home, ignore_errors=True)
    delays = [e["delay"] for e in perf["events"]]
    print(
        f"page while 3 syncs run: longest task {max(perf['longtasks'], default=0):.0f} ms "
        f"({len(perf['longtasks'])} tasks over 50 ms), worst input delay {max(delays, default=0):.0f} ms "
        f"over {len(perf['events'])} slow-ish events (aim: no task over 50 ms)"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--streams", default="1,100,500")
    parser.add_argument("--skip-browser", action="store_true")
    args = parser.parse_args()
    factory = DatabaseFactory(admin_url())
    try:
        with factory.database() as url:
            asyncio.run(sse_bench(url, [int(x) for x in args.streams.split(",")]))
        if not args.skip_browser:
            with factory.database() as url:
                browser_bench(url)
    finally:
        factory.close()


if __name__ == "__main__":
    main()
