"""One worker's IMAP connection: connect with backoff, run calls off the event loop.

imapclient is synchronous, so every call goes through `asyncio.to_thread`; a
worker never shares its connection, so calls never interleave. Signing in is
executor/imap_auth.py's job (password or XOAUTH2); sessions of one process
share one `ImapSignIn`, so they share its access token.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import imapclient
from imapclient.exceptions import IMAPClientAbortError, IMAPClientError

from app.config import ImapAccount
from executor import throttle
from executor.imap_auth import ImapSignIn, SignInRequired, TokenUnavailable

if TYPE_CHECKING:
    from executor.connection_budget import ConnectionBudget, Slot

log = logging.getLogger(__name__)
T = TypeVar("T")

# Errors after which the connection is unusable: reconnect and retry the job later.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    IMAPClientAbortError,
    ConnectionError,
    socket.timeout,
    TimeoutError,
    ssl.SSLError,
    EOFError,
    BrokenPipeError,
    OSError,
)


def quiet_protocol_trace(client: imapclient.IMAPClient) -> None:
    """imapclient turns imaplib's trace to level 5, so every protocol line and
    literal (every fetched body) is formatted with %r for its DEBUG logger even
    when that logger then drops it: 15-25% of a fetch's CPU (10,000 messages:
    1.37-1.59 s → 1.02-1.30 s). With that logger off for DEBUG, imaplib is told
    not to trace; with it on, the trace (secrets redacted by imapclient) stays."""
    if not logging.getLogger("imapclient.imaplib").isEnabledFor(logging.DEBUG):
        client._imap.debug = 0


class ImapUnavailable(Exception):
    """The server could not be reached after the allowed retries."""


class ImapSession:
    def __init__(
        self,
        account: ImapAccount,
        *,
        timeout: float = 60.0,
        name: str = "imap",
        budget: ConnectionBudget | None = None,
        purpose: str = "worker",
        slot_wait: float | None = None,
        sign_in: ImapSignIn | None = None,
    ) -> None:
        """With a `budget`, a connection opens only in a slot of the account's
        connection budget (executor/connection_budget.py), waiting up to
        `slot_wait` seconds (the budget's default when None) for one.
        `sign_in` is shared by the process's sessions (a fresh one otherwise)."""
        self.account = account
        self.sign_in = sign_in or ImapSignIn(account)
        self.timeout = timeout
        self.name = name
        self.client: imapclient.IMAPClient | None = None
        self.capabilities: frozenset[str] = frozenset()
        self.condstore = False
        self.budget = budget
        self.purpose = purpose
        self.slot_wait = slot_wait
        self.slot: Slot | None = None
        self.last_used = time.monotonic()  # the budget closes connections idle too long

    def _connect_blocking(self) -> imapclient.IMAPClient:
        client = imapclient.IMAPClient(
            self.account.host, port=self.account.port, ssl=self.account.ssl, timeout=self.timeout
        )
        client.normalise_times = False  # keep INTERNALDATE time zones
        quiet_protocol_trace(client)
        try:
            self.sign_in.login(client)
        except BaseException:
            _quiet_logout(client)
            raise
        caps = {
            c.decode().upper() if isinstance(c, bytes) else str(c).upper()
            for c in client.capabilities()
        }
        self.capabilities = frozenset(caps)
        self.condstore = False
        if "CONDSTORE" in caps and "ENABLE" in caps:
            try:
                client.enable("CONDSTORE")
                self.condstore = True
            except IMAPClientError:
                log.warning(
                    "%s: CONDSTORE advertised but ENABLE failed; using flag scans", self.name
                )
        return client

    async def connect(self, *, attempts: int = 5, first_delay: float = 0.5) -> None:
        """Connect, backing off between failures (server restarting, network blip)."""
        await self._take_slot()
        try:
            await self._connect(attempts, first_delay)
        except BaseException:
            await self._give_back_slot()
            raise
        self.last_used = time.monotonic()

    async def _take_slot(self) -> None:
        if self.budget is None or (self.slot is not None and not self.slot.lost):
            return
        from executor.connection_budget import BudgetExhausted

        try:
            self.slot = await self.budget.acquire(self.name, self.purpose, timeout=self.slot_wait)
        except BudgetExhausted as exc:
            raise ImapUnavailable(str(exc)) from exc

    async def _give_back_slot(self) -> None:
        slot, self.slot = self.slot, None
        if slot is not None and self.budget is not None:
            await self.budget.release(slot)

    async def _connect(self, attempts: int, first_delay: float) -> None:
        delay = first_delay
        error: BaseException | None = None
        for attempt in range(1, attempts + 1):
            try:
                self.client = await asyncio.to_thread(self._connect_blocking)
                return
            except SignInRequired:
                raise  # only a new sign-in helps: no retry
            except TokenUnavailable as exc:
                error = exc
            except IMAPClientError as exc:
                if (kind := throttle.classify(exc)) is not None:  # Gmail's limits: no quick retry
                    raise throttle.ServerThrottled(kind, str(exc)) from exc
                if "auth" in str(exc).lower() or "login" in str(exc).lower():
                    raise ImapUnavailable(
                        f"IMAP login failed for {self.account.username}: {exc}"
                    ) from exc
                error = exc
            except CONNECTION_ERRORS as exc:
                error = exc
            log.warning("%s: connect attempt %d failed: %s", self.name, attempt, error)
            if attempt < attempts:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
        raise ImapUnavailable(
            f"cannot reach IMAP server {self.account.host}:{self.account.port}: {error}"
        )

    async def ensure(self) -> imapclient.IMAPClient:
        if self.client is None:
            await self.connect()
        assert self.client is not None
        return self.client

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a blocking imapclient call in a thread; drop the connection if it broke."""
        try:
            return await asyncio.to_thread(fn, *args, **kwargs)
        except CONNECTION_ERRORS:
            await self.discard()
            raise
        finally:
            self.last_used = time.monotonic()

    async def leave_folder(self) -> None:
        """Leave the selected state, expunging nothing, so STATUS tells the truth.

        STATUS of the folder a connection has selected answers from that
        session's old view on Dovecot (RFC 3501 §6.3.10 says not to ask it),
        and mutation jobs leave folders selected read-write on this same
        connection. Call this before any STATUS and when a folder is done.
        """
        if self.client is not None:
            await self.call(leave_folder, self.client, "UNSELECT" in self.capabilities)

    async def discard(self) -> None:
        """Log out (quietly) and give the connection's budget slot back."""
        client, self.client = self.client, None
        try:
            if client is not None:
                await asyncio.to_thread(_quiet_logout, client)
        finally:
            await self._give_back_slot()

    @property
    def is_gmail(self) -> bool:
        return "X-GM-EXT-1" in self.capabilities


def leave_folder(client: imapclient.IMAPClient, has_unselect: bool) -> None:
    """Blocking: return the connection to the authenticated state, expunging nothing.

    UNSELECT when offered. Without it, EXAMINE then CLOSE: a mailbox selected
    read-only is closed without expunging (RFC 3501 §6.4.2), whereas CLOSE of
    a folder a mutation selected read-write would expunge its \\Deleted mail.
    """
    if has_unselect:
        try:
            client.unselect_folder()
            return
        except IMAPClientError as exc:
            if "illegal in state" in str(exc):
                return  # nothing selected: imaplib refused locally, nothing was sent
            log.warning("UNSELECT failed (%s); leaving the folder by EXAMINE + CLOSE", exc)
    client.select_folder("INBOX", readonly=True)
    client.close_folder()


def _quiet_logout(client: imapclient.IMAPClient) -> None:
    try:
        client.logout()
    except Exception:  # the connection is being thrown away anyway
        with contextlib.suppress(Exception):
            client.shutdown()
