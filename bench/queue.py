"""The job queue against procrastinate and pgqueuer: burn-down and pick-up latency.

    .venv/bin/pip install -e '.[bench]'     # procrastinate, pgqueuer, asyncpg (bench only;
                                            # the bench installs them itself if missing)
    .venv/bin/python bench/queue.py [--jobs 3000] [--rounds 3] [--pickups 200] [--only executor]

Each case gets a fresh database on the machine's Postgres (127.0.0.1:5432, or
the admin URL in DATABASE_URL / TEST_ADMIN_DATABASE_URL), dropped afterwards:

* executor: the real `Executor` (producer, 3 worker slots, completer, leases,
  lease renewer, reaper, listener, cleaner) running `--jobs` no-op jobs of a
  bench-only job type (registered in the throwaway database's
  `imap_job_types`; never a product type). The handler reports one progress
  event, so every job writes three events (claimed, progress, completed):
  once awaited (`ctx.progress(...)`: committed before the handler returns, a
  round trip of its own), once written behind (`ctx.progress(..., wait=False)`:
  it shares the batch of the job's completion). Timed from the executor's
  start until every job is `completed`; then the event log is checked (3 per
  job, seq 1..3). The completer writes what its workers hand in meanwhile as
  one `claim` statement (events, completions and the freed workers' next
  jobs), which the executor keeps prepared with one generic plan; `stmt/job`
  is how many of those statements each job cost (2/3 awaited, 1/3 behind:
  3 workers in step share each one).
* pick-up: the same executor idle (it waits on LISTEN, its poll is 2 s);
  `--pickups` single jobs, one at a time, to the handler's start: from
  sending the INSERT (which includes its own execution) and from its commit.
* pgqueuer (asyncpg driver): the same no-op jobs, entrypoint concurrency limit
  3 with batches of 3, and again with its defaults (batches of 10, no cap);
  drain mode.
* procrastinate: the same, `concurrency=3`, `wait=False`.
* bare loop: claim with FOR UPDATE SKIP LOCKED, then complete, over 3
  connections, no leases or events: roughly the floor of two round trips a job.

The enqueue is not timed (all jobs are inserted before each worker starts,
then the database is analyzed, as autovacuum would have done by then).
Ratios are against pgqueuer at concurrency 3, measured in the same run.
The cases run in `--rounds` interleaved rounds and each figure is the median,
so a burst of load from elsewhere on a shared machine spreads over all of them;
compare ratios, not absolute figures, and say the load.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this file's folder comes first on sys.path, where its name
# would shadow the standard library's `queue` (which psycopg imports).
HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

import argparse  # noqa: E402
import asyncio  # noqa: E402
import contextlib  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
import tomllib  # noqa: E402
import uuid  # noqa: E402
from collections.abc import AsyncIterator, Awaitable, Callable  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from typing import Any  # noqa: E402

import psycopg  # noqa: E402
from psycopg.conninfo import conninfo_to_dict, make_conninfo  # noqa: E402

from app.config import ImapAccount, Settings  # noqa: E402
from app.db.migrate import migrate  # noqa: E402
from executor.app import Executor  # noqa: E402
from executor.context import JobContext  # noqa: E402

BENCH_TYPE = "bench_noop"
EXECUTOR = "executor, 3 workers, event awaited"
EXECUTOR_BEHIND = "executor, 3 workers, event written behind"
PGQ_C3 = "pgqueuer, concurrency 3"
PGQ_DEFAULT = "pgqueuer, defaults (batch 10, no cap)"
LOCAL_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def admin_url() -> str:
    return (
        os.environ.get("TEST_ADMIN_DATABASE_URL")
        or os.environ.get("DATABASE_URL")
        or LOCAL_ADMIN_URL
    )


def ensure_bench_dependencies() -> None:
    """Install the `bench` extra (procrastinate, pgqueuer, asyncpg) when it is missing."""
    try:
        import asyncpg  # noqa: F401
        import pgqueuer  # noqa: F401
        import procrastinate  # noqa: F401
    except ImportError:
        extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
            "optional-dependencies"
        ]["bench"]
        print(f"installing the bench extra: {' '.join(extra)}", flush=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", *extra], check=True)


@contextlib.asynccontextmanager
async def fresh_database(admin: str, *, migrated: bool = False) -> AsyncIterator[str]:
    name = f"piper_qbench_{uuid.uuid4().hex[:10]}"
    async with await psycopg.AsyncConnection.connect(admin, autocommit=True) as conn:
        await conn.execute(f'CREATE DATABASE "{name}"')
    params = conninfo_to_dict(admin)
    params["dbname"] = name
    url = make_conninfo(**params)
    try:
        if migrated:
            await asyncio.to_thread(migrate, url)
        yield url
    finally:
        async with await psycopg.AsyncConnection.connect(admin, autocommit=True) as conn:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def wait_until(check: Callable[[], Awaitable[bool]], timeout: float, every: float) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError("the queue did not drain in time")
        await asyncio.sleep(every)


# ------------------------------------------------------------------ executor


def bench_settings() -> Settings:
    return Settings(
        lease_seconds=30.0,
        poll_seconds=2.0,
        live_mirror=False,
        parse_processes=0,
        cleaner_interval=3600.0,
    )


async def register_bench_type(conn: psycopg.AsyncConnection[Any]) -> None:
    await conn.execute(
        "INSERT INTO imap_job_types (job_type, is_mutation, is_undoable)"
        " VALUES (%s, false, false) ON CONFLICT DO NOTHING",
        (BENCH_TYPE,),
    )


async def insert_jobs(conn: psycopg.AsyncConnection[Any], n: int) -> None:
    await conn.execute(
        "INSERT INTO imap_jobs (job_type, created_at)"
        " SELECT %s, clock_timestamp() FROM generate_series(1, %s)",
        (BENCH_TYPE, n),
    )
    await conn.execute("ANALYZE")


@contextlib.asynccontextmanager
async def running_executor(
    url: str, handler: Callable[[JobContext], Awaitable[dict[str, Any]]]
) -> AsyncIterator[Executor]:
    # No IMAP connection is ever opened: the no-op handler does not ask for one.
    account = ImapAccount("127.0.0.1", 1, "bench", "bench", ssl=False)
    executor = Executor(
        bench_settings(),
        url,
        account,
        workers=3,
        job_types=[BENCH_TYPE],
        handlers={BENCH_TYPE: handler},
    )
    task = asyncio.create_task(executor.run())
    try:
        yield executor
    finally:
        executor.stop()
        await asyncio.wait_for(task, 30)


async def noop_with_event(ctx: JobContext) -> dict[str, Any]:
    await ctx.progress("no-op", processed=1, total_estimate=1)
    return {}


async def noop_with_event_behind(ctx: JobContext) -> dict[str, Any]:
    await ctx.progress("no-op", processed=1, total_estimate=1, wait=False)
    return {}


async def executor_burn_down(
    admin: str, n: int, *, behind: bool = False, statements: list[float] | None = None
) -> float:
    """Jobs per second; appends the completer's statements per job to `statements`."""
    async with (
        fresh_database(admin, migrated=True) as url,
        await psycopg.AsyncConnection.connect(url, autocommit=True) as conn,
    ):
        await register_bench_type(conn)
        await insert_jobs(conn, n)

        async def drained() -> bool:
            cur = await conn.execute("SELECT count(*) FROM imap_jobs WHERE status = 'completed'")
            row = await cur.fetchone()
            return row is not None and row[0] >= n

        t0 = time.perf_counter()
        handler = noop_with_event_behind if behind else noop_with_event
        async with running_executor(url, handler) as executor:
            await wait_until(drained, timeout=n / 20 + 60, every=0.02)
            elapsed = time.perf_counter() - t0
            if statements is not None and executor.completer is not None:
                statements.append(executor.completer.batches / n)
        cur = await conn.execute(
            "SELECT count(*), count(DISTINCT job_id), min(seq), max(seq),"
            " bool_and(seq BETWEEN 1 AND 3) FROM imap_job_events"
        )
        events, jobs, lo, hi, in_range = await cur.fetchone()  # type: ignore[misc]
        if (events, jobs, lo, hi, in_range) != (3 * n, n, 1, 3, True):
            raise AssertionError(f"event log is not 3 per job: {events} events over {jobs} jobs")
        return n / elapsed


async def executor_pickup(admin: str, samples: int) -> tuple[list[float], list[float]]:
    """Seconds to the handler's start, one job at a time on an idle executor:
    from sending the enqueue, and from its commit returning."""
    started: dict[str, float] = {}
    arrived = asyncio.Event()

    async def stamp(ctx: JobContext) -> dict[str, Any]:
        started[str(ctx.job.job_id)] = time.perf_counter()
        arrived.set()
        await ctx.progress("no-op", processed=1, total_estimate=1)
        return {}

    from_send: list[float] = []
    from_commit: list[float] = []
    async with (
        fresh_database(admin, migrated=True) as url,
        await psycopg.AsyncConnection.connect(url, autocommit=True) as conn,
    ):
        await register_bench_type(conn)
        async with running_executor(url, stamp):
            await asyncio.sleep(0.5)  # listener connected, producer idle
            for i in range(samples + 5):
                arrived.clear()
                sent = time.perf_counter()
                cur = await conn.execute(
                    "INSERT INTO imap_jobs (job_type) VALUES (%s) RETURNING job_id", (BENCH_TYPE,)
                )
                committed = time.perf_counter()
                row = await cur.fetchone()
                assert row is not None
                await asyncio.wait_for(arrived.wait(), 10)
                if i >= 5:  # the first few warm the pool's connections up
                    began = started[str(row[0])]
                    from_send.append(began - sent)
                    from_commit.append(max(0.0, began - committed))
                await asyncio.sleep(0.02)  # let the job finish: the executor is idle again
    return from_send, from_commit


# ------------------------------------------------------------------ pgqueuer


async def pgqueuer_burn_down(admin: str, n: int, *, concurrency: int) -> float:
    """pgqueuer on asyncpg (its own driver, and its fastest). `concurrency` 0 is
    its default: batches of 10, no cap. With a cap, the batch is the cap: the
    entrypoint limit counts picked jobs, and a completion stays buffered until a
    batch of them is flushed, so a batch larger than the cap stalls it."""
    import asyncpg
    from pgqueuer import AsyncpgDriver, QueueManager
    from pgqueuer import Job as PgqJob
    from pgqueuer.queries import Queries
    from pgqueuer.types import QueueExecutionMode

    async with fresh_database(admin) as url:
        params = conninfo_to_dict(url)
        connect = {
            "host": params.get("host", "127.0.0.1"),
            "port": int(params.get("port", 5432)),
            "user": params.get("user"),
            "password": params.get("password"),
            "database": params["dbname"],
        }
        conn = await asyncpg.connect(**connect)
        worker_conn = await asyncpg.connect(**connect)
        try:
            queries = Queries(AsyncpgDriver(conn))
            await queries.install()
            for start in range(0, n, 1000):
                size = min(1000, n - start)
                await queries.enqueue(["noop"] * size, [None] * size, [0] * size)
            await conn.execute("ANALYZE")
            qm = QueueManager(Queries(AsyncpgDriver(worker_conn)))

            @qm.entrypoint("noop", concurrency_limit=concurrency)
            async def noop(job: PgqJob) -> None:
                return None

            t0 = time.perf_counter()
            await asyncio.wait_for(
                qm.run(mode=QueueExecutionMode.drain, batch_size=concurrency or 10),
                n / 20 + 60,
            )
            elapsed = time.perf_counter() - t0
            left = await conn.fetchval("SELECT count(*) FROM pgqueuer")
        finally:
            await conn.close()
            await worker_conn.close()
        if left != 0:
            raise AssertionError(f"pgqueuer left {left} jobs")
        return n / elapsed


# ------------------------------------------------------------------ procrastinate


async def procrastinate_burn_down(admin: str, n: int, *, concurrency: int) -> float:
    import procrastinate

    async with fresh_database(admin) as url:
        app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=url))

        @app.task(name="noop")
        async def noop() -> None:
            return None

        async with app.open_async():
            await app.schema_manager.apply_schema_async()
            for start in range(0, n, 1000):
                await noop.batch_defer_async(*({} for _ in range(min(1000, n - start))))
            async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
                await conn.execute("ANALYZE")
            t0 = time.perf_counter()
            await asyncio.wait_for(
                app.run_worker_async(
                    concurrency=concurrency, wait=False, install_signal_handlers=False
                ),
                n / 10 + 60,
            )
            elapsed = time.perf_counter() - t0
        async with await psycopg.AsyncConnection.connect(url) as conn:
            cur = await conn.execute(
                "SELECT count(*) FROM procrastinate_jobs WHERE status <> 'succeeded'"
            )
            left = await cur.fetchone()
        if left is None or left[0] != 0:
            raise AssertionError(f"procrastinate left {left} jobs unfinished")
        return n / elapsed


# ------------------------------------------------------------------ bare loop


async def bare_loop_burn_down(admin: str, n: int, *, connections: int = 3) -> float:
    async with fresh_database(admin) as url:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            await conn.execute(
                "CREATE TABLE q (id bigserial PRIMARY KEY, status text NOT NULL DEFAULT 'pending',"
                " owner text)"
            )
            await conn.execute("CREATE INDEX q_pending ON q (id) WHERE status = 'pending'")
            await conn.execute(
                "INSERT INTO q (status) SELECT 'pending' FROM generate_series(1, %s)", (n,)
            )
            await conn.execute("ANALYZE")

        async def worker(name: str) -> None:
            async with await psycopg.AsyncConnection.connect(url, autocommit=True) as c:
                while True:
                    cur = await c.execute(
                        "UPDATE q SET status = 'running', owner = %s WHERE id = ("
                        " SELECT id FROM q WHERE status = 'pending' ORDER BY id LIMIT 1"
                        " FOR UPDATE SKIP LOCKED) RETURNING id",
                        (name,),
                    )
                    row = await cur.fetchone()
                    if row is None:
                        return
                    await c.execute(
                        "UPDATE q SET status = 'done' WHERE id = %s AND owner = %s", (row[0], name)
                    )

        t0 = time.perf_counter()
        await asyncio.gather(*(worker(f"w{i}") for i in range(connections)))
        return n / (time.perf_counter() - t0)


# ------------------------------------------------------------------ report


@dataclass
class Case:
    name: str
    run: Callable[[], Awaitable[float]]
    part: str
    rates: list[float] = field(default_factory=list)
    statements: list[float] = field(default_factory=list)  # per job, where known

    @property
    def rate(self) -> float | None:
        return statistics.median(self.rates) if self.rates else None


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pickups", type=int, default=200)
    parser.add_argument(
        "--only", choices=["executor", "pickup", "others"], help="run one part only"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("procrastinate").setLevel(logging.ERROR)  # "app in __main__" advice
    admin = admin_url()
    n = args.jobs

    def part(name: str) -> bool:
        return args.only is None or args.only == name

    if part("others"):
        ensure_bench_dependencies()
    awaited: list[float] = []  # the completer's statements per job
    behind: list[float] = []
    cases = [
        Case(
            EXECUTOR,
            lambda: executor_burn_down(admin, n, statements=awaited),
            "executor",
            statements=awaited,
        ),
        Case(
            EXECUTOR_BEHIND,
            lambda: executor_burn_down(admin, n, behind=True, statements=behind),
            "executor",
            statements=behind,
        ),
        Case(PGQ_C3, lambda: pgqueuer_burn_down(admin, n, concurrency=3), "others"),
        Case(PGQ_DEFAULT, lambda: pgqueuer_burn_down(admin, n, concurrency=0), "others"),
        Case(
            "procrastinate, concurrency 3",
            lambda: procrastinate_burn_down(admin, n, concurrency=3),
            "others",
        ),
        Case(
            "bare SKIP LOCKED loop, 3 connections", lambda: bare_loop_burn_down(admin, n), "others"
        ),
    ]
    cases = [c for c in cases if part(c.part)]
    # The machine is shared: rounds interleave the cases, so a burst of load
    # from elsewhere spreads over all of them; each figure is its median.
    for round_ in range(args.rounds if cases else 0):
        print(f"round {round_ + 1}/{args.rounds}: {n} no-op jobs per queue ...", flush=True)
        for case in cases:
            case.rates.append(await case.run())
    pickup: list[float] = []
    pickup_commit: list[float] = []
    if part("pickup"):
        print(f"pick-up latency: {args.pickups} single jobs on an idle executor ...", flush=True)
        pickup, pickup_commit = await executor_pickup(admin, args.pickups)

    rate = {c.name: c.rate for c in cases}
    base, batched = rate.get(PGQ_C3), rate.get(PGQ_DEFAULT)
    if cases:
        print()
        print(f"burn-down of {n} no-op jobs (fresh database each; median of {args.rounds} rounds)")
        print(f"{'queue':<44} {'jobs/s':>9} {'× pgqueuer c3':>14} {'stmt/job':>9}   rounds")
        for c in cases:
            ratio = f"{c.rate / base:.2f}×" if base and c.rate else "-"
            per_job = f"{statistics.median(c.statements):.2f}" if c.statements else "-"
            each = " ".join(f"{r:,.0f}" for r in c.rates)
            print(f"{c.name:<44} {c.rate or 0:>9,.0f} {ratio:>14} {per_job:>9}   {each}")
    if pickup:
        print()
        print(f"pick-up latency to the handler's start ({len(pickup)} jobs, idle executor)")
        for name, values in (("from the enqueue sent", pickup), ("from its commit", pickup_commit)):
            print(
                f"  {name:<22} p50 {statistics.median(values) * 1000:5.1f} ms"
                f"   p99 {pct(values, 99) * 1000:5.1f} ms   max {max(values) * 1000:5.1f} ms"
            )
        print("  (aim: p99 < 10 ms)")
    for name in (EXECUTOR, EXECUTOR_BEHIND):
        ex = rate.get(name)
        if ex and base and batched:
            print(
                f"{name}: {ex / base:.2f}× pgqueuer at concurrency 3 (aim ≥ 2),"
                f" {ex / batched:.2f}× its batched default"
            )
    load = os.getloadavg()
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    asyncio.run(main())
