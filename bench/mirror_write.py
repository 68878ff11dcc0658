"""Where a sync batch's write goes, and what the cheaper ways to write it save.

    .venv/bin/python bench/mirror_write.py [--messages 10000] [--batch 200] [--rounds 3]
    .venv/bin/python bench/mirror_write.py --costs      # each index, trigger and the fsync

A sync batch (executor/handlers/sync.py, executor/sync_parallel.py) is written
in one fenced transaction: BEGIN, `lock_fenced`, `upsert_emails` of its ~200
rows, the cursor, the progress event, COMMIT. This writes the same batches
(real rows: `app.demo.mailbox.iter_mailbox` messages cut to the sync's fetch
prefix, parsed and scored by `executor.parsing.parse_batch`) into fresh
databases migrated as the product does, with a running job's lease, and prints
per batch: wall ms (median and p90 over every batch of every round), µs per
row, and the Postgres backend's CPU per row (from /proc, the bench and
Postgres share the machine).

Default run: the ways of writing a batch. The one-connection ones write side
by side, batch by batch in turn (each into its own database), so the shared
machine's load falls on all of them alike:

* `before`     — the write as it was: one statement per round trip, the rows
                 through `jsonb_populate_recordset` (kept here as the reference).
* `statements (before)` — the `before` transaction timed round trip by
                 round trip.
* `pipeline only (jsonb)`, `json only (no pipeline)` — each change alone.
* `product`    — the serial pass's write as the sync runs it now: one
                 pipelined fenced transaction, the rows through
                 `json_populate_recordset`.
* `split xN before` / `now` — a split first sync's writes from N connections
                 at once (executor/sync_parallel.py `_write`): before, the
                 whole transaction under the lock; now, the rows upserted
                 side by side, then the job's row, range, cursor, event and
                 COMMIT under the lock (`late_fenced_transaction`).

`--costs`: the product's write with one thing taken away at a time, each in a
scratch database (an index dropped, the change-log triggers disabled,
`synchronous_commit=off` for COMMIT's fsync), side by side as above, so each
one's share shows as the difference to `all` in the same run.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(HERE.parent))

import argparse  # noqa: E402
import asyncio  # noqa: E402
import contextlib  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from collections.abc import AsyncIterator, Awaitable, Callable  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from datetime import UTC, datetime  # noqa: E402
from typing import Any  # noqa: E402

import psycopg  # noqa: E402
from psycopg.types.json import Jsonb  # noqa: E402

from app.db.pool import open_pool  # noqa: E402
from app.db.queries import query  # noqa: E402
from app.demo.mailbox import iter_mailbox  # noqa: E402
from app.jobs.models import Lease, LeaseLost  # noqa: E402
from app.jobs.store import JobStore  # noqa: E402
from app.mail.identity import Identity  # noqa: E402
from executor import mirror_writes as mirror  # noqa: E402
from executor import sync_ranges  # noqa: E402
from executor.handlers.sync import BODY_PREFIX_BYTES  # noqa: E402
from executor.mirror_writes import EncodedRows  # noqa: E402
from executor.parsing import RawMessage, parse_batch  # noqa: E402
from tests.support.databases import DatabaseFactory, admin_url  # noqa: E402

FOLDER = "INBOX"
VALIDITY = 1
TICKS = os.sysconf("SC_CLK_TCK")

# The upsert as it was before issue 14 (app/db/sql/queries.sql at 78c76d8): the
# product's statement reading `jsonb`, the reference it is compared with. Derived,
# not copied, so the two never differ in anything but that.
BEFORE_UPSERT = query("upsert_emails").replace(
    "FROM json_populate_recordset(", "FROM jsonb_populate_recordset("
)
assert query("upsert_emails") != BEFORE_UPSERT, "upsert_emails no longer reads json"


def make_batches(messages: int, batch: int) -> list[EncodedRows]:
    """Real rows: each message as the sync fetches it (header + body prefix),
    parsed, checked for mentions and scored by the parse processes' code."""
    me = Identity("alex.roy@example.com", "Alex Roy", ("aroy@example.com",))
    now = datetime(2026, 12, 1, tzinfo=UTC)
    raws: list[RawMessage] = []
    for uid, m in enumerate(iter_mailbox(messages, now=now), start=1):
        head, sep, body = m.raw.partition(b"\r\n\r\n")
        raws.append(
            RawMessage(
                uid=uid,
                flags=m.flags,
                internal_date=m.internal_date,
                size=len(m.raw),
                modseq=None,
                body=head + sep + body[:BODY_PREFIX_BYTES],
            )
        )
    return [
        parse_batch(raws[i : i + batch], me, FOLDER, VALIDITY).rows
        for i in range(0, len(raws), batch)
    ]


def _cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


@dataclass
class Figures:
    batch_ms: list[float] = field(default_factory=list)
    rows: int = 0
    cpu_s: list[float] = field(default_factory=list)  # Postgres backends' CPU, per round
    total_s: list[float] = field(default_factory=list)  # every batch, per round
    steps: dict[str, list[float]] = field(default_factory=dict)

    def line(self, name: str, base: Figures | None) -> str:
        med = statistics.median(self.batch_ms)
        p90 = statistics.quantiles(self.batch_ms, n=10)[-1]
        per_row = sum(self.batch_ms) * 1000 / self.rows
        cpu = min(self.cpu_s) * 1e6 / (self.rows / len(self.cpu_s))
        rel = f" ({med / statistics.median(base.batch_ms):.2f}x)" if base is not None else ""
        return (
            f"{name:<24} batch median {med:6.1f} ms{rel}, p90 {p90:6.1f} ms, "
            f"{per_row:4.0f} us/row wall, postgres CPU {cpu:3.0f} us/row, "
            f"all batches {statistics.median(self.total_s):5.2f} s"
        )


@dataclass
class Target:
    """A fresh database with a claimed sync job, for one variant's round."""

    store: JobStore
    lease: Lease
    pids: list[int]

    def cpu(self) -> float:
        return sum(_cpu(p) for p in self.pids)


class Bench:
    """One fresh database per (variant, round). One-connection variants are
    run side by side, batch by batch in turn, so the shared machine's load
    drifts over all of them alike; the others one after the other."""

    def __init__(self, factory: DatabaseFactory, batches: list[EncodedRows]) -> None:
        self.factory = factory
        self.batches = batches

    @contextlib.asynccontextmanager
    async def target(self, variant: Variant) -> AsyncIterator[Target]:
        with self.factory.database() as url:
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(query("reset_folder"), {"folder": FOLDER, "uidvalidity": VALIDITY})
                if variant.prepare is not None:
                    variant.prepare(conn)
            # Every connection open from the start, so their backends' CPU is the writes'.
            size = variant.connections + (variant.connections > 1)
            pool = await open_pool(url, min_size=size, max_size=size, quick_check=True)
            try:
                store = JobStore(pool)
                await store.enqueue("sync", {})
                (claimed,) = await store.claim(["bench"], lease_seconds=3600)
                async with pool.connection() as conn:
                    await conn.execute("CHECKPOINT")
                    cur = await conn.execute(
                        "SELECT array_agg(pid) AS p FROM pg_stat_activity "
                        "WHERE datname = current_database()"
                    )
                    pids = (await cur.fetchone())["p"]
                if variant.session:
                    for _ in range(size):  # every pooled connection gets the setting
                        async with pool.connection() as conn:
                            await conn.execute(variant.session)
                yield Target(store, Lease.of(claimed), pids)
                async with pool.connection() as conn:
                    cur = await conn.execute("SELECT count(*) AS n FROM emails")
                    assert (await cur.fetchone())["n"] == sum(len(b.uids) for b in self.batches)
            finally:
                await pool.close()

    async def round(self, variants: dict[str, Variant], figures: dict[str, Figures]) -> None:
        paired = {k: v for k, v in variants.items() if v.connections == 1}
        async with contextlib.AsyncExitStack() as stack:
            targets = {
                k: await stack.enter_async_context(self.target(v)) for k, v in paired.items()
            }
            writes = {k: v.make() for k, v in paired.items()}
            cpu0 = {k: t.cpu() for k, t in targets.items()}
            names = list(paired)
            for n, rows in enumerate(self.batches):
                for name in names[n % len(names) :] + names[: n % len(names)]:
                    t, f = targets[name], figures[name]
                    t0 = time.perf_counter()
                    await writes[name](t.store, t.lease, n + 1, rows, f)
                    f.batch_ms.append((time.perf_counter() - t0) * 1000)
                    f.rows += len(rows.uids)
            for name, t in targets.items():
                figures[name].cpu_s.append(t.cpu() - cpu0[name])
                figures[name].total_s.append(
                    sum(figures[name].batch_ms[-len(self.batches) :]) / 1000
                )
        for name, variant in variants.items():
            if variant.connections > 1:
                await self.run_alone(variant, figures[name])

    async def run_alone(self, variant: Variant, figures: Figures) -> None:
        async with self.target(variant) as t:
            cpu0 = t.cpu()
            write = variant.make()
            per = -(-len(self.batches) // variant.connections)

            async def writer(first: int) -> None:
                for n in range(first, min(first + per, len(self.batches))):
                    rows = self.batches[n]
                    t0 = time.perf_counter()
                    await write(t.store, t.lease, n + 1, rows, figures)
                    figures.batch_ms.append((time.perf_counter() - t0) * 1000)
                    figures.rows += len(rows.uids)

            t0 = time.perf_counter()
            await asyncio.gather(*(writer(k * per) for k in range(variant.connections)))
            figures.total_s.append(time.perf_counter() - t0)
            figures.cpu_s.append(t.cpu() - cpu0)


@dataclass
class Variant:
    make: Callable[[], Callable[[JobStore, Lease, int, EncodedRows, Figures], Awaitable[None]]]
    prepare: Callable[[psycopg.Connection[Any]], None] | None = None
    session: str | None = None
    connections: int = 1


def _event(n: int, rows: EncodedRows) -> dict[str, Any]:
    return {
        "phase": "fetch",
        "folder": FOLDER,
        "batch": n,
        "items_found": len(rows.uids),
        "uids": list(rows.uids),
        "has_more": True,
        "problems": [],
    }


def _progress_params(lease: Lease, n: int, rows: EncodedRows) -> dict[str, Any]:
    return {
        "job_id": lease.job_id,
        "attempt": lease.attempt,
        "owner": lease.owner,
        "message": f"{FOLDER}: {len(rows.uids)} message(s) mirrored",
        "processed": n * len(rows.uids),
        "total_estimate": None,
        "level": "info",
        "data": Jsonb(_event(n, rows)),
    }


async def _write_jsonb(
    store: JobStore, lease: Lease, n: int, rows: EncodedRows, *, pipeline: bool
) -> None:
    """The serial pass's statements as they were (jsonb rows, cursor, event)."""
    async with store.fenced_transaction(lease, pipeline=pipeline) as conn:
        await conn.execute(BEFORE_UPSERT, {"rows": Jsonb(rows.rows_json, dumps=lambda v: v)})
        await conn.execute(
            query("advance_cursor"),
            {"folder": FOLDER, "uidvalidity": VALIDITY, "last_seen_uid": rows.max_uid},
        )
        await store.progress(
            lease, f"{FOLDER}: batch", processed=n * 200, data=_event(n, rows), conn=conn
        )


async def write_before(
    store: JobStore, lease: Lease, n: int, rows: EncodedRows, figures: Figures
) -> None:
    """The serial pass's write as it was: six round trips, jsonb rows."""
    await _write_jsonb(store, lease, n, rows, pipeline=False)


async def write_statements(
    store: JobStore, lease: Lease, n: int, rows: EncodedRows, figures: Figures
) -> None:
    """`write_before`, one timer per round trip."""
    marks: list[tuple[str, float]] = [("start", time.perf_counter())]

    def mark(name: str) -> None:
        marks.append((name, time.perf_counter()))

    async with store.pool.connection() as conn:
        mark("checkout")
        async with conn.transaction():
            mark("BEGIN")
            cur = await conn.execute(
                query("lock_fenced"),
                {"job_id": lease.job_id, "attempt": lease.attempt, "owner": lease.owner},
            )
            if await cur.fetchone() is None:
                raise LeaseLost("bench")
            mark("lock_fenced")
            await conn.execute(BEFORE_UPSERT, {"rows": Jsonb(rows.rows_json, dumps=lambda v: v)})
            mark("upsert_emails")
            await conn.execute(
                query("advance_cursor"),
                {"folder": FOLDER, "uidvalidity": VALIDITY, "last_seen_uid": rows.max_uid},
            )
            mark("advance_cursor")
            await conn.execute(query("progress"), _progress_params(lease, n, rows))
            mark("progress")
        mark("COMMIT")
    for (_, t0), (name, t1) in zip(marks, marks[1:], strict=False):
        figures.steps.setdefault(name, []).append((t1 - t0) * 1000)


async def _write_json(
    store: JobStore, lease: Lease, n: int, rows: EncodedRows, *, pipeline: bool
) -> None:
    """The product's statements (json rows, event), pipelined or not."""
    async with store.fenced_transaction(lease, pipeline=pipeline) as conn:
        await mirror.upsert_encoded(conn, FOLDER, VALIDITY, rows)
        await store.progress(
            lease, f"{FOLDER}: batch", processed=n * 200, data=_event(n, rows), conn=conn
        )


async def write_product(
    store: JobStore, lease: Lease, n: int, rows: EncodedRows, figures: Figures
) -> None:
    """The serial pass's write as the sync runs it now (executor/handlers/sync.py)."""
    await _write_json(store, lease, n, rows, pipeline=True)


async def write_pipelined_jsonb(
    store: JobStore, lease: Lease, n: int, rows: EncodedRows, figures: Figures
) -> None:
    """`before` in pipeline mode: what the pipeline alone saves."""
    await _write_jsonb(store, lease, n, rows, pipeline=True)


async def write_json_unpipelined(
    store: JobStore, lease: Lease, n: int, rows: EncodedRows, figures: Figures
) -> None:
    """The product's statements one round trip each: what `json` alone saves."""
    await _write_json(store, lease, n, rows, pipeline=False)


class SplitWriter:
    """A split first sync's write (executor/sync_parallel.py `_write`): rows,
    range progress, cursor and event, with one range covering every batch.
    `concurrent` (now): the rows upserted beside the other writers, then the
    rest and COMMIT under the lock, one late-fenced pipelined transaction;
    else (before) all of it under the lock, rows as jsonb, one statement per
    round trip."""

    def __init__(self, concurrent: bool) -> None:
        self.concurrent = concurrent
        self.lock = asyncio.Lock()

    async def __call__(
        self, store: JobStore, lease: Lease, n: int, rows: EncodedRows, figures: Figures
    ) -> None:
        if not self.concurrent:
            async with self.lock, store.fenced_transaction(lease) as conn:
                await conn.execute(
                    BEFORE_UPSERT, {"rows": Jsonb(rows.rows_json, dumps=lambda v: v)}
                )
                await conn.execute(
                    query("advance_cursor"),
                    {"folder": FOLDER, "uidvalidity": VALIDITY, "last_seen_uid": rows.max_uid},
                )
                await self._rest(store, lease, conn, n, rows)
            return
        async with store.late_fenced_transaction(lease) as tx:
            await mirror.upsert_rows(tx.conn, rows)
            await tx.sent()
            await self.lock.acquire()
            try:
                await tx.fence()
                moved = await sync_ranges.advance_queued(
                    tx.conn, FOLDER, VALIDITY, 1, rows.max_uid or 0
                )
                await store.progress(
                    lease, f"{FOLDER}: batch", processed=n * 200, data=_event(n, rows), conn=tx.conn
                )
                await moved()
            except BaseException:
                self.lock.release()
                raise
        self.lock.release()

    @staticmethod
    async def _rest(store: JobStore, lease: Lease, conn: Any, n: int, rows: EncodedRows) -> None:
        await (await sync_ranges.advance_queued(conn, FOLDER, VALIDITY, 1, rows.max_uid or 0))()
        await store.progress(
            lease, f"{FOLDER}: batch", processed=n * 200, data=_event(n, rows), conn=conn
        )


def _drop(statement: str) -> Callable[[psycopg.Connection[Any]], None]:
    def prepare(conn: psycopg.Connection[Any]) -> None:
        conn.execute(statement)

    return prepare


def _split_ranges(conn: psycopg.Connection[Any]) -> None:
    conn.execute(
        "INSERT INTO mail_folder_ranges (folder, uidvalidity, lo, hi, done_uid) "
        "VALUES (%s, %s, 1, 1000000000, 0)",
        (FOLDER, VALIDITY),
    )


def secondary_indexes(factory: DatabaseFactory) -> list[str]:
    with factory.database() as url, psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT indexname FROM pg_indexes WHERE tablename = 'emails' "
            "AND indexname NOT IN ('emails_pkey', 'emails_identity') ORDER BY indexname"
        ).fetchall()
    return [r[0] for r in rows]


def _constant(write: Any) -> Callable[[], Any]:
    return lambda: write


async def main_async(args: argparse.Namespace) -> None:
    t0 = time.perf_counter()
    batches = make_batches(args.messages, args.batch)
    size = sum(len(b.rows_json) for b in batches) / len(batches)
    print(
        f"{len(batches)} batches of {args.batch} rows parsed in {time.perf_counter() - t0:.1f}s "
        f"({size / 1024:.0f} KiB of JSON per batch)"
    )
    factory = DatabaseFactory(admin_url())
    bench = Bench(factory, batches)
    try:
        variants: dict[str, Variant]
        if args.costs:
            product = _constant(write_product)
            variants = {"all": Variant(product)}
            for index in secondary_indexes(factory):
                variants[f"-{index}"] = Variant(product, _drop(f"DROP INDEX {index}"))
            variants["-change-log triggers"] = Variant(
                product, _drop("ALTER TABLE emails DISABLE TRIGGER USER")
            )
            variants["-all secondary indexes"] = Variant(
                product,
                _drop(
                    "DO $$ DECLARE i text; BEGIN FOR i IN SELECT indexname FROM pg_indexes "
                    "WHERE tablename = 'emails' AND indexname NOT IN "
                    "('emails_pkey', 'emails_identity') LOOP EXECUTE 'DROP INDEX ' || i; "
                    "END LOOP; END $$"
                ),
            )
            variants["-fsync at COMMIT"] = Variant(product, session="SET synchronous_commit = off")
        else:
            c = args.connections
            variants = {
                "before": Variant(_constant(write_before)),
                "statements (before)": Variant(_constant(write_statements)),
                "pipeline only (jsonb)": Variant(_constant(write_pipelined_jsonb)),
                "json only (no pipeline)": Variant(_constant(write_json_unpipelined)),
                "product": Variant(_constant(write_product)),
                f"split x{c} before": Variant(lambda: SplitWriter(False), _split_ranges, None, c),
                f"split x{c} now": Variant(lambda: SplitWriter(True), _split_ranges, None, c),
            }
        figures = {name: Figures() for name in variants}
        for _ in range(args.rounds):
            await bench.round(variants, figures)
        base = figures["all" if args.costs else "before"]
        for name, f in figures.items():
            print(f.line(name, None if f is base else base))
        steps = figures.get("statements (before)")
        if steps is not None and steps.steps:
            parts = ", ".join(
                f"{name} {statistics.median(ms):.2f}" for name, ms in steps.steps.items()
            )
            print(f"{'statements (median ms)':<24} {parts}")
    finally:
        factory.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--connections", type=int, default=3, help="writers of the split first sync variants"
    )
    parser.add_argument(
        "--costs", action="store_true", help="each index, trigger and COMMIT's fsync"
    )
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
