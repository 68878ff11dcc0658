"""How every IMAP connection signs in (SPEC §9): the one place that knows.

* `password`: LOGIN with IMAP_USERNAME / IMAP_PASSWORD.
* `xoauth2`: AUTHENTICATE XOAUTH2 with an access token from the process's
  `TokenProvider`, shared by all workers and the watcher. The provider caches
  the token with its expiry and refreshes it shortly before it expires (one
  refresh for all callers at once: imapclient runs in threads, so a thread
  lock guards it). When the server refuses a token anyway (revoked at the
  provider, clock skew), the token is refreshed once more and the login tried
  once more.
* A refresh the provider refuses (invalid_grant: revoked or expired refresh
  token, a wrong client) raises `SignInRequired`, whose message says how to
  sign in again; jobs end `failed` with it and are not retried, and the same
  dead refresh token is never sent again (a new sign-in is picked up at the
  next refresh, without a restart). An unreachable token endpoint raises
  `TokenUnavailable`, which the session retries like an unreachable server.

Nothing here logs or raises a token, a password or a client secret.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import imapclient
from imapclient.exceptions import LoginError
from pydantic import SecretStr

from app.config import ImapAccount
from app.oauth2 import grants
from app.oauth2.providers import GOOGLE_TOKEN_URL, provider_of_token_url, resolve_token_url
from app.oauth2.store import (
    SignInFileError,
    StoredSignIn,
    load_sign_in,
    now_iso,
    save_sign_in,
    token_path,
    update_status,
)
from executor import throttle

log = logging.getLogger("executor.imap_auth")

# Refresh this long before expiry (at most a quarter of the token's lifetime).
REFRESH_MARGIN = 60.0


class SignInRequired(Exception):
    """Only a new sign-in helps; the message says how. Jobs fail with it at once."""


class TokenUnavailable(Exception):
    """The token endpoint could not be reached or gave no usable answer; try later."""


def sign_in_advice(provider: str) -> str:
    if provider in ("google", "microsoft"):
        return f"run `secretary auth {provider}`"
    return "run `secretary auth other --auth-url URL --token-url URL --scope SCOPE`"


@dataclass(frozen=True)
class _Grant:
    """Where the next refresh comes from (resolved at each refresh)."""

    refresh_token: SecretStr
    origin: str  # "IMAP_OAUTH2_REFRESH_TOKEN" or the token file's path
    client_id: str
    client_secret: SecretStr | None
    token_url: str
    stored: StoredSignIn | None  # the file's sign-in, when the token came from it

    @property
    def provider(self) -> str:
        if self.stored is not None and self.stored.token_url == self.token_url:
            return self.stored.provider
        return provider_of_token_url(self.token_url)


def _fingerprint(secret: SecretStr) -> str:
    return hashlib.sha256(secret.get_secret_value().encode()).hexdigest()


class TokenProvider:
    """Access tokens for one account, cached and refreshed (module docstring)."""

    def __init__(
        self, account: ImapAccount, data_dir: Path, *, margin: float = REFRESH_MARGIN
    ) -> None:
        self.account = account
        self.data_dir = Path(data_dir)
        self.margin = margin
        self._lock = threading.Lock()
        self._token: SecretStr | None = None
        self._valid_until = 0.0
        self._static_refused = False
        self._dead: str | None = None  # fingerprint of a refresh token the provider refused
        self._rotated: tuple[str, SecretStr] | None = None  # (old fingerprint, newer token)
        self.refreshes = 0  # successful refreshes (tests, health)

    @property
    def static(self) -> bool:
        """An access token managed outside (IMAP_OAUTH2_ACCESS_TOKEN): never refreshed."""
        return self.account.oauth2_access_token is not None

    def access_token(self) -> str:
        """Blocking: a token valid for a while yet, refreshed first when needed."""
        with self._lock:
            static = self.account.oauth2_access_token
            if static is not None:
                if self._static_refused:
                    raise SignInRequired(
                        f"sign in again: the server refused IMAP_OAUTH2_ACCESS_TOKEN for "
                        f"{self.account.username}; set a fresh token and restart the executor, "
                        "or unset it and use a refresh token (`secretary auth google`)"
                    )
                return static.get_secret_value()
            if self._token is None or time.time() >= self._valid_until:
                self._refresh()
            assert self._token is not None
            return self._token.get_secret_value()

    def rejected(self, token: str) -> None:
        """The server refused `token`: the next `access_token()` refreshes.

        Callers that saw the same token refused share one refresh: only the
        token still cached is dropped.
        """
        with self._lock:
            if self.account.oauth2_access_token is not None:
                self._static_refused = True
            elif self._token is not None and self._token.get_secret_value() == token:
                self._token = None

    # -- refreshing (called with the lock held) ----------------------------------

    def _grant(self) -> _Grant:
        a = self.account
        try:
            stored = load_sign_in(self.data_dir)
        except SignInFileError as exc:
            if a.oauth2_refresh_token is None:
                raise SignInRequired(f"sign in again: {exc}; {sign_in_advice('google')}") from None
            stored = None
        if a.oauth2_refresh_token is not None:
            refresh_token, origin = a.oauth2_refresh_token, "IMAP_OAUTH2_REFRESH_TOKEN"
            stored_for_rotation = None
        elif stored is not None:
            refresh_token, origin = stored.refresh_token, str(token_path(self.data_dir))
            stored_for_rotation = stored
        else:
            raise SignInRequired(
                f"sign in again: no refresh token for {a.username} "
                f"(set IMAP_OAUTH2_REFRESH_TOKEN, or {sign_in_advice('google')} "
                f"or `secretary auth microsoft`)"
            )
        token_url = a.oauth2_token_url or (stored.token_url if stored else GOOGLE_TOKEN_URL)
        return _Grant(
            refresh_token=refresh_token,
            origin=origin,
            client_id=a.oauth2_client_id or (stored.client_id if stored else ""),
            client_secret=a.oauth2_client_secret or (stored.client_secret if stored else None),
            token_url=resolve_token_url(token_url),
            stored=stored_for_rotation,
        )

    def _refresh(self) -> None:
        grant = self._grant()
        refresh_token = grant.refresh_token
        fingerprint = _fingerprint(refresh_token)
        if self._rotated is not None and self._rotated[0] == fingerprint:
            refresh_token = self._rotated[1]  # the provider rotated it; use the newer one
            fingerprint = _fingerprint(refresh_token)
        advice = sign_in_advice(grant.provider)
        if fingerprint == self._dead:
            raise SignInRequired(
                f"sign in again: the refresh token from {grant.origin} was refused earlier; {advice}"
            )
        try:
            issued = grants.refresh(
                grant.token_url, refresh_token, grant.client_id, grant.client_secret
            )
        except grants.GrantRefused as exc:
            self._dead = fingerprint
            self._token = None
            unnamed = "" if grant.client_id else ", IMAP_OAUTH2_CLIENT_ID not set"
            message = (
                f"sign in again: the token endpoint refused the refresh token from "
                f"{grant.origin} ({exc}{unnamed}); {advice}"
            )
            log.error("account %s: %s", self.account.username, message)
            self._record(grant, last_error=str(exc), last_error_at=now_iso())
            raise SignInRequired(message) from None
        except grants.GrantUnavailable as exc:
            raise TokenUnavailable(f"cannot refresh the access token: {exc}") from None
        self.refreshes += 1
        self._token = issued.access_token
        self._valid_until = issued.expires_at - min(self.margin, issued.lifetime / 4)
        if issued.refresh_token is not None and _fingerprint(issued.refresh_token) != fingerprint:
            self._keep_rotated(grant, issued.refresh_token)
        expires = datetime.fromtimestamp(issued.expires_at, UTC).isoformat(timespec="seconds")
        log.info(
            "account %s: access token refreshed (valid until %s)", self.account.username, expires
        )
        self._record(
            grant,
            last_refreshed_at=now_iso(),
            access_token_expires_at=expires,
            refreshed_by=f"{socket.gethostname()}:{os.getpid()}",
            last_error=None,
            last_error_at=None,
        )

    def _keep_rotated(self, grant: _Grant, newer: SecretStr) -> None:
        """Some providers (Entra) issue a new refresh token with each refresh."""
        self._rotated = (_fingerprint(grant.refresh_token), newer)
        if grant.stored is not None:
            try:
                save_sign_in(self.data_dir, dataclasses.replace(grant.stored, refresh_token=newer))
                self._rotated = None
            except OSError as exc:
                log.warning("could not store the rotated refresh token: %s", exc.strerror)

    def _record(self, grant: _Grant, **status: object) -> None:
        """Note the refresh in the status file (`secretary auth status`); never fatal."""
        try:
            update_status(
                self.data_dir,
                account=self.account.username,
                provider=grant.provider,
                token_url=grant.token_url,
                refresh_token_from=grant.origin,
                **status,
            )
        except OSError as exc:
            log.warning("could not write the sign-in status: %s", exc.strerror)


class ImapSignIn:
    """Signs a fresh connection in, by the account's `IMAP_AUTH`."""

    def __init__(self, account: ImapAccount, data_dir: Path = Path(".data")) -> None:
        self.account = account
        self.tokens = TokenProvider(account, data_dir) if account.auth == "xoauth2" else None

    def login(self, client: imapclient.IMAPClient) -> None:
        """Blocking. Raises LoginError (password refused), SignInRequired, TokenUnavailable."""
        user = self.account.username
        if self.tokens is None:
            client.login(user, self.account.password)
            return
        token = self.tokens.access_token()
        try:
            client.oauth2_login(user, token)
            return
        except LoginError as exc:
            if throttle.classify(exc):
                raise  # a server limit, not a bad token (executor/throttle.py)
            log.warning(
                "account %s: the server refused the access token (%s); refreshing and trying once more",
                user,
                exc,
            )
            self.tokens.rejected(token)
        token = self.tokens.access_token()
        try:
            client.oauth2_login(user, token)
        except LoginError as exc:
            if throttle.classify(exc):
                raise
            raise SignInRequired(
                f"sign in again: the server refused a fresh access token for {user} ({exc}); "
                "check IMAP_USERNAME and that the sign-in allowed IMAP "
                "(scope https://mail.google.com/ or IMAP.AccessAsUser.All)"
            ) from None
