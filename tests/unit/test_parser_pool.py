"""The parse processes: started ahead of a big sync, and parsing as the
in-process path does (the rows a sync writes must not depend on where they
were parsed)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

from app.mail.identity import Identity
from executor.parsing import MIN_PARALLEL_BATCH, ParserPool, RawMessage, parse_batch

ME = Identity("alex.roy@example.com", "Alex Roy", ())


def raws(count: int) -> list[RawMessage]:
    out = []
    for uid in range(1, count + 1):
        body = (
            f"From: Shop <news@shop.example>\r\nTo: alex.roy@example.com\r\n"
            f"Subject: Offer {uid}\r\nMessage-ID: <m{uid}@shop.example>\r\n"
            f"List-Unsubscribe: <mailto:u@shop.example>\r\n\r\n"
            f"{'Hi Alex Roy, ' if uid % 2 else ''}sale number {uid}\r\n"
        ).encode()
        out.append(
            RawMessage(
                uid=uid,
                flags=(),
                internal_date=datetime(2026, 11, 1, tzinfo=UTC),
                size=len(body),
                modseq=uid,
                body=body,
            )
        )
    return out


async def test_a_warmed_pool_parses_a_batch_as_the_executor_itself_would() -> None:
    pool = ParserPool(2)
    try:
        pool.warm()
        pool.warm()  # a second sync starting meanwhile: still one pool
        batch = raws(MIN_PARALLEL_BATCH * 2)
        started = time.monotonic()
        remote = await pool.parse_batch(batch, ME, "INBOX", 7)
        assert time.monotonic() - started < 30
        local = parse_batch(batch, ME, "INBOX", 7)
        assert remote.rows.uids == local.rows.uids == tuple(r.uid for r in batch)
        assert remote.rows.rows_json == local.rows.rows_json
        assert remote.problems == local.problems
        assert pool.processes == 2  # it did not fall back to parsing in-process
    finally:
        pool.close()


async def test_warm_does_nothing_without_processes() -> None:
    pool = ParserPool(0)
    pool.warm()
    await asyncio.sleep(0)
    assert pool._pool is None
    parsed = await pool.parse_batch(raws(3), ME, "INBOX", 7)
    assert parsed.rows.uids == (1, 2, 3)


async def test_a_warm_up_late_for_the_shutdown_starts_nothing() -> None:
    pool = ParserPool(2)
    pool.close()
    pool.warm()
    await asyncio.sleep(0.2)
    assert pool._pool is None
    parsed = await pool.parse_batch(raws(MIN_PARALLEL_BATCH), ME, "INBOX", 7)
    assert len(parsed.rows.uids) == MIN_PARALLEL_BATCH  # parsed in-process instead
