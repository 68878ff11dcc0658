"""What a handler gets to do its job: the job, its lease, its IMAP session, and
checkpoints that report progress and notice cancellation, lease loss or shutdown.

Lease trust. The database fences every write by (status, attempt, owner), but
it cannot fence what a worker does to the mailbox. So a worker keeps its own
clock of how long its lease is certainly valid, counted from the last renewal
it saw succeed (or from the claim), and stops touching the mailbox in time:

- the *soft* deadline, `lease_valid_until` = renewal + lease − margin: past it,
  `checkpoint()` raises `LeaseExpiring`, so no new batch starts. The margin
  (`lease_margin`, a third of the lease, at least 1 s) is what the batch in
  progress has to finish its IMAP work and record it.
- the *hard* deadline, `lease_hard_until` = renewal + lease − margin/4: past
  it, `ctx.imap` starts no IMAP command, and a command still in flight at it
  is abandoned and its connection shut down (`LeaseBoundImap`).

The reaper cannot hand the job to another worker before renewal + lease (the
database computed the expiry from its own `now()`, which came after our
`sent` timestamp), so the two workers never touch the mailbox at the same time.

Where it can still straddle: a command the server had already received when
its connection was shut down may still take effect after the hard deadline
(the server executes it; we never see the answer). Handlers therefore keep
each IMAP command small (one micro-batch of UIDs), record what it did in the
same transaction as their progress, and the next attempt re-checks the
server's state instead of trusting that an unrecorded command did nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import imapclient
from imapclient.exceptions import IMAPClientError

from app.config import ImapAccount, Settings
from app.jobs.models import Job, Lease, LeaseLost
from app.jobs.store import JobStore, JobWrite, ProgressResult, WriteKind
from executor import throttle
from executor.imap_session import ImapSession
from executor.parsing import ParserPool

if TYPE_CHECKING:
    from executor.completer import Completer

log = logging.getLogger("executor.job")
T = TypeVar("T")


def lease_margin(lease_seconds: float) -> float:
    """How long before its lease runs out a worker stops starting new batches."""
    return min(max(1.0, lease_seconds / 3), lease_seconds / 2)


def renew_interval(lease_seconds: float) -> float:
    """How often the renewer renews: four chances per lease, so a failed
    renewal or two is retried well before the soft deadline."""
    return max(0.1, lease_seconds / 4)


class JobCancelled(Exception):
    """The person asked to cancel; the handler stopped at a batch boundary."""


class ShuttingDown(Exception):
    """The executor is stopping: hand the job back instead of finishing it."""


class PermanentJobError(Exception):
    """A failure that retrying cannot fix (bad payload, missing folder...)."""


class LeaseExpiring(LeaseLost):
    """The lease could not be renewed in time: the worker stops touching the
    mailbox before it can expire. Unlike a plain `LeaseLost`, the database may
    still list us as owner, so the worker hands the job back if it can."""


@dataclass
class JobContext:
    job: Job
    lease: Lease
    store: JobStore
    session: ImapSession  # the worker's own connection; handlers use `imap`
    settings: Settings
    worker: str
    parser: ParserPool | None = None
    # Batches progress written outside a fenced transaction with other workers'
    # writes (executor/completer.py); without it each is written on its own.
    completer: Completer | None = None
    cancel_seen: bool = False
    lease_lost: bool = False
    stopping: bool = False
    # Set by the worker right before its terminal write (finish, retry, release),
    # and once it is done: the renewer then knows a vanished lease is no loss.
    finishing: bool = False
    finished: bool = False
    # time.monotonic() values; see the module docstring.
    lease_valid_until: float = 0.0
    lease_hard_until: float = 0.0
    processed: int = 0
    total_estimate: int | None = None
    notes: dict[str, Any] = field(default_factory=dict)
    imap: LeaseBoundImap = field(init=False, repr=False)
    # Progress events written behind (`progress(wait=False)`), not yet committed.
    _behind: set[asyncio.Future[Any]] = field(default_factory=set, init=False, repr=False)

    def __post_init__(self) -> None:
        self.imap = LeaseBoundImap(self.session, self)

    def lease_renewed(self, at: float, lease_seconds: float) -> None:
        """The lease was (re)granted by a query sent at monotonic time `at`."""
        margin = lease_margin(lease_seconds)
        self.lease_valid_until = max(self.lease_valid_until, at + lease_seconds - margin)
        self.lease_hard_until = max(self.lease_hard_until, at + lease_seconds - margin / 4)

    def lease_remaining(self) -> float:
        """Seconds until the hard deadline (negative once it has passed)."""
        return self.lease_hard_until - time.monotonic()

    def check_lease(self, *, hard: bool = False) -> None:
        """Raise unless the lease can still be trusted (to the soft or hard deadline)."""
        if self.lease_lost:
            raise LeaseLost(f"job {self.job.job_id}: lease lost")
        deadline = self.lease_hard_until if hard else self.lease_valid_until
        if time.monotonic() >= deadline:
            raise LeaseExpiring(
                f"job {self.job.job_id}: lease not renewed in time; stopping before it expires"
            )

    def checkpoint(self) -> None:
        """Called between micro-batches: the only places a handler may stop."""
        self.check_lease()
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
        wait: bool = True,
    ) -> None:
        """Append an event (and move the counters it reports), fenced by the lease.

        Inside a fenced transaction pass its `conn`: the event commits with it.
        Otherwise the event goes into the completer's next batch with the other
        workers' writes, and this returns once it is committed: it raises
        `LeaseLost` if the lease was lost, and notes a cancel request.

        `wait=False` is for events nothing depends on (a "starting" note, a
        heartbeat): the event is queued and this returns at once. It still
        takes the job's next seq, after the job's earlier writes and before its
        completion (which it usually shares a batch with); a lost lease or a
        cancel request it comes back with reaches the context like a renewal's
        (`checkpoint` raises). A fenced transaction opened after it may commit
        first, and if its batch fails it is logged and dropped. Without a
        completer it is written at once, as with `wait=True`."""
        if processed is not None:
            self.processed = processed
        if total_estimate is not None:
            self.total_estimate = total_estimate
        payload = {
            "processed": self.processed,
            "total_estimate": self.total_estimate,
            **(data or {}),
        }
        write = JobWrite(
            WriteKind.PROGRESS,
            self.lease,
            message,
            processed=processed,
            total_estimate=total_estimate,
            level=level,
            data=payload,
        )
        try:
            if conn is not None or self.completer is None:
                result = await self._write_direct(write, conn)
            elif not wait and self._write_behind(write):
                return
            else:
                result = await self._batched_progress(write)
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

    async def _write_direct(self, write: JobWrite, conn: Any = None) -> ProgressResult:
        """The `progress` query on its own (in `conn`'s transaction when given)."""
        return await self.store.progress(
            write.lease,
            write.message,
            processed=write.processed,
            total_estimate=write.total_estimate,
            level=write.level,
            data=write.data,
            conn=conn,
        )

    async def _batched_progress(self, write: JobWrite) -> ProgressResult:
        """The `progress` write through the completer, or on its own when the
        completer's batch was not written (nothing of a failed batch is kept)."""
        from executor.completer import WriteFailed

        assert self.completer is not None
        try:
            written = await self.completer.write(write)
        except WriteFailed as exc:
            log.warning("job_id=%s: %s; writing the event directly", self.job.job_id, exc)
            return await self._write_direct(write)
        if written.job is None or written.seq is None:
            raise LeaseLost(
                f"job {self.job.job_id} attempt {self.lease.attempt} is no longer held by "
                f"{self.lease.owner}"
            )
        return ProgressResult(seq=written.seq, cancel_requested=written.job.cancel_requested)

    def _write_behind(self, write: JobWrite) -> bool:
        """Queue `write` in the completer without waiting; False if it is not running."""
        from executor.completer import WriteFailed

        assert self.completer is not None
        try:
            future = self.completer.submit(write)
        except WriteFailed:
            return False
        self._behind.add(future)
        future.add_done_callback(self._written_behind)
        return True

    def _written_behind(self, future: asyncio.Future[Any]) -> None:
        self._behind.discard(future)
        if future.cancelled():
            return
        if (exc := future.exception()) is not None:
            log.warning("job_id=%s: an event written behind was lost: %s", self.job.job_id, exc)
            return
        written = future.result()
        if written.job is None:
            self.lease_lost = True
            log.warning(
                "lease lost job_id=%s worker=%s (event written behind)",
                self.job.job_id,
                self.worker,
            )
        elif written.job.cancel_requested:
            self.cancel_seen = True

    async def settle(self, timeout: float = 5.0) -> None:
        """Wait (a while) until the events written behind are committed or lost,
        so that a write made next, outside the completer, comes after them."""
        if self._behind:
            await asyncio.wait(list(self._behind), timeout=timeout)

    async def event(
        self, message: str, *, level: str = "info", data: dict[str, Any] | None = None
    ) -> None:
        await self.progress(message, level=level, data=data)


class LeaseBoundImap:
    """The worker's `ImapSession` as a handler sees it (`ctx.imap`): no IMAP
    command starts once the lease is lost or past its hard deadline, and none
    is waited on beyond that deadline.

    imapclient is blocking and runs in a thread, which cannot be interrupted;
    a command that outlives the deadline is abandoned by shutting its socket
    down (which also ends the thread's wait) and dropping the connection, so
    the worker's next job reconnects instead of sharing a busy client.
    """

    def __init__(self, session: ImapSession, ctx: JobContext) -> None:
        self._session = session
        self._ctx = ctx

    # -- what handlers read from the session --------------------------------

    @property
    def session(self) -> ImapSession:
        return self._session

    @property
    def account(self) -> ImapAccount:
        return self._session.account

    @property
    def client(self) -> imapclient.IMAPClient | None:
        return self._session.client

    @property
    def capabilities(self) -> frozenset[str]:
        return self._session.capabilities

    @property
    def condstore(self) -> bool:
        return self._session.condstore

    @property
    def is_gmail(self) -> bool:
        return self._session.is_gmail

    # -- bounded calls ----------------------------------------------------------

    async def ensure(self) -> imapclient.IMAPClient:
        self._ctx.check_lease(hard=True)
        return await self._bounded(self._session.ensure(), "connect")

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        self._ctx.check_lease(hard=True)  # before the coroutine exists: nothing left unawaited
        name = getattr(fn, "__name__", "call")
        try:
            return await self._bounded(self._session.call(fn, *args, **kwargs), name)
        except IMAPClientError as exc:
            # Gmail's bandwidth / connection limits: the worker hands the job
            # back to wait (executor/throttle.py) instead of failing it.
            kind = throttle.classify(exc, gmail=self._session.is_gmail)
            if kind is None:
                raise
            await self._session.discard()
            raise throttle.ServerThrottled(kind, str(exc)) from exc

    async def leave_folder(self) -> None:
        if self._session.client is None:
            return
        self._ctx.check_lease(hard=True)
        await self._bounded(self._session.leave_folder(), "leave_folder")

    async def discard(self) -> None:
        await self._session.discard()

    def __getattr__(self, name: str) -> Any:
        # Anything else the session offers (added later, say) still works, but
        # is not lease-bound: IMAP work belongs in `call`, or gets a method here.
        if name.startswith("_"):
            raise AttributeError(name)  # no recursion before __init__ ran (copy, pickle)
        return getattr(self._session, name)

    async def _bounded(self, work: Coroutine[Any, Any, T], what: str) -> T:
        task = asyncio.ensure_future(work)
        try:
            # The deadline moves on with every renewal: wait in steps.
            while (remaining := self._ctx.lease_remaining()) > 0:
                done, _ = await asyncio.wait({task}, timeout=remaining)
                if done:
                    return task.result()
        finally:
            if not task.done():
                task.cancel()  # the thread underneath runs on until abort() below
        self.abort()
        log.warning(
            "job_id=%s worker=%s: IMAP %s outlived the lease deadline; connection dropped",
            self._ctx.job.job_id,
            self._ctx.worker,
            what,
        )
        raise LeaseExpiring(
            f"job {self._ctx.job.job_id}: IMAP {what} still running at the lease deadline"
        )

    def abort(self) -> None:
        """Drop the connection now, from the event loop, without waiting for
        the thread that may still be blocked on it."""
        client, self._session.client = self._session.client, None
        if client is None:
            return
        with contextlib.suppress(Exception):
            client.socket().shutdown(socket.SHUT_RDWR)
