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
Then the web process's event-loop lag (`GET /healthz/lag`: a task inside the
web process sleeping 5 ms over and over, its oversleep pooled over the run)
while a real executor runs 3 syncs of 1,000 messages each and 500 streams
(half JSON event streams, half rendered card streams) watch them; aim: p99
under 10 ms. On a small shared host the load itself (the executor parsing
mail, Dovecot, the 500 stream readers) competes with the web process for the
CPU, and a process waiting for a core oversleeps whatever its loop does. So
the web process runs at normal priority and everything that makes the load
at `--load-nice` (10 by default; 0 puts them all on an equal footing), and
an idle process at the web's priority runs the same probe over the same
window: its figure is the host's floor, which no code in the web can go below. Last, a real Chromium watches 3 syncs run by a real executor and
reports the longest main-thread task and the worst input delay while typing.

    .venv/bin/python bench/sse.py --only lag      # just the lag figure
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this file's folder comes first on sys.path, where
# bench/queue.py would shadow the standard library's `queue` (asyncio imports it).
HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(HERE.parent))

import argparse
import asyncio
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg

from app.db.pool import open_pool  # noqa: E402
from app.jobs.models import JobStatus, Lease  # noqa: E402
from app.jobs.store import JobStore  # noqa: E402
from tests.support.databases import DatabaseFactory, admin_url  # noqa: E402
from tests.support.sse_client import read_sse  # noqa: E402
from tests.support.uvicorn_server import start_process  # noqa: E402

JOBS = 20
EVENTS_PER_JOB = 30
STATS_SETTLE = 11.0


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
    proc, url = start_process(database_url, SECRETARY_SSE_POLL_SECONDS="1")
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


def executor_env(server: Any, database_url: str, **extra: str) -> dict[str, str]:
    """The environment of an executor syncing `server` (a DovecotServer) in batches of 20."""
    return {
        **os.environ,
        "DATABASE_URL": database_url,
        "IMAP_HOST": server.host,
        "IMAP_PORT": str(server.port),
        "IMAP_USERNAME": server.username,
        "IMAP_PASSWORD": server.password,
        "IMAP_SSL": "false",
        "SECRETARY_SYNC_BATCH_SIZE": "20",
        **extra,
    }


def start_executor(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "executor", "--workers", "3", "--log-level", "WARNING"], env=env
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
        executor = start_executor(executor_env(server, database_url))
        web, url = start_process(database_url)
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


LAG_STREAMS = 500
LAG_MESSAGES = 3000
LAG_FOLDERS = ("INBOX", "Receipts", "Archive")
LAG_WINDOW = 2.0  # seconds per probe call; the samples of every window are pooled
LOAD_NICE = 10  # the lag run's load generators' niceness (the web process keeps the default)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))] if ordered else 0.0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


FLOOR_PROBE = """
import asyncio, json, sys, threading, time
stop = threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
async def probe():
    samples = []
    while not stop.is_set():
        before = time.monotonic()
        await asyncio.sleep(0.005)
        after = time.monotonic()
        samples.append((after, max(0.0, after - before - 0.005) * 1000))
    json.dump(samples, sys.stdout)
asyncio.run(probe())
"""


def start_floor_probe() -> subprocess.Popen[bytes]:
    """An idle process sleeping 5 ms over and over, as the web's probe does:
    what it oversleeps is the host's scheduling alone. Runs until stopped."""
    return subprocess.Popen(
        [sys.executable, "-c", FLOOR_PROBE], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )


def stop_floor_probe(proc: subprocess.Popen[bytes], t0: float, t1: float) -> list[float]:
    """The floor probe's lags between t0 and t1 (CLOCK_MONOTONIC is system-wide)."""
    out, _ = proc.communicate(timeout=30)
    return [lag for at, lag in json.loads(out) if t0 <= at <= t1]


async def lag_case(
    url: str, streams: int, start_executor: Any, web_pid: int, floor: subprocess.Popen[bytes]
) -> dict[str, Any]:
    """Open `streams` streams on 3 pending syncs, then start the executor and
    probe the web process's loop until the syncs are done (and read the
    floor probe's samples of the same window)."""
    limits = httpx.Limits(max_connections=streams + 20, max_keepalive_connections=streams + 20)
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as client:
        idle = (await client.get("/healthz/lag", params={"seconds": LAG_WINDOW})).json()
        jobs = []
        for folder in LAG_FOLDERS:
            r = await client.post(
                "/api/jobs", json={"job_type": "sync", "params": {"folders": [folder]}}
            )
            jobs.append(r.json()["job_id"])
        connected = 0
        ready = asyncio.Event()

        host, port = url.removeprefix("http://").split(":")

        async def reader(path: str) -> None:
            """Take a stream's bytes on a bare socket, as a browser elsewhere
            would, without parsing them: on this host the bench's own CPU is
            the web process's competitor, and httpx costs 10x a socket read."""
            nonlocal connected
            r, w = await asyncio.open_connection(host, int(port))
            w.write(
                f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n\r\n".encode()
            )
            first = True
            try:
                while chunk := await r.read(65536):
                    if first:
                        first = False
                        connected += 1
                        if connected >= streams:
                            ready.set()
                    if chunk.endswith(b"0\r\n\r\n"):  # the chunked body's end: the stream closed
                        break
            finally:
                w.close()

        paths = [
            f"/api/jobs/{jobs[i % 3]}/events" if i % 2 == 0 else f"/ui/jobs/{jobs[i % 3]}/stream"
            for i in range(streams)
        ]
        tasks = [asyncio.create_task(reader(p)) for p in paths]
        await asyncio.wait_for(ready.wait(), 120)
        await asyncio.sleep(3)  # the streams' own backlog reads finish: not part of the run
        executor = start_executor()
        t0 = time.monotonic()
        cpu0 = cpu_seconds(web_pid)
        own0 = sum(os.times()[:2])
        lags: list[float] = []
        try:
            while True:
                probe = await client.get(
                    "/healthz/lag", params={"seconds": LAG_WINDOW, "raw": "true"}
                )
                lags.extend(probe.json()["lags_ms"])
                states = [(await client.get(f"/api/jobs/{j}")).json()["status"] for j in jobs]
                if all(s in ("completed", "failed", "cancelled") for s in states):
                    break
                if time.monotonic() - t0 > 600:
                    raise RuntimeError(f"the syncs did not finish: {states}")
            t1 = time.monotonic()
            elapsed = t1 - t0
            web_cpu = cpu_seconds(web_pid) - cpu0
            bench_cpu = sum(os.times()[:2]) - own0
            await asyncio.wait_for(asyncio.gather(*tasks), 60)
        finally:
            executor.terminate()
            executor.wait(30)
    floor_lags = stop_floor_probe(floor, t0, t1)
    return {
        "streams": streams,
        "sync_seconds": elapsed,
        "web_cpu": web_cpu,
        "bench_cpu": bench_cpu,
        "samples": len(lags),
        "p50_ms": percentile(lags, 0.50),
        "p99_ms": percentile(lags, 0.99),
        "max_ms": max(lags, default=0.0),
        "idle_p99_ms": idle["p99_ms"],
        "floor_samples": len(floor_lags),
        "floor_p50_ms": percentile(floor_lags, 0.50),
        "floor_p99_ms": percentile(floor_lags, 0.99),
        "floor_max_ms": max(floor_lags, default=0.0),
        "states": states,
    }


def lag_bench(
    database_url: str,
    streams: int = LAG_STREAMS,
    messages: int = LAG_MESSAGES,
    load_nice: int = LOAD_NICE,
) -> None:
    import shutil
    import tempfile

    from app.demo.dovecot import DovecotServer
    from app.demo.mailbox import generate_mailbox, write_maildir

    # The web process and the floor probe first, at this process's priority;
    # then this process (the stream readers) and what it starts afterwards
    # (Dovecot, the executor) step back by `load_nice`.
    web, url = start_process(database_url)
    floor = start_floor_probe()
    os.nice(load_nice)
    home = Path(tempfile.mkdtemp(prefix="pbl-", dir="/tmp"))
    try:
        with DovecotServer(mail_home=home) as server:
            # Three folders of a thousand messages each: three syncs that really overlap.
            mail = [
                dataclasses.replace(m, folder=LAG_FOLDERS[i % 3])
                for i, m in enumerate(generate_mailbox(messages))
            ]
            write_maildir(server.maildir, mail)
            env = executor_env(server, database_url, SECRETARY_LIVE_MIRROR="false")
            r = asyncio.run(lag_case(url, streams, lambda: start_executor(env), web.pid, floor))
    finally:
        if floor.poll() is None:
            floor.kill()
        web.terminate()
        web.wait(30)
        shutil.rmtree(home, ignore_errors=True)
    print(
        f"web event-loop lag while 3 syncs run ({messages} messages, batches of 20, "
        f"{r['sync_seconds']:.1f} s) and {r['streams']} streams are open: "
        f"p50 {r['p50_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms, max {r['max_ms']:.1f} ms "
        f"over {r['samples']} samples (idle p99 {r['idle_p99_ms']:.2f} ms; aim: p99 < 10 ms)\n"
        f"  host floor, same window (an idle process at the web's priority): "
        f"p50 {r['floor_p50_ms']:.2f} ms, p99 {r['floor_p99_ms']:.2f} ms, "
        f"max {r['floor_max_ms']:.1f} ms over {r['floor_samples']} samples; "
        f"load (executor, Dovecot, readers) at nice +{load_nice}\n"
        f"  the web process used {r['web_cpu']:.1f} s of CPU "
        f"({r['web_cpu'] / r['sync_seconds'] * 100:.0f}% of one core; the bench's readers "
        f"{r['bench_cpu']:.1f} s); jobs {', '.join(r['states'])}"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--streams", default="1,100,500")
    parser.add_argument("--skip-browser", action="store_true")
    parser.add_argument(
        "--only", choices=["streams", "lag", "browser"], help="run one part of the bench"
    )
    parser.add_argument("--lag-streams", type=int, default=LAG_STREAMS)
    parser.add_argument("--lag-messages", type=int, default=LAG_MESSAGES)
    parser.add_argument(
        "--load-nice",
        type=int,
        default=LOAD_NICE,
        help="niceness of the lag run's load (executor, Dovecot, readers); 0: equal footing",
    )
    args = parser.parse_args()
    parts = {args.only} if args.only else {"streams", "lag", "browser"}
    if args.skip_browser:
        parts.discard("browser")
    factory = DatabaseFactory(admin_url())
    try:
        if "streams" in parts:
            with factory.database() as url:
                asyncio.run(sse_bench(url, [int(x) for x in args.streams.split(",")]))
        if "lag" in parts:
            with factory.database() as url:
                lag_bench(url, args.lag_streams, args.lag_messages, args.load_nice)
        if "browser" in parts:
            with factory.database() as url:
                browser_bench(url)
    finally:
        factory.close()


if __name__ == "__main__":
    main()
