"""One worker's IMAP connection: connect with backoff, run calls off the event loop.

imapclient is synchronous, so every call goes through `asyncio.to_thread`; a
worker never shares its connection, so calls never interleave.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Callable
from typing import Any, TypeVar

import imapclient
from imapclient.exceptions import IMAPClientAbortError, IMAPClientError

from app.config import ImapAccount

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


class ImapUnavailable(Exception):
    """The server could not be reached after the allowed retries."""


class ImapSession:
    def __init__(self, account: ImapAccount, *, timeout: float = 60.0, name: str = "imap") -> None:
        self.account = account
        self.timeout = timeout
        self.name = name
        self.client: imapclient.IMAPClient | None = None
        self.capabilities: frozenset[str] = frozenset()
        self.condstore = False

    def _connect_blocking(self) -> imapclient.IMAPClient:
        client = imapclient.IMAPClient(
            self.account.host, port=self.account.port, ssl=self.account.ssl, timeout=self.timeout
        )
        client.normalise_times = False  # keep INTERNALDATE time zones
        client.login(self.account.username, self.account.password)
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
        delay = first_delay
        for attempt in range(1, attempts + 1):
            try:
                self.client = await asyncio.to_thread(self._connect_blocking)
                return
            except IMAPClientError as exc:
                if "auth" in str(exc).lower() or "login" in str(exc).lower():
                    raise ImapUnavailable(
                        f"IMAP login failed for {self.account.username}: {exc}"
                    ) from exc
                error: BaseException = exc
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

    async def discard(self) -> None:
        client, self.client = self.client, None
        if client is not None:
            await asyncio.to_thread(_quiet_logout, client)

    @property
    def is_gmail(self) -> bool:
        return "X-GM-EXT-1" in self.capabilities


def _quiet_logout(client: imapclient.IMAPClient) -> None:
    try:
        client.logout()
    except Exception:  # the connection is being thrown away anyway
        with contextlib.suppress(Exception):
            client.shutdown()
