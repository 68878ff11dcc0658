"""Async connection pools for the web process, the executor and the CLI."""

from __future__ import annotations

import logging
import select
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

log = logging.getLogger(__name__)

CHECKOUT_ATTEMPTS = 3


class HealingPool(AsyncConnectionPool):
    """A pool that never hands out a dead connection, and heals all at once.

    After a Postgres restart or failover, or a backend killed with
    `pg_terminate_backend`, every idle connection in the pool is dead, and an
    unchecked pool would hand each one out to fail its caller. Each connection
    is therefore checked (an empty query, one round trip) as it leaves the pool.

    psycopg-pool's own `check=` option does that too, but it backs off 1 s,
    2 s, 4 s... between dead connections, so the first request after a
    failover waited seconds per dead connection (measured: 7 s for five).
    Here the first dead connection found makes the pool check all its idle
    connections at once (`check()` replaces the broken ones), and the caller
    takes the next connection without a pause.
    """

    # With `quick_check`, a connection is handed out without the round trip
    # when its socket shows nothing: a backend that was terminated (restart,
    # failover, pg_terminate_backend) has sent its FATAL and closed, and its
    # socket reads as ready. Anything readable gets the full check. What it
    # cannot see is a backend killed a moment ago whose goodbye has not
    # arrived yet: its caller's query fails instead (the executor's callers
    # are built for that: a failed write leaves the lease to expire and the
    # reaper to retry). The web keeps the full check.
    quick_check = False

    async def getconn(self, timeout: float | None = None) -> psycopg.AsyncConnection:
        error: Exception | None = None
        for attempt in range(CHECKOUT_ATTEMPTS):
            conn = await super().getconn(timeout)
            if self.quick_check and _quiet(conn):
                return conn
            try:
                await self.check_connection(conn)
            except psycopg.Error as exc:
                error = exc
                await self.putconn(conn)  # broken: discarded and replaced by the pool
                if attempt == 0:
                    log.warning("database connection found dead (%s); checking the pool", exc)
                    await self.check()
                continue
            return conn
        assert error is not None
        raise error  # an OperationalError: the web answers 503


def _quiet(conn: psycopg.AsyncConnection) -> bool:
    """An idle connection whose socket has nothing to read (no goodbye, no EOF)."""
    if conn.closed or conn.broken:
        return False
    try:
        poller = select.poll()
        poller.register(conn.pgconn.socket, select.POLLIN)
        return not poller.poll(0)
    except (OSError, psycopg.Error, AttributeError):
        return False  # no poll() on this platform, or no socket: take the full check


async def open_pool(
    conninfo: str,
    *,
    min_size: int = 1,
    max_size: int = 10,
    timeout: float = 30.0,
    quick_check: bool = False,
    generic_plans: bool = False,
) -> AsyncConnectionPool:
    """Autocommit + dict rows: every store query manages its own transaction.

    The same settings suit LangGraph's AsyncPostgresSaver, so one pool serves both.
    `timeout` bounds how long a caller waits for a connection while the
    database is away (the web answers 503 then). `quick_check` skips the
    checkout round trip for connections that look alive (see `HealingPool`).

    `generic_plans` is for a pool that runs only statements whose plan does
    not depend on their parameters (the `claim` query, see JobStore): a
    prepared statement is planned once per connection, instead of on every
    call. Postgres would pick that generic plan by itself only while its
    estimates favour it (for `claim`, only while few jobs are pending).
    """
    kwargs: dict[str, Any] = {"autocommit": True, "row_factory": dict_row}
    if generic_plans:
        kwargs["options"] = "-c plan_cache_mode=force_generic_plan"
    pool = HealingPool(
        conninfo,
        min_size=min_size,
        max_size=max_size,
        kwargs=kwargs,
        timeout=timeout,
        open=False,
    )
    pool.quick_check = quick_check
    await pool.open(wait=True, timeout=30)
    return pool
