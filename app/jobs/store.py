"""Every database operation on jobs, for the web, the CLI and the executor alike.

The SQL is in `app/db/sql/queries.sql`; this module only binds parameters, opens the
transactions that must span several statements, and turns rows into `Job`s.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from psycopg import AsyncConnection, AsyncCursor, AsyncPipeline
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from app.db.queries import query
from app.jobs.models import Job, JobEvent, JobStatus, JobType, Lease, LeaseLost


@dataclass(frozen=True)
class ProgressResult:
    seq: int
    cancel_requested: bool


class WriteKind(enum.StrEnum):
    PROGRESS = "progress"  # an event and the counters it reports (the `progress` query's)
    COMPLETE = "complete"  # the job's completion (`finish` to completed)


@dataclass(frozen=True)
class JobWrite:
    """A worker's write that the executor's completer batches with others',
    fenced by `lease` like the worker's own write would be."""

    kind: WriteKind
    lease: Lease
    message: str
    processed: int | None = None
    total_estimate: int | None = None
    level: str = "info"
    data: dict[str, Any] | None = None

    def as_json(self) -> dict[str, Any]:
        """One row of the `claim` query's `writes` document."""
        return {
            "kind": self.kind.value,
            "job_id": str(self.lease.job_id),
            "attempt": self.lease.attempt,
            "owner": self.lease.owner,
            "processed": self.processed,
            "total_estimate": self.total_estimate,
            "level": self.level,
            "message": self.message,
            "data": self.data or {},
        }


@dataclass(frozen=True)
class WrittenBatch:
    """What one `write_and_claim` did: each written job's row after its writes
    (a job whose lease was lost is not among them), and the jobs it claimed."""

    written: dict[uuid.UUID, Job]
    claimed: list[Job]


@dataclass(frozen=True)
class Approval:
    approval_id: uuid.UUID
    thread_id: str
    interrupt_id: str
    action: str
    params: dict[str, Any]
    messages: list[dict[str, Any]]


MessageKey = tuple[str, int, int]
"""A message's exact identity on the server: (folder, UIDVALIDITY, UID)."""

MAX_BATCH_SIZE = 500


class ChangeState(enum.StrEnum):
    """Where one message of a mutation job stands (`imap_job_changes.state`)."""

    INTENDED = "intended"  # about to be changed (or changed, not yet confirmed)
    APPLIED = "applied"  # changed, and where it went is known
    SKIPPED = "skipped"  # never touched (stale UIDVALIDITY, gone before the job...)
    FAILED = "failed"  # touched or attempted, outcome reported; undo still looks at it

    @property
    def is_final(self) -> bool:
        return self is not ChangeState.INTENDED


@dataclass(frozen=True)
class Change:
    """One message in a mutation job's change record: what the job saw before,
    what it meant to change, and (once applied) where the message is now."""

    job_id: uuid.UUID
    folder: str
    uidvalidity: int
    uid: int
    message_id: str | None
    subject: str
    state: ChangeState
    attempt: int
    flags_before: tuple[str, ...] | None
    flags_added: tuple[str, ...]
    flags_removed: tuple[str, ...]
    flags_after: tuple[str, ...] | None
    folder_after: str | None
    uidvalidity_after: int | None
    uid_after: int | None
    uid_floor: int | None
    reason: str | None
    # Gmail mode (010): the message's X-GM-MSGID and its X-GM-LABELS around the change.
    gm_msgid: int | None = None
    labels_before: tuple[str, ...] | None = None
    labels_added: tuple[str, ...] = ()
    labels_removed: tuple[str, ...] = ()
    labels_after: tuple[str, ...] | None = None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Change:
        def flags(value: Any) -> tuple[str, ...] | None:
            return tuple(value) if value is not None else None

        return cls(
            job_id=row["job_id"],
            folder=row["folder"],
            uidvalidity=int(row["uidvalidity"]),
            uid=int(row["uid"]),
            message_id=row["message_id"],
            subject=row["subject"],
            state=ChangeState(row["state"]),
            attempt=row["attempt"],
            flags_before=flags(row["flags_before"]),
            flags_added=tuple(row["flags_added"] or ()),
            flags_removed=tuple(row["flags_removed"] or ()),
            flags_after=flags(row["flags_after"]),
            folder_after=row["folder_after"],
            uidvalidity_after=row["uidvalidity_after"],
            uid_after=row["uid_after"],
            uid_floor=row["uid_floor"],
            reason=row["reason"],
            gm_msgid=int(row["gm_msgid"]) if row.get("gm_msgid") is not None else None,
            labels_before=flags(row.get("labels_before")),
            labels_added=tuple(row.get("labels_added") or ()),
            labels_removed=tuple(row.get("labels_removed") or ()),
            labels_after=flags(row.get("labels_after")),
        )

    @property
    def key(self) -> MessageKey:
        return (self.folder, self.uidvalidity, self.uid)

    @property
    def touched(self) -> bool:
        """Whether the job may have changed this message (so undo must look at it)."""
        return self.state is not ChangeState.SKIPPED and self.flags_before is not None

    def as_dict(self) -> dict[str, Any]:
        return {
            "folder": self.folder,
            "uidvalidity": self.uidvalidity,
            "uid": self.uid,
            "message_id": self.message_id,
            "subject": self.subject,
            "state": self.state.value,
            "was_seen": "\\Seen" in (self.flags_before or ()),
            "flags_before": list(self.flags_before or ()),
            "flags_added": list(self.flags_added),
            "flags_removed": list(self.flags_removed),
            "flags_after": list(self.flags_after) if self.flags_after is not None else None,
            "folder_after": self.folder_after,
            "uidvalidity_after": self.uidvalidity_after,
            "uid_after": self.uid_after,
            "reason": self.reason,
            "gm_msgid": str(self.gm_msgid) if self.gm_msgid is not None else None,
            "labels_before": list(self.labels_before) if self.labels_before is not None else None,
            "labels_added": list(self.labels_added),
            "labels_removed": list(self.labels_removed),
            "labels_after": list(self.labels_after) if self.labels_after is not None else None,
        }


@dataclass(frozen=True)
class Intent:
    """What a worker is about to do to one message, written before IMAP is touched."""

    folder: str
    uidvalidity: int
    uid: int
    message_id: str | None
    subject: str
    flags_before: tuple[str, ...]
    flags_added: tuple[str, ...]
    flags_removed: tuple[str, ...]
    folder_after: str
    uidvalidity_after: int | None
    uid_floor: int | None
    # Gmail mode: found again by X-GM-MSGID; labels as the server showed them first.
    gm_msgid: int | None = None
    labels_before: tuple[str, ...] | None = None
    labels_added: tuple[str, ...] = ()
    labels_removed: tuple[str, ...] = ()


@dataclass(frozen=True)
class Settlement:
    """The outcome of one message, written with the batch's mirror update and event."""

    folder: str
    uidvalidity: int
    uid: int
    state: ChangeState
    reason: str | None = None
    message_id: str | None = None
    subject: str = ""
    flags_after: tuple[str, ...] | None = None
    folder_after: str | None = None
    uidvalidity_after: int | None = None
    uid_after: int | None = None
    labels_after: tuple[str, ...] | None = None


@dataclass(frozen=True)
class ChangeSummary:
    """A job's change record in figures, for finished cards."""

    applied: int
    skipped: int
    failed: int
    intended: int
    uids: list[int]

    @property
    def touched(self) -> int:
        return self.applied + self.failed + self.intended


def _check_batch(writes: Sequence[JobWrite]) -> None:
    leases: dict[uuid.UUID, Lease] = {}
    completed: set[uuid.UUID] = set()
    for w in writes:
        job_id = w.lease.job_id
        if leases.setdefault(job_id, w.lease) != w.lease:
            raise ValueError(f"job {job_id}: writes of one batch under two leases")
        if job_id in completed:
            raise ValueError(f"job {job_id}: a write after its completion")
        if w.kind is WriteKind.COMPLETE:
            completed.add(job_id)


@dataclass
class LateFence:
    """The open transaction of `JobStore.late_fenced_transaction`."""

    conn: AsyncConnection[Any]
    pipeline: AsyncPipeline
    lease: Lease
    lock: AsyncCursor[Any] | None = None

    async def sent(self) -> None:
        """Wait until the statements queued so far have run (and raise if one
        failed), so that a lock taken next is not held while they run."""
        await self.pipeline.sync()

    async def fence(self) -> None:
        """Take the job's row, from here to COMMIT; the lease is checked before it."""
        self.lock = await self.conn.execute(
            query("lock_fenced"),
            {"job_id": self.lease.job_id, "attempt": self.lease.attempt, "owner": self.lease.owner},
        )


def _held(lease: Lease, row: dict[str, Any] | None) -> None:
    """The fenced transaction's lock found the job still ours, or LeaseLost."""
    if row is None:
        raise LeaseLost(
            f"job {lease.job_id} attempt {lease.attempt} is no longer held by {lease.owner}"
        )


# A job's error and final message are read by people (the page, `jobs show`)
# and sent in every snapshot: one that repeats a huge input (a 20 MB folder
# name did) must not make each later `GET /api/jobs` megabytes long.
MAX_ERROR_CHARS = 2000


def bounded(text: str) -> str:
    """`text`, cut to MAX_ERROR_CHARS with a note saying so."""
    if len(text) <= MAX_ERROR_CHARS:
        return text
    return text[: MAX_ERROR_CHARS - 40] + f"... ({len(text):,} characters in all)"


class JobStore:
    def __init__(
        self, pool: AsyncConnectionPool, *, claims: AsyncConnectionPool | None = None
    ) -> None:
        """`claims` runs the `claim` query (claims, and the completer's batches):
        the executor's pool of generic plans (`open_pool(generic_plans=True)`),
        so the statement it runs most is not planned again on every call."""
        self.pool = pool
        self.claims = claims or pool

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

    async def enqueue_approved(
        self,
        approval_id: uuid.UUID,
        *,
        batch_size: int | None = None,
        max_attempts: int = 3,
    ) -> Job | None:
        """The one way a mutation job is made: from its approval row, by SQL (type,
        params and messages copied from the row), one job per approval. Calling it
        again returns the same job; None when no such approval exists.
        `batch_size` (1..500) only tunes how many messages go per IMAP batch."""
        extra: dict[str, Any] = {}
        if batch_size is not None:
            extra["batch_size"] = max(1, min(MAX_BATCH_SIZE, int(batch_size)))
        params = {
            "approval_id": approval_id,
            "extra": Jsonb(extra),
            "max_attempts": max_attempts,
        }
        row = await self._one("enqueue_approved", params)
        if row is None:
            row = await self._one("get_job_by_approval", {"approval_id": approval_id})
        return Job.from_row(row) if row else None

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

    # -- the change record (imap_job_changes) ---------------------------------

    async def job_changes(self, job_id: uuid.UUID) -> list[Change]:
        """Everything a job recorded, message by message: what retries continue
        from, what undo restores, what finished cards count."""
        return [Change.from_row(r) for r in await self._all("job_changes", {"job_id": job_id})]

    async def change_summaries(
        self, job_ids: Sequence[uuid.UUID]
    ) -> dict[uuid.UUID, ChangeSummary]:
        if not job_ids:
            return {}
        rows = await self._all("change_summaries", {"job_ids": list(job_ids)})
        return {
            r["job_id"]: ChangeSummary(
                applied=r["applied"],
                skipped=r["skipped"],
                failed=r["failed"],
                intended=r["intended"],
                uids=[int(u) for u in r["uids"]],
            )
            for r in rows
        }

    async def record_intents(
        self, conn: AsyncConnection[Any], lease: Lease, intents: Sequence[Intent]
    ) -> None:
        """Write-ahead rows, inside the caller's fenced transaction. Rows an earlier
        attempt wrote are kept as they are (ON CONFLICT DO NOTHING)."""
        rows = [
            {
                "job_id": lease.job_id,
                "attempt": lease.attempt,
                "folder": i.folder,
                "uidvalidity": i.uidvalidity,
                "uid": i.uid,
                "message_id": i.message_id,
                "subject": i.subject,
                "flags_before": list(i.flags_before),
                "flags_added": list(i.flags_added),
                "flags_removed": list(i.flags_removed),
                "folder_after": i.folder_after,
                "uidvalidity_after": i.uidvalidity_after,
                "uid_floor": i.uid_floor,
                "gm_msgid": i.gm_msgid,
                "labels_before": list(i.labels_before) if i.labels_before is not None else None,
                "labels_added": list(i.labels_added),
                "labels_removed": list(i.labels_removed),
            }
            for i in intents
        ]
        if rows:
            async with conn.cursor() as cur:
                await cur.executemany(query("change_intend"), rows)

    async def settle_changes(
        self, conn: AsyncConnection[Any], lease: Lease, settled: Sequence[Settlement]
    ) -> None:
        """Outcomes, inside the caller's fenced transaction (with the mirror update
        and the progress event). Final rows are never changed again; a message
        never touched gets a 'skipped' row; a failure is recorded only on a row
        that was written ahead (it has the flags from before)."""
        rows = [
            {
                "job_id": lease.job_id,
                "attempt": lease.attempt,
                "folder": s.folder,
                "uidvalidity": s.uidvalidity,
                "uid": s.uid,
                "message_id": s.message_id,
                "subject": s.subject,
                "state": s.state.value,
                "flags_after": list(s.flags_after) if s.flags_after is not None else None,
                "folder_after": s.folder_after,
                "uidvalidity_after": s.uidvalidity_after,
                "uid_after": s.uid_after,
                "reason": s.reason,
                "labels_after": list(s.labels_after) if s.labels_after is not None else None,
            }
            for s in settled
        ]
        skipped = [r for r in rows if r["state"] == ChangeState.SKIPPED.value]
        async with conn.cursor() as cur:
            if skipped:
                await cur.executemany(query("change_skip"), skipped)
            if rows:
                await cur.executemany(query("change_settle"), rows)

    # -- the executor's side --------------------------------------------------

    async def claim(
        self, owners: Sequence[str], *, lease_seconds: float, job_types: Iterable[str] | None = None
    ) -> list[Job]:
        """Claim at most one job per owner (one owner per free worker)."""
        if not owners:
            return []
        batch = await self.write_and_claim(
            (), owners, lease_seconds=lease_seconds, job_types=job_types
        )
        return batch.claimed

    async def write_and_claim(
        self,
        writes: Sequence[JobWrite],
        owners: Sequence[str] = (),
        *,
        lease_seconds: float,
        job_types: Iterable[str] | None = None,
    ) -> WrittenBatch:
        """Several jobs' progress events and completions, then a claim for
        `owners`: one statement, one commit. A job's writes are fenced by its
        lease; when it was lost they change nothing and the job is left out of
        `written`. A job's events take its next seqs in the order of `writes`;
        its completion, if any, must be its last write."""
        _check_batch(writes)
        params = {
            # One JSON document, not an array per field: psycopg dumps
            # arrays element by element in Python, json.dumps does it in C.
            "writes": Jsonb([w.as_json() for w in writes]),
            "owners": list(owners),
            "lease_seconds": lease_seconds,
            "job_types": list(job_types) if job_types is not None else None,
        }
        async with self.claims.connection() as conn:
            # Prepared from its first call: on `claims`, that is its one plan.
            cur = await conn.execute(query("claim"), params, prepare=True)
            rows = await cur.fetchall()
        written: dict[uuid.UUID, Job] = {}
        claimed: list[Job] = []
        for row in rows:
            job = Job.from_row(row)
            if row["outcome"] == "claimed":
                claimed.append(job)
            else:
                written[job.job_id] = job
        return WrittenBatch(written=written, claimed=claimed)

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
    async def fenced_transaction(
        self, lease: Lease, *, pipeline: bool = False
    ) -> AsyncIterator[AsyncConnection[Any]]:
        """A transaction that holds the job row, so mirror writes and the progress
        event commit together, and only while the lease is still ours.

        `pipeline`: the statements go out in psycopg's pipeline mode, queued
        behind the lock until something reads a result, so a sync batch's
        write (lock, rows, cursor, event) costs two round trips instead of
        six. The lease is still checked before COMMIT, and what ran without
        it is rolled back; so the block must not act outside the database on
        a result it read."""
        params = {"job_id": lease.job_id, "attempt": lease.attempt, "owner": lease.owner}
        async with self.pool.connection() as conn:
            if not pipeline:
                async with conn.transaction():
                    cur = await conn.execute(query("lock_fenced"), params)
                    _held(lease, await cur.fetchone())
                    yield conn
                return
            async with conn.pipeline(), conn.transaction():
                cur = await conn.execute(query("lock_fenced"), params)
                yield conn
                _held(lease, await cur.fetchone())

    @asynccontextmanager
    async def late_fenced_transaction(self, lease: Lease) -> AsyncIterator[LateFence]:
        """A fenced transaction whose job row is taken late: when the block
        calls `fence()`, which it must do before the block ends.

        Why: what comes before `fence()` (a split sync's row upsert, most of a
        batch's write) runs beside other transactions of the same job, and
        only what comes after it (the range, the cursor, the event) waits for
        them. The guarantee is the same as `fenced_transaction`'s: nothing
        commits unless the lease, checked under the row lock that keeps
        every lease-ending write out until COMMIT, is still ours; rows
        written before the check are rolled back with the rest. Pipelined."""
        async with self.pool.connection() as conn, conn.pipeline() as pipe, conn.transaction():
            late = LateFence(conn, pipe, lease)
            yield late
            if late.lock is None:
                raise RuntimeError("a late-fenced transaction ended without its fence")
            _held(lease, await late.lock.fetchone())

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
                "message": bounded(message),
                "error": bounded(error) if error is not None else None,
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
                "error": bounded(error),
                "backoff_seconds": backoff_seconds,
            },
        )
        if row is None:
            raise LeaseLost(
                f"job {lease.job_id} attempt {lease.attempt} is no longer held by {lease.owner}"
            )
        return Job.from_row(row)

    async def throttle_count(self, job_id: uuid.UUID) -> int:
        """How many times this job was handed back for a server limit."""
        row = await self._one("job_throttle_count", {"job_id": job_id})
        return int(row["n"]) if row else 0

    async def throttle_release(
        self, lease: Lease, message: str, *, backoff_seconds: float, data: dict[str, Any]
    ) -> Job:
        """Hand the job back for a server limit (Gmail: too many connections,
        bandwidth): pending again after `backoff_seconds`, its attempt not spent,
        with a warning event saying so (`data.phase` = 'throttled')."""
        row = await self._one(
            "throttle_release",
            {
                "job_id": lease.job_id,
                "attempt": lease.attempt,
                "owner": lease.owner,
                "message": message,
                "backoff_seconds": backoff_seconds,
                "data": Jsonb({**data, "phase": "throttled"}),
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
