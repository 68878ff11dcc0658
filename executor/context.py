"""What a handler gets to do its job: the job, its lease, its IMAP session, and
checkpoints that report progress and notice cancellation, lease loss or shutdown."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from app.config import Settings
from app.jobs.models import Job, Lease, LeaseLost
from app.jobs.store import JobStore
from executor.imap_session import ImapSession
from executor.parsing import ParserPool

log = logging.getLogger("executor.job")


class JobCancelled(Exception):
    """The person asked to cancel; the handler stopped at a batch boundary."""


class ShuttingDown(Exception):
    """The executor is stopping: hand the job back instead of finishing it."""


class PermanentJobError(Exception):
    """A failure that retrying cannot fix (bad payload, missing folder...)."""


@dataclass
class JobContext:
    job: Job
    lease: Lease
    store: JobStore
    imap: ImapSession
    settings: Settings
    worker: str
    parser: ParserPool | None = None
    cancel_seen: bool = False
    lease_lost: bool = False
    stopping: bool = False
    processed: int = 0
    total_estimate: int | None = None
    notes: dict[str, Any] = field(default_factory=dict)

    def checkpoint(self) -> None:
        """Called between micro-batches: the only places a handler may stop."""
        if self.lease_lost:
            raise LeaseLost(f"job {self.job.job_id}: lease lost")
        if self.cancel_seen:
            raise JobCancelled()
        if self.stopping:
            raise ShuttingDown()

    async def progress(
        self,
        message: str,
        *,
        processed: int | None = None,
        total_estimate: int | None = None,
        level: str = "info",
        data: dict[str, Any] | None = None,
        conn: Any = None,
    ) -> None:
        if processed is not None:
            self.processed = processed
        if total_estimate is not None:
            self.total_estimate = total_estimate
        payload = {
            "processed": self.processed,
            "total_estimate": self.total_estimate,
            **(data or {}),
        }
        try:
            result = await self.store.progress(
                self.lease,
                message,
                processed=processed,
                total_estimate=total_estimate,
                level=level,
                data=payload,
                conn=conn,
            )
        except LeaseLost:
            self.lease_lost = True
            raise
        self.cancel_seen = self.cancel_seen or result.cancel_requested
        log.info(
            "progress job_id=%s worker=%s processed=%s total=%s msg=%r",
            self.job.job_id,
            self.worker,
            self.processed,
            self.total_estimate,
            message,
        )

    async def event(
        self, message: str, *, level: str = "info", data: dict[str, Any] | None = None
    ) -> None:
        await self.progress(message, level=level, data=data)
