"""Job value types: what a job is, independent of where it is stored."""

from __future__ import annotations

import dataclasses
import enum
import uuid
from datetime import datetime
from typing import Any


class JobStatus(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED})


class JobType(enum.StrEnum):
    """Every job type and its properties: the one list. The migration runner
    writes it into `imap_job_types`, where the database reads its rules."""

    SYNC = "sync"
    CLEAN = "clean"
    MARK_READ = "mark_read"
    MARK_UNREAD = "mark_unread"
    MOVE = "move"
    LABEL = "label"
    UNDO = "undo"
    # Re-decides "mentions you" for mirror rows checked against another identity.
    RESCORE = "rescore"

    @property
    def is_mutation(self) -> bool:
        """Changes the mailbox, so it needs an approval (one job per approval)."""
        return self not in _READ_ONLY

    @property
    def is_undoable(self) -> bool:
        """Its recorded changes can be put back by an `undo` job."""
        return self.is_mutation and self is not JobType.UNDO


_READ_ONLY = frozenset({JobType.SYNC, JobType.RESCORE})
MUTATION_JOB_TYPES = frozenset(t for t in JobType if t.is_mutation)
UNDOABLE_JOB_TYPES = frozenset(t for t in JobType if t.is_undoable)


def job_type_of(value: str) -> JobType | str:
    """A stored job type as the `JobType` it names; a type this code does not
    know (a bench's own, registered in its throwaway database's
    `imap_job_types`) stays a plain str, and only an executor given a handler
    for it runs it."""
    try:
        return JobType(value)
    except ValueError:
        return value


@dataclasses.dataclass(frozen=True)
class Job:
    job_id: uuid.UUID
    job_type: JobType | str
    status: JobStatus
    payload: dict[str, Any]
    processed: int
    total_estimate: int | None
    cancel_requested: bool
    error: str | None
    attempt: int
    max_attempts: int
    lease_owner: str | None
    lease_expires_at: datetime | None
    last_seq: int
    idempotency_key: str | None
    approval_id: uuid.UUID | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Job:
        values = {name: row[name] for name in _JOB_FIELDS}
        values["job_type"] = job_type_of(values["job_type"])
        values["status"] = JobStatus(values["status"])
        return cls(**values)

    def evolve(self, **changes: Any) -> Job:
        return dataclasses.replace(self, **changes)

    def snapshot(self) -> dict[str, Any]:
        """The public shape of a job (SPEC §6), JSON-ready."""
        return {
            "job_id": str(self.job_id),
            "job_type": str(self.job_type),
            "status": self.status.value,
            "processed": self.processed,
            "total_estimate": self.total_estimate,
            "error": self.error,
            "cancel_requested": self.cancel_requested,
            "attempt": self.attempt,
            "created_at": _iso(self.created_at),
            "started_at": _iso(self.started_at),
            "finished_at": _iso(self.finished_at),
            "payload": self.payload,
            "approval_id": str(self.approval_id) if self.approval_id else None,
        }


# Read once: the executor makes a Job of every row its claims return.
_JOB_FIELDS = tuple(f.name for f in dataclasses.fields(Job))


@dataclasses.dataclass(frozen=True)
class JobEvent:
    job_id: uuid.UUID
    seq: int
    created_at: datetime
    level: str
    message: str
    data: dict[str, Any]

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> JobEvent:
        return cls(**{f.name: row[f.name] for f in dataclasses.fields(cls)})

    def as_dict(self) -> dict[str, Any]:
        return {
            "job_id": str(self.job_id),
            "seq": self.seq,
            "level": self.level,
            "message": self.message,
            "data": self.data,
            "created_at": _iso(self.created_at),
        }


@dataclasses.dataclass(frozen=True)
class Lease:
    """What a worker must present on every write: the fence."""

    job_id: uuid.UUID
    attempt: int
    owner: str

    @classmethod
    def of(cls, job: Job) -> Lease:
        if job.lease_owner is None:
            raise ValueError(f"job {job.job_id} holds no lease")
        return cls(job.job_id, job.attempt, job.lease_owner)


class LeaseLost(Exception):
    """The job is no longer ours (reaped, cancelled or taken over): stop writing."""


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None
