"""Every database operation on jobs, for the web, the CLI and the executor alike.

The SQL is in `app/db/sql/queries.sql`; this module only binds parameters, opens the
transactions that must span several statements, and turns rows into `Job`s.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from psycopg import AsyncConnection
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from app.db.queries import query
from app.jobs.models import Job, JobEvent, JobStatus, JobType, Lease, LeaseLost


@dataclass(frozen=True)
class ProgressResult:
    seq: int
    cancel_requested: bool


@dataclass(frozen=True)
class Approval:
    approval_id: uuid.UUID
    thread_id: str
    interrupt_id: str
    action: str
    params: dict[str, Any]
    messages: list[dict[str, Any]]


class JobStore:
    def __init__(self, pool: AsyncConnectionPool) -> None:
        self.pool = pool

    async def _one(self, name: str, params: dict[str, Any]) -> dict[str, Any] | None:
        async with self.pool.connection() as conn:
            cur = await conn.execute(query(name), params)
            return await cur.fetchone()

    async def _all(self, name: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        async with self.pool.connection() as conn:
            cur = await conn.execute(query(name), params)
            return await cur.fetchall()

    # -- producers of jobs (web, CLI, graph) ---------------------------------

    async def enqueue(
        self,
        job_type: JobType | str,
        payload: dict[str, Any] | None = None,
        *,
        idempotency_key: str | None = None,
        approval_id: uuid.UUID | None = None,
        max_attempts: int = 3,
        total_estimate: int | None = None,
    ) -> Job:
        """Insert a job; with an idempotency key, concurrent duplicates get one job."""
        params = {
            "job_type": JobType(job_type).value,
            "payload": Jsonb(payload or {}),
            "idempotency_key": idempotency_key,
            "approval_id": approval_id,
            "max_attempts": max_attempts,
            "total_estimate": total_estimate,
        }
        row = await self._one("enqueue", params)
        if row is None:
            row = await self._one("get_by_idempotency_key", {"idempotency_key": idempotency_key})
        assert row is not None, "enqueue returned nothing and no job holds the key"
        return Job.from_row(row)

    async def get(self, job_id: uuid.UUID) -> Job | None:
        row = await self._one("get_job", {"job_id": job_id})
        return Job.from_row(row) if row else None

    async def list(self, status: JobStatus | None = None, limit: int = 100) -> list[Job]:
        rows = await self._all(
            "list_jobs", {"status": status.value if status else None, "limit": limit}
        )
        return [Job.from_row(r) for r in rows]

    async def request_cancel(self, job_id: uuid.UUID) -> Job | None:
        """Pending → cancelled now; running → flagged. None when already finished."""
        row = await self._one("request_cancel", {"job_id": job_id})
        return Job.from_row(row) if row else None

    async def events_after(
        self, job_id: uuid.UUID, after: int = 0, limit: int = 1000
    ) -> list[JobEvent]:
        rows = await self._all("events_after", {"job_id": job_id, "after": after, "limit": limit})
        return [JobEvent.from_row(r) for r in rows]

    async def add_event(
        self,
        job_id: uuid.UUID,
        message: str,
        *,
        level: str = "info",
        data: dict[str, Any] | None = None,
    ) -> int | None:
        row = await self._one(
            "append_event_unfenced",
            {"job_id": job_id, "message": message, "level": level, "data": Jsonb(data or {})},
        )
        return row["seq"] if row else None

    # -- approvals ------------------------------------------------------------

    async def record_approval(
        self,
        *,
        thread_id: str,
        interrupt_id: str,
        action: str,
        params: dict[str, Any],
        messages: Sequence[dict[str, Any]],
    ) -> Approval:
        """Record what the person approved; the same interrupt yields the same approval."""
        row = await self._one(
            "record_approval",
            {
                "thread_id": thread_id,
                "interrupt_id": interrupt_id,
                "action": action,
                "params": Jsonb(params),
                "messages": Jsonb(list(messages)),
            },
        )
        if row is None:
            row = await self._one("get_approval_by_interrupt", {"interrupt_id": interrupt_id})
        assert row is not None
        return Approval(**{k: row[k] for k in Approval.__dataclass_fields__})

    async def get_approval(self, approval_id: uuid.UUID) -> Approval | None:
        row = await self._one("get_approval", {"approval_id": approval_id})
        return Approval(**{k: row[k] for k in Approval.__dataclass_fields__}) if row else None

    # -- the executor's side --------------------------------------------------

    async def claim(
        self, owners: Sequence[str], *, lease_seconds: float, job_types: Iterable[str] | None = None
    ) -> list[Job]:
        """Claim at most one job per owner (one owner per free worker)."""
        if not owners:
            return []
        rows = await self._all(
            "claim",
            {
                "owners": list(owners),
                "lease_seconds": lease_seconds,
                "job_types": list(job_types) if job_types is not None else None,
            },
        )
        return [Job.from_row(r) for r in rows]

    async def renew_leases(
        self, leases: Sequence[Lease], *, lease_seconds: float
    ) -> dict[uuid.UUID, bool]:
        """Renew in one round trip; returns job_id → cancel_requested for the leases still held."""
        if not leases:
            return {}
        rows = await self._all(
            "renew_leases",
            {
                "job_ids": [lease.job_id for lease in leases],
                "attempts": [lease.attempt for lease in leases],
                "owners": [lease.owner for lease in leases],
                "lease_seconds": lease_seconds,
            },
        )
        return {r["job_id"]: r["cancel_requested"] for r in rows}

    async def progress(
        self,
        lease: Lease,
        message: str,
        *,
        processed: int | None = None,
        total_estimate: int | None = None,
        level: str = "info",
        data: dict[str, Any] | None = None,
        conn: AsyncConnection[Any] | None = None,
    ) -> ProgressResult:
        """Append an event and move the counters it reports, fenced by the lease."""
        params = {
            "job_id": lease.job_id,
            "attempt": lease.attempt,
            "owner": lease.owner,
            "message": message,
            "processed": processed,
            "total_estimate": total_estimate,
            "level": level,
            "data": Jsonb(data or {}),
        }
        if conn is not None:
            row = await (await conn.execute(query("progress"), params)).fetchone()
        else:
            row = await self._one("progress", params)
        if row is None:
            raise LeaseLost(
                f"job {lease.job_id} attempt {lease.attempt} is no longer held by {lease.owner}"
            )
        return ProgressResult(seq=row["seq"], cancel_requested=row["cancel_requested"])

    @asynccontextmanager
    async def fenced_transaction(self, lease: Lease) -> AsyncIterator[AsyncConnection[Any]]:
        """A transaction that holds the job row, so mirror writes and the progress
        event commit together, and only while the lease is still ours."""
        async with self.pool.connection() as conn, conn.transaction():
            cur = await conn.execute(
                query("lock_fenced"),
                {"job_id": lease.job_id, "attempt": lease.attempt, "owner": lease.owner},
            )
            if await cur.fetchone() is None:
                raise LeaseLost(
                    f"job {lease.job_id} attempt {lease.attempt} is no longer held by {lease.owner}"
                )
            yield conn

    async def finish(
        self,
        lease: Lease,
        status: JobStatus,
        message: str,
        *,
        error: str | None = None,
        processed: int | None = None,
        total_estimate: int | None = None,
        data: dict[str, Any] | None = None,
    ) -> Job:
        if not status.is_terminal:
            raise ValueError(f"{status} is not a terminal status")
        row = await self._one(
            "finish",
            {
                "job_id": lease.job_id,
                "attempt": lease.attempt,
                "owner": lease.owner,
                "status": status.value,
                "message": message,
                "error": error,
                "processed": processed,
                "total_estimate": total_estimate,
                "data": Jsonb(data or {}),
            },
        )
        if row is None:
            raise LeaseLost(
                f"job {lease.job_id} attempt {lease.attempt} is no longer held by {lease.owner}"
            )
        return Job.from_row(row)

    async def retry_later(self, lease: Lease, error: str, *, backoff_seconds: float) -> Job:
        row = await self._one(
            "retry_later",
            {
                "job_id": lease.job_id,
                "attempt": lease.attempt,
                "owner": lease.owner,
                "error": error,
                "backoff_seconds": backoff_seconds,
            },
        )
        if row is None:
            raise LeaseLost(
                f"job {lease.job_id} attempt {lease.attempt} is no longer held by {lease.owner}"
            )
        return Job.from_row(row)

    async def release(self, lease: Lease) -> Job | None:
        row = await self._one(
            "release", {"job_id": lease.job_id, "attempt": lease.attempt, "owner": lease.owner}
        )
        return Job.from_row(row) if row else None

    async def reap(self, limit: int = 100) -> list[Job]:
        """Return expired leases to pending (or failed); any process may run this."""
        rows = await self._all("reap", {"limit": limit})
        return [Job.from_row(r) for r in rows]
