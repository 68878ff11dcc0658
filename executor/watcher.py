"""The INBOX watcher: one IMAP connection per account, fleet-wide, that notices
new mail, flag changes and expunges and asks for an incremental sync.

* One per fleet: the watch is a lease row (`imap_watchers`) on the database
  clock. Whoever holds it watches; the others retry every quarter lease and
  take over once it expires (a killed executor's watch moves within one
  lease). A watcher that cannot renew in time, or finds its lease taken,
  stops watching.
* IDLE where the server offers it (RFC 2177), re-issued every
  `IDLE_REISSUE_SECONDS`, well before the 29 minutes after which a server may
  drop an idle client; else NOOP on the EXAMINEd folder every `POLL_SECONDS`
  (Dovecot and every server we know report EXISTS / EXPUNGE / FETCH to NOOP).
* What it does with a change: nothing to the mirror itself. It asks for an
  ordinary `sync` of the folder, debounced (`SyncDebouncer`): quiet for
  `DEBOUNCE_QUIET` or `DEBOUNCE_MAX` after the first change, and not while its
  previous sync still runs (the follow-up is made when that one ends). With
  the pending-key dedup of app/jobs/sync_requests.py, a burst of 500 arrivals
  is one or two jobs.
* After every (re)connect it asks for one catch-up sync, for whatever changed
  while nobody was watching. It only ever asks once the folder has been
  mirrored: the first sync is the person's to start.
* A sign-in that only the person can fix (`SignInRequired`: revoked refresh
  token) is logged with its advice and retried after a long backoff
  (`SIGN_IN_BACKOFF`, doubling to `SIGN_IN_BACKOFF_MAX`): a new sign-in is
  picked up without a restart.
* It holds the budget's watcher slot (executor/connection_budget.py), so it
  never competes with workers for a connection. Stopping ends IDLE with DONE
  and logs out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import imapclient
import psycopg
from imapclient.exceptions import IMAPClientError

from app.db.queries import query
from app.jobs.models import Job, JobStatus
from app.jobs.store import JobStore
from app.jobs.sync_requests import enqueue_pending_sync, folder_is_mirrored
from executor.context import lease_margin, renew_interval
from executor.imap_auth import SignInRequired
from executor.imap_session import CONNECTION_ERRORS, ImapSession, ImapUnavailable
from executor.services import Service
from executor.throttle import ServerThrottled

log = logging.getLogger("executor.watcher")

# RFC 2177: clients should re-issue IDLE at least every 29 minutes.
IDLE_REISSUE_SECONDS = 24 * 60.0
# One wait for IDLE responses lasts at most this long (stop, lease and
# debounce are looked at between waits).
CHECK_SLICE = 0.5
# Without IDLE: a NOOP this often.
POLL_SECONDS = 2.0
# A sync is asked for once changes have been quiet this long...
DEBOUNCE_QUIET = 0.3
# ...or this long after the first change of a burst, whichever comes first.
DEBOUNCE_MAX = 2.0
# A follow-up waits for the watcher's previous sync to end, but never longer.
HOLD_MAX = 30.0
# How long stop() lets the watcher end IDLE and log out before cancelling it.
STOP_TIMEOUT = 5.0
# After a sign-in only the person can fix, wait this long before trying again...
SIGN_IN_BACKOFF = 30.0
# ...doubling up to this.
SIGN_IN_BACKOFF_MAX = 600.0

# Untagged responses that mean the folder changed (VANISHED: QRESYNC servers).
CHANGE_RESPONSES = {
    b"EXISTS": "new",
    b"EXPUNGE": "expunge",
    b"FETCH": "flags",
    b"VANISHED": "expunge",
}


class WatchInterrupted(ConnectionError):
    """The watch connection failed; the supervisor backs off and reconnects."""


def changes_in(responses: Sequence[Any]) -> set[str]:
    """The kinds of change in a batch of untagged responses ("new", "flags",
    "expunge"); raises ConnectionResetError on BYE (the server is closing)."""
    kinds: set[str] = set()
    for response in responses:
        if not isinstance(response, tuple) or not response:
            continue
        if response[0] == b"BYE":
            raise ConnectionResetError(f"server said BYE: {response[1:]!r}")
        name = response[1] if isinstance(response[0], int) and len(response) > 1 else response[0]
        if isinstance(name, bytes) and name.upper() in CHANGE_RESPONSES:
            kinds.add(CHANGE_RESPONSES[name.upper()])
    return kinds


def idle_wait(client: imapclient.IMAPClient, timeout: float) -> list[Any]:
    """Blocking: IDLE responses within `timeout`.

    imapclient's `idle_check` returns an empty list both for a connection the
    server closed (EOF) and for a wakeup with nothing complete to read, and a
    closed socket is readable at once, forever. So an empty answer well before
    the timeout is checked with DONE + IDLE, which raises on a dead connection.
    """
    started = time.monotonic()
    responses = client.idle_check(timeout=timeout)
    if responses or time.monotonic() - started >= timeout / 2:
        return list(responses)
    _, more = client.idle_done()
    client.idle()
    return list(more)


def poll_once(client: imapclient.IMAPClient) -> list[Any]:
    """Blocking: NOOP, the fallback where IDLE is absent."""
    _, responses = client.noop()
    return list(responses)


class WatchLease:
    """The lease row that makes one watcher per account and folder, fleet-wide."""

    def __init__(
        self, store: JobStore, account: str, folder: str, owner: str, lease_seconds: float
    ) -> None:
        self.store = store
        self.params = {"account": account, "folder": folder, "owner": owner}
        self.lease_seconds = lease_seconds
        self.interval = renew_interval(lease_seconds)
        self.margin = lease_margin(lease_seconds)
        self.held = False
        self.trusted_until = 0.0
        self.renewed_at = 0.0

    async def _run(self, name: str) -> dict[str, Any] | None:
        async with self.store.pool.connection() as conn:
            cur = await conn.execute(
                query(name), {**self.params, "lease_seconds": self.lease_seconds}
            )
            return await cur.fetchone() if cur.description else None

    async def acquire(self) -> bool:
        """Take the watch, or keep it; False while someone else holds it."""
        sent = time.monotonic()
        row = await self._run("watcher_acquire")
        self.held = row is not None
        if self.held:
            self._trusted_from(sent)
        return self.held

    async def renew(self) -> bool:
        """False once the lease is no longer ours (the row names someone else)."""
        sent = time.monotonic()
        row = await self._run("watcher_renew")
        self.held = row is not None
        if self.held:
            self._trusted_from(sent)
        return self.held

    async def release(self) -> None:
        if self.held:
            self.held = False
            await self._run("watcher_release")

    def _trusted_from(self, sent: float) -> None:
        # The database computed expiry from its now(), which came after `sent`.
        self.renewed_at = sent
        self.trusted_until = sent + self.lease_seconds - self.margin

    def renew_due(self) -> bool:
        return time.monotonic() - self.renewed_at >= self.interval

    def trusted(self) -> bool:
        return self.held and time.monotonic() < self.trusted_until


class SyncDebouncer:
    """Turns a stream of change notices into few sync requests (module docstring)."""

    def __init__(
        self,
        fire: Callable[[str], Awaitable[Job | None]],
        store: JobStore,
        *,
        quiet: float = DEBOUNCE_QUIET,
        max_delay: float = DEBOUNCE_MAX,
        hold_max: float = HOLD_MAX,
    ) -> None:
        self.fire = fire
        self.store = store
        self.quiet = quiet
        self.max_delay = max_delay
        self.hold_max = hold_max
        self.first: float | None = None
        self.last = 0.0
        self.trigger = ""
        self.urgent = False
        self.job_id: Any = None  # the last sync this watcher asked for
        self._checked = 0.0
        self._not_before = 0.0  # after a failed request, the next waits a second
        self.fired = 0  # sync requests made (tests)

    def poke(self, trigger: str, *, urgent: bool = False) -> None:
        now = time.monotonic()
        if self.first is None:
            self.first = now
            self.trigger = trigger
        self.last = now
        self.urgent = self.urgent or urgent
        if urgent:
            self.trigger = trigger

    def due_in(self) -> float | None:
        """Seconds until a request may be made (None: nothing waiting)."""
        if self.first is None:
            return None
        now = time.monotonic()
        due = now if self.urgent else min(self.last + self.quiet, self.first + self.max_delay)
        return max(0.0, max(due, self._not_before) - now)

    async def step(self) -> None:
        due = self.due_in()
        if due is None or due > 0:
            return
        assert self.first is not None
        now = time.monotonic()
        if not self.urgent and self.job_id is not None and now - self.first < self.hold_max:
            if now - self._checked < 0.2:
                return
            self._checked = now
            job = await self.store.get(self.job_id)
            if job is not None and job.status is JobStatus.RUNNING:
                return  # it may have looked already: ask again once it ends
        trigger = self.trigger
        self.first, self.urgent = None, False
        try:
            job = await self.fire(trigger)
        except BaseException:
            self.poke(trigger, urgent=True)  # not lost: asked again on the next step
            self._not_before = time.monotonic() + 1.0
            raise
        if job is not None:
            self.fired += 1
            self.job_id = job.job_id


class InboxWatcher(Service):
    """Watches one folder (INBOX) of one account while it holds the watch lease."""

    name = "inbox-watcher"

    def __init__(
        self,
        store: JobStore,
        session: ImapSession,
        *,
        account: str,
        owner: str,
        lease_seconds: float,
        folder: str = "INBOX",
        use_idle: bool = True,
        idle_reissue: float = IDLE_REISSUE_SECONDS,
        poll_seconds: float = POLL_SECONDS,
        quiet: float = DEBOUNCE_QUIET,
        max_delay: float = DEBOUNCE_MAX,
    ) -> None:
        super().__init__()
        self.store = store
        self.session = session
        self.account = account
        self.folder = folder
        self.owner = owner
        self.use_idle = use_idle
        self.idle_reissue = idle_reissue
        self.poll_seconds = poll_seconds
        self.lease = WatchLease(store, account, folder, owner, lease_seconds)
        self.debouncer = SyncDebouncer(self._request_sync, store, quiet=quiet, max_delay=max_delay)
        # For tests and health reports:
        self.watching = False
        self.mode: str | None = None  # "idle" or "poll" while watching
        self.connects = 0
        self.changes = 0  # change notices seen
        self.idle_reissues = 0
        self._renew_retry_at = 0.0  # after a failed renewal, the next try waits a little
        self.sign_in_backoff = SIGN_IN_BACKOFF
        self.sign_in_failures = 0

    async def _request_sync(self, trigger: str) -> Job | None:
        if not await folder_is_mirrored(self.store, self.folder):
            return None  # nothing mirrored yet: the first sync is the person's
        job = await enqueue_pending_sync(self.store, self.account, self.folder, trigger=trigger)
        log.info(
            "asked for a sync of %s (%s): job_id=%s status=%s",
            self.folder,
            trigger,
            job.job_id,
            job.status,
        )
        return job

    async def stop(self) -> None:
        """End IDLE with DONE and LOGOUT before the task is cancelled."""
        self._stop.set()
        if self._task is not None and not self._task.done():
            await asyncio.wait({self._task}, timeout=STOP_TIMEOUT)
        await super().stop()

    async def tick(self) -> None:
        try:
            got = await self.lease.acquire()
        except (psycopg.Error, OSError) as exc:
            log.warning("watch lease of %s: %s", self.folder, exc)
            got = False
        if not got:
            await self._sleep(self.lease.interval)
            return
        try:
            await self._watch()
        except SignInRequired as exc:
            self.sign_in_failures += 1
            log.error(
                "cannot watch %s of %s: %s (next try in %.0fs)",
                self.folder,
                self.account,
                exc,
                self.sign_in_backoff,
            )
            with contextlib.suppress(Exception):
                await self.lease.release()
            await self._sleep(self.sign_in_backoff)
            self.sign_in_backoff = min(self.sign_in_backoff * 2, SIGN_IN_BACKOFF_MAX)
        except (ImapUnavailable, ServerThrottled, IMAPClientError, *CONNECTION_ERRORS) as exc:
            if not self.watching:
                raise WatchInterrupted(f"cannot watch {self.folder}: {exc}") from exc
            # It was up and dropped: reconnect at once; failures from here back off.
            log.warning("watch of %s dropped: %s; reconnecting", self.folder, exc)
        finally:
            self.watching = False
            self.mode = None
            await self.session.discard()
            if self._stop.is_set() or not self.lease.trusted():
                with contextlib.suppress(Exception):
                    await self.lease.release()

    async def _watch(self) -> None:
        """One connection's life: EXAMINE, catch up, then IDLE (or NOOP) until
        stopped, the lease is lost or the connection fails."""
        self.watching = False
        await self.session.connect(attempts=1)
        client = self.session.client
        assert client is not None
        idle = self.use_idle and "IDLE" in self.session.capabilities
        await self.session.call(client.select_folder, self.folder, readonly=True)
        self.connects += 1
        self.sign_in_backoff = SIGN_IN_BACKOFF
        self.watching = True
        self.mode = "idle" if idle else "poll"
        log.info(
            "watching %s of %s (%s), owner=%s", self.folder, self.account, self.mode, self.owner
        )
        self.debouncer.poke("catch-up", urgent=True)
        in_idle = False
        idle_since = 0.0
        try:
            while not self._stop.is_set():
                if not await self._keep_lease():
                    return
                try:
                    await self.debouncer.step()
                except (psycopg.Error, OSError) as exc:
                    log.warning("could not ask for a sync of %s: %s", self.folder, exc)
                wait = self._wait_time()
                if idle:
                    if not in_idle:
                        await self.session.call(client.idle)
                        in_idle, idle_since = True, time.monotonic()
                    responses = await self.session.call(idle_wait, client, wait)
                    if time.monotonic() - idle_since >= self.idle_reissue:
                        _, more = await self.session.call(client.idle_done)
                        responses += list(more)
                        in_idle = False
                        self.idle_reissues += 1
                else:
                    responses = await self.session.call(poll_once, client)
                kinds = changes_in(responses)
                if kinds:
                    self.changes += 1
                    log.debug("%s changed: %s", self.folder, sorted(kinds))
                    self.debouncer.poke(self.mode)
                elif not idle:
                    await self._sleep(self._wait_time(self.poll_seconds))
        finally:
            if in_idle and self.session.client is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self.session.call(client.idle_done), STOP_TIMEOUT)

    def _wait_time(self, longest: float = CHECK_SLICE) -> float:
        now = time.monotonic()
        due = self.debouncer.due_in()
        renew_at = max(self.lease.renewed_at + self.lease.interval, self._renew_retry_at)
        renew = max(0.0, renew_at - now)
        return max(0.05, min(longest, renew, due if due is not None else longest))

    async def _keep_lease(self) -> bool:
        if self.lease.renew_due() and time.monotonic() >= self._renew_retry_at:
            try:
                if not await self.lease.renew():
                    log.warning("watch lease of %s was taken over: stopping", self.folder)
                    return False
            except (psycopg.Error, OSError) as exc:
                self._renew_retry_at = time.monotonic() + self.lease.interval / 2
                log.warning("could not renew the watch lease of %s: %s", self.folder, exc)
        if not self.lease.trusted():
            log.warning("watch lease of %s not renewed in time: stopping", self.folder)
            return False
        return True
