"""The per-account IMAP connection budget (SPEC §9): at most
`IMAP_MAX_CONNECTIONS` connections per account across every executor.

The budget lives in the database, because executors on other hosts count too:
`imap_connection_slots` has one row per slot in use, numbered 1..max. An
`ImapSession` takes a slot before it opens a connection and gives it back when
it closes it; a process renews the leases of all its slots in one query per
interval (`BudgetKeeper`), so the slots of a killed executor come back after
one lease. A slot is held under a random token: renewals and releases match
it, so a slot that expired and went to someone else is never freed by its old
holder.

Why nobody deadlocks:

* The watcher has a slot of its own: the top one (`max`) is only for the IDLE
  watcher, workers share 1..max-1. A watcher never waits for a worker, and
  workers never wait for the watcher. With a budget of one there is no room
  for both: the watcher stays off and the sweeps keep the mirror fresh.
* Workers open connections lazily (at a job's first IMAP command, before any
  folder fence is taken) and give them back when idle: at once when a worker
  in the same process is waiting, within one renewal interval when one in
  another process is (`imap_connection_waits`), and after `IDLE_RELEASE_SECONDS`
  anyway. A waiting worker holds no fence and no connection, and every slot
  holder is either running a job that ends or idle and about to give back.
* A wait is bounded (`ACQUIRE_TIMEOUT`): past it the job is retried later, like
  any job whose server is unreachable.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import psycopg

from app.config import ImapAccount
from app.db.queries import query
from executor.services import Service

if TYPE_CHECKING:
    from psycopg_pool import AsyncConnectionPool

    from executor.imap_session import ImapSession

log = logging.getLogger("executor.budget")

WATCHER = "watcher"
WORKER = "worker"

DEFAULT_MAX_CONNECTIONS = 5
# A worker waits this long for a slot before its job is retried later.
ACQUIRE_TIMEOUT = 60.0
# A worker connection unused this long is closed even if nobody waits.
IDLE_RELEASE_SECONDS = 60.0
# A local waiter takes an idle connection only if it was unused this long
# (a job that just ended on it may be followed by the next one at once).
LOCAL_GIVE_BACK_AFTER = 0.2


class BudgetExhausted(Exception):
    """No connection slot came free within the wait."""


def account_key(account: ImapAccount) -> str:
    """How the database names an account: user, host and port (never the password)."""
    return f"{account.username}@{account.host}:{account.port}"


@dataclass(eq=False)
class Slot:
    """One held slot of the budget."""

    number: int
    token: uuid.UUID
    holder: str
    purpose: str
    lost: bool = False  # its lease expired and someone else may hold it now


class ConnectionBudget:
    """One account's connection budget as seen from one executor process."""

    def __init__(
        self,
        account: str,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        *,
        lease_seconds: float = 30.0,
        process: str = "",
        acquire_timeout: float = ACQUIRE_TIMEOUT,
    ) -> None:
        if max_connections < 1:
            raise ValueError("IMAP_MAX_CONNECTIONS must be at least 1")
        self.account = account
        self.max_connections = max_connections
        self.lease_seconds = lease_seconds
        self.process = process or f"p{uuid.uuid4().hex[:8]}"
        self.acquire_timeout = acquire_timeout
        self.pool: AsyncConnectionPool | None = None
        self.held: dict[int, Slot] = {}
        # Sessions this process may close when someone needs their slot
        # (idle workers' sessions); set by the executor.
        self.idle_sessions: Callable[[], Iterable[ImapSession]] = list
        self.waits = 0  # acquisitions that had to wait (tests, health)
        # Who waits for a slot right now: here (workers in `acquire`) and in other
        # processes (as of the last renewal). Connections borrowed for a parallel
        # first sync are given back when either is non-zero (`contended`).
        self.waiting_here = 0
        self.waiting_elsewhere = 0

    def bind(self, pool: AsyncConnectionPool) -> None:
        self.pool = pool

    @property
    def watcher_enabled(self) -> bool:
        """A watcher needs a slot of its own besides at least one for workers."""
        return self.max_connections >= 2

    def slot_range(self, purpose: str) -> tuple[int, int]:
        top = self.max_connections
        if purpose == WATCHER:
            if not self.watcher_enabled:
                raise BudgetExhausted("a budget of one connection leaves none for a watcher")
            return top, top
        return 1, max(1, top - 1)

    async def _execute(self, name: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        if self.pool is None:
            raise RuntimeError("the connection budget is not bound to a database pool")
        async with self.pool.connection() as conn:
            cur = await conn.execute(query(name), params)
            return await cur.fetchall() if cur.description else []

    async def try_acquire(self, holder: str, purpose: str = WORKER) -> Slot | None:
        low, high = self.slot_range(purpose)
        rows = await self._execute(
            "budget_acquire",
            {
                "account": self.account,
                "low": low,
                "high": high,
                "holder": holder,
                "process": self.process,
                "purpose": purpose,
                "lease_seconds": self.lease_seconds,
            },
        )
        if not rows:
            return None
        slot = Slot(rows[0]["slot"], rows[0]["token"], holder, purpose)
        self.held[slot.number] = slot
        return slot

    async def acquire(
        self, holder: str, purpose: str = WORKER, *, timeout: float | None = None
    ) -> Slot:
        """A slot, waiting for one if need be (see the module docstring)."""
        deadline = time.monotonic() + (self.acquire_timeout if timeout is None else timeout)
        delay = 0.05
        waiting_since: float | None = None
        wait_refreshed = 0.0
        try:
            while True:
                slot = await self.try_acquire(holder, purpose)
                if slot is not None:
                    if waiting_since is not None:
                        log.info(
                            "%s got IMAP slot %d after %.1fs",
                            holder,
                            slot.number,
                            time.monotonic() - waiting_since,
                        )
                    return slot
                if purpose == WORKER and await self._give_back_idle():
                    continue
                now = time.monotonic()
                if waiting_since is None:
                    waiting_since = now
                    self.waits += 1
                    self.waiting_here += 1
                    log.info(
                        "%s waits for an IMAP connection slot (IMAP_MAX_CONNECTIONS=%d)",
                        holder,
                        self.max_connections,
                    )
                if now - wait_refreshed >= self.lease_seconds / 3:
                    # Tell other processes someone waits, so they give back idle ones.
                    await self._execute(
                        "budget_wait",
                        {
                            "account": self.account,
                            "waiter": holder,
                            "process": self.process,
                            "ttl": self.lease_seconds,
                        },
                    )
                    wait_refreshed = now
                if now >= deadline:
                    raise BudgetExhausted(
                        f"no IMAP connection free for {self.account} within "
                        f"{now - waiting_since:.0f}s (IMAP_MAX_CONNECTIONS={self.max_connections})"
                    )
                await asyncio.sleep(min(delay, max(0.0, deadline - now)))
                delay = min(delay * 1.5, 1.0)
        finally:
            if waiting_since is not None:
                self.waiting_here -= 1
            if wait_refreshed:
                with contextlib.suppress(Exception):
                    await self._execute(
                        "budget_unwait", {"account": self.account, "waiter": holder}
                    )

    @property
    def contended(self) -> bool:
        """Someone waits for a slot of this account (here, or elsewhere at the last renewal)."""
        return self.waiting_here > 0 or self.waiting_elsewhere > 0

    async def _give_back_idle(self) -> bool:
        """Close this process's longest-idle worker connection, if any."""
        now = time.monotonic()
        idle = [
            s
            for s in self.idle_sessions()
            if s.slot is not None
            and s.purpose == WORKER
            and now - s.last_used >= LOCAL_GIVE_BACK_AFTER
        ]
        if not idle:
            return False
        session = min(idle, key=lambda s: s.last_used)
        log.info("closing idle IMAP connection %s: a worker here needs its slot", session.name)
        await session.discard()
        return True

    async def release(self, slot: Slot) -> None:
        """Give a slot back. If the database cannot be told, its lease runs out."""
        if self.held.get(slot.number) is slot:
            del self.held[slot.number]
        if slot.lost:
            return
        try:
            await self._execute(
                "budget_release",
                {"account": self.account, "slot": slot.number, "token": slot.token},
            )
        except (psycopg.Error, OSError) as exc:
            log.warning(
                "could not release IMAP slot %d (%s); its lease will expire", slot.number, exc
            )

    async def renew(self) -> tuple[list[Slot], int]:
        """Renew every slot held here; returns (slots lost, processes waiting elsewhere)."""
        slots = list(self.held.values())
        if not slots:
            self.waiting_elsewhere = 0  # unknown, and nothing here to give back
            return [], 0  # nothing to renew, and nothing to give back
        rows = await self._execute(
            "budget_renew",
            {
                "account": self.account,
                "slots": [s.number for s in slots],
                "tokens": [s.token for s in slots],
                "lease_seconds": self.lease_seconds,
                "process": self.process,
            },
        )
        held = set(rows[0]["held"]) if rows else set()
        lost = [s for s in slots if s.number not in held and self.held.get(s.number) is s]
        for slot in lost:
            slot.lost = True
            self.held.pop(slot.number, None)
            log.warning("IMAP slot %d of %s was lost (lease expired)", slot.number, slot.holder)
        waiting = int(rows[0]["waiting_elsewhere"]) if rows else 0
        self.waiting_elsewhere = waiting
        return lost, waiting

    async def in_use(self) -> list[dict[str, Any]]:
        """The slots of this account held right now, fleet-wide."""
        return await self._execute("budget_in_use", {"account": self.account})


class BudgetKeeper(Service):
    """Renews this process's slots and closes worker connections nobody uses:
    at once when another process waits for a slot, else after
    `IDLE_RELEASE_SECONDS`; and any idle one whose slot was lost."""

    name = "connection-budget"

    def __init__(
        self, budget: ConnectionBudget, *, idle_release: float = IDLE_RELEASE_SECONDS
    ) -> None:
        super().__init__()
        self.budget = budget
        self.idle_release = idle_release
        self.interval = max(0.1, budget.lease_seconds / 4)
        self.max_backoff = self.interval
        self.given_back = 0  # connections closed for someone else (tests)

    async def tick(self) -> None:
        await self._sleep(self.interval)
        lost, waiting = await self.budget.renew()
        now = time.monotonic()
        for session in list(self.budget.idle_sessions()):
            if session.slot is None:
                continue
            unused = now - session.last_used
            if session.slot.lost or session.slot in lost:
                await session.discard()
            elif waiting and unused >= LOCAL_GIVE_BACK_AFTER:
                log.info("closing idle IMAP connection %s: another executor waits", session.name)
                self.given_back += 1
                await session.discard()
            elif unused >= self.idle_release:
                log.info("closing IMAP connection %s: unused for %.0fs", session.name, unused)
                await session.discard()
