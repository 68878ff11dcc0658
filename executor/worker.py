"""Run one claimed job to its end, turning every outcome into a fenced write."""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
from collections.abc import Mapping
from dataclasses import dataclass, field

import psycopg
from imapclient.exceptions import IMAPClientError

from app.config import Settings
from app.jobs.models import Job, JobStatus, Lease, LeaseLost
from app.jobs.store import JobStore, JobWrite, WriteKind
from executor import throttle
from executor.completer import Completer, WriteFailed, Written
from executor.context import (
    JobCancelled,
    JobContext,
    LeaseExpiring,
    PermanentJobError,
    ShuttingDown,
)
from executor.handlers import HANDLERS, Handler
from executor.imap_auth import SignInRequired
from executor.imap_session import CONNECTION_ERRORS, ImapSession, ImapUnavailable
from executor.parsing import ParserPool
from executor.throttle import ServerThrottled

log = logging.getLogger("executor.worker")

# Concurrent syncs of one mailbox can collide on mirror rows: try again later.
TRANSIENT_DB_ERRORS: tuple[type[Exception], ...] = (
    psycopg.errors.DeadlockDetected,
    psycopg.errors.SerializationFailure,
)

# How long a worker that stopped for want of a renewed lease tries to hand the
# job back before leaving it to the reaper.
HAND_BACK_TIMEOUT = 5.0


@dataclass
class WorkerSlot:
    """A worker: its lease-owner name and its own IMAP connection."""

    index: int
    owner: str
    imap: ImapSession
    current: JobContext | None = field(default=None)
    busy: bool = False


def retry_backoff(attempt: int) -> float:
    return float(min(60, 2 ** max(0, attempt - 1)))


async def run_job(
    job: Job,
    slot: WorkerSlot,
    store: JobStore,
    settings: Settings,
    handlers: Mapping[object, Handler] | None = None,
    parser: ParserPool | None = None,
    claimed_at: float | None = None,
    completer: Completer | None = None,
) -> tuple[Job, float] | None:
    """Run `job` on `slot`. `claimed_at` is the monotonic time the claim query
    was sent: the lease is trusted from then, not from when the job started.

    With a `completer`, a completed job's completion goes into its next batch,
    which may claim this worker's next job: returned with its `claimed_at`,
    for the caller to run at once."""
    lease = Lease.of(job)
    ctx = JobContext(
        job=job,
        lease=lease,
        store=store,
        session=slot.imap,
        settings=settings,
        worker=slot.owner,
        parser=parser,
        completer=completer,
        processed=job.processed,
        total_estimate=job.total_estimate,
    )
    ctx.lease_renewed(
        time.monotonic() if claimed_at is None else claimed_at, settings.lease_seconds
    )
    slot.current = ctx
    handler = (handlers or HANDLERS).get(job.job_type)  # type: ignore[call-overload]
    log.info(
        "start job_id=%s type=%s attempt=%s worker=%s",
        job.job_id,
        job.job_type,
        job.attempt,
        slot.owner,
    )
    handoff: Written | None = None
    try:
        try:
            if handler is None:
                raise PermanentJobError(f"this executor has no handler for {job.job_type} jobs")
            summary = await handler(ctx)
        except Exception:
            ctx.finishing = True
            await ctx.settle()  # its events written behind come before the terminal write
            raise
        finally:
            ctx.finishing = True  # from here on, only the terminal write is left
        completion = JobWrite(
            WriteKind.COMPLETE,
            lease,
            "completed",
            processed=ctx.processed,
            total_estimate=ctx.total_estimate if ctx.total_estimate is not None else ctx.processed,
            data={"summary": summary},
        )
        if completer is None:
            final = await _finish_completed(store, completion)
        else:
            handoff = await _complete(completer, store, completion)
            if handoff.job is None:
                raise LeaseLost(
                    f"job {job.job_id} attempt {job.attempt}: lease lost before completion"
                )
            final = handoff.job
        log.info("end job_id=%s status=%s worker=%s", job.job_id, final.status, slot.owner)
    except JobCancelled:
        await _finish_quietly(
            store, lease, JobStatus.CANCELLED, "cancelled at a batch boundary", None
        )
    except ShuttingDown:
        try:
            await store.release(lease)
            log.info("released job_id=%s worker=%s", job.job_id, slot.owner)
        except psycopg.Error as exc:
            log.warning("could not release job_id=%s (%s); its lease will expire", job.job_id, exc)
    except LeaseExpiring as exc:
        log.warning(
            "lease not renewed in time job_id=%s attempt=%s worker=%s: stopped, handing it back",
            job.job_id,
            job.attempt,
            slot.owner,
        )
        await _hand_back(store, lease, str(exc), retry_backoff(job.attempt))
    except LeaseLost:
        log.warning(
            "lease lost job_id=%s attempt=%s worker=%s: stopping quietly",
            job.job_id,
            job.attempt,
            slot.owner,
        )
    except ServerThrottled as exc:
        await slot.imap.discard()
        await _throttled(store, lease, exc)
    except PermanentJobError as exc:
        await _finish_quietly(store, lease, JobStatus.FAILED, f"failed: {exc}", str(exc))
    except SignInRequired as exc:
        # Retrying cannot help until the person signs in again; the message says how.
        await slot.imap.discard()
        await _finish_quietly(store, lease, JobStatus.FAILED, f"failed: {exc}", str(exc))
    except (ImapUnavailable, *CONNECTION_ERRORS, *TRANSIENT_DB_ERRORS) as exc:
        if not isinstance(exc, TRANSIENT_DB_ERRORS):
            await slot.imap.discard()
        error = f"transient problem: {type(exc).__name__}: {exc}"
        try:
            final = await store.retry_later(
                lease, error, backoff_seconds=retry_backoff(job.attempt)
            )
            log.warning("retry job_id=%s status=%s error=%s", job.job_id, final.status, error)
        except (LeaseLost, psycopg.Error):
            log.warning("could not record retry job_id=%s", job.job_id)
    except IMAPClientError as exc:
        error = f"IMAP server refused: {exc}"
        await _finish_quietly(store, lease, JobStatus.FAILED, f"failed: {error}", error)
    except psycopg.OperationalError as exc:
        # The database dropped: nothing can be written now. The lease will
        # expire and the reaper hands the job to a healthy worker.
        log.error("database lost during job_id=%s: %s", job.job_id, exc)
    except Exception as exc:
        log.error("job_id=%s crashed:\n%s", job.job_id, traceback.format_exc())
        error = f"{type(exc).__name__}: {exc}"
        await _finish_quietly(store, lease, JobStatus.FAILED, f"failed: {error}", error)
    finally:
        ctx.finished = True
        slot.current = None
    if handoff is not None and handoff.next_job is not None:
        return handoff.next_job, handoff.claimed_at
    return None


async def _finish_completed(store: JobStore, completion: JobWrite) -> Job:
    return await store.finish(
        completion.lease,
        JobStatus.COMPLETED,
        completion.message,
        processed=completion.processed,
        total_estimate=completion.total_estimate,
        data=completion.data,
    )


async def _complete(completer: Completer, store: JobStore, completion: JobWrite) -> Written:
    """Through the completer's batch (which may claim this worker's next job);
    when that batch was not written, by this worker itself, fenced the same
    way, so the completion is never lost."""
    try:
        return await completer.write(completion, want_next=True)
    except WriteFailed as exc:
        log.warning("job_id=%s: %s; writing the completion directly", completion.lease.job_id, exc)
        return Written(await _finish_completed(store, completion))


async def _throttled(store: JobStore, lease: Lease, exc: ServerThrottled) -> None:
    """A server limit (executor/throttle.py): hand the job back after a backoff
    without spending its attempt, saying so in its events; past MAX_BACKOFFS
    it becomes an ordinary transient failure, which spends attempts."""
    try:
        earlier = await store.throttle_count(lease.job_id)
        if earlier >= throttle.MAX_BACKOFFS:
            final = await store.retry_later(
                lease,
                f"transient problem: {exc} (backed off {earlier} times already)",
                backoff_seconds=throttle.backoff(exc.kind, earlier),
            )
            log.warning(
                "retry job_id=%s status=%s after %d backoffs", lease.job_id, final.status, earlier
            )
            return
        wait = throttle.backoff(exc.kind, earlier)
        final = await store.throttle_release(
            lease,
            f"{throttle.describe(exc.kind)}; backing off {wait:.0f}s "
            f"(backoff {earlier + 1} of {throttle.MAX_BACKOFFS}, no attempt spent)",
            backoff_seconds=wait,
            data={"limit": exc.kind, "backoff_seconds": wait, "detail": exc.detail[:300]},
        )
        log.warning(
            "throttled job_id=%s limit=%s backoff=%.0fs status=%s",
            lease.job_id,
            exc.kind,
            wait,
            final.status,
        )
    except (LeaseLost, psycopg.Error) as err:
        log.warning("could not hand back throttled job_id=%s (%s)", lease.job_id, err)


async def _hand_back(store: JobStore, lease: Lease, reason: str, backoff: float) -> None:
    """Return a job whose lease we could not keep renewing, spending its attempt
    (a renewer that keeps failing must not loop forever). Best effort: when the
    database cannot be reached either, the lease expires and the reaper does it."""
    try:
        async with asyncio.timeout(HAND_BACK_TIMEOUT):
            final = await store.retry_later(lease, reason, backoff_seconds=backoff)
        log.info("handed back job_id=%s status=%s", lease.job_id, final.status)
    except LeaseLost:
        log.info("job_id=%s was already taken back", lease.job_id)
    except (psycopg.Error, OSError, TimeoutError) as exc:
        log.warning("could not hand back job_id=%s (%s); the reaper will", lease.job_id, exc)


async def _finish_quietly(
    store: JobStore, lease: Lease, status: JobStatus, message: str, error: str | None
) -> None:
    try:
        final = await store.finish(lease, status, message, error=error)
        log.info("end job_id=%s status=%s error=%s", lease.job_id, final.status, error)
    except LeaseLost:
        log.warning("lease lost before recording %s for job_id=%s", status, lease.job_id)
    except psycopg.Error as exc:
        log.error("could not record %s for job_id=%s: %s", status, lease.job_id, exc)
