"""Which IMAP account this executor works on: the configured one, and only that.

There is deliberately no fallback to the demo's address: an executor started
without `IMAP_HOST` outside `secretary run` (which passes the demo account in
the environment) must not quietly work on some other mailbox. The check runs
before the executor touches the database or the network.
"""

from __future__ import annotations

import logging

from app.config import ImapAccount, Settings
from app.oauth2.store import SignInFileError, load_sign_in, token_path

log = logging.getLogger("executor")


class NoAccountConfigured(RuntimeError):
    """The settings name no usable IMAP account; the message says what to set."""


def configured_account(settings: Settings) -> ImapAccount:
    account = settings.imap
    if account is None:
        raise NoAccountConfigured(
            "no IMAP account configured: set IMAP_HOST, IMAP_USERNAME and IMAP_PASSWORD "
            "(or start the demo with `secretary run`, which passes its account to the executor)"
        )
    if not account.username.strip():
        # Every sign-in (password or XOAUTH2) needs a user name; without one
        # each job would fail at login, one retry after another.
        raise NoAccountConfigured(
            f"IMAP_HOST is set ({account.host}) but IMAP_USERNAME is empty: set the account's user name"
        )
    if account.auth == "xoauth2":
        check_oauth2_sign_in(settings, account)
    return account


def check_oauth2_sign_in(settings: Settings, account: ImapAccount) -> None:
    """IMAP_AUTH=xoauth2 needs an access token, or a refresh token and a client
    to refresh it with, from the settings or from `secretary auth`'s file."""
    if account.oauth2_access_token is not None:
        return
    path = token_path(settings.data_dir)
    try:
        stored = load_sign_in(settings.data_dir)
    except SignInFileError as exc:
        if account.oauth2_refresh_token is None:
            raise NoAccountConfigured(
                f"IMAP_OAUTH2_REFRESH_TOKEN: not set, and {exc}; sign in again with "
                "`secretary auth google` (or `microsoft`)"
            ) from None
        stored = None
    if account.oauth2_refresh_token is None and stored is None:
        raise NoAccountConfigured(
            "IMAP_OAUTH2_REFRESH_TOKEN: IMAP_AUTH=xoauth2 needs a refresh token: run "
            f"`secretary auth google` (or `microsoft`) to store one in {path}, "
            "or set IMAP_OAUTH2_REFRESH_TOKEN, or IMAP_OAUTH2_ACCESS_TOKEN for a token managed outside"
        )
    if not (account.oauth2_client_id or (stored is not None and stored.client_id)):
        # RFC 6749 lets a public client refresh without naming itself, so this is
        # not fatal; Google and Entra do want it, and would refuse the refresh.
        log.warning(
            "IMAP_OAUTH2_CLIENT_ID is not set: most providers refuse a refresh without the "
            "client id the refresh token was issued to (and IMAP_OAUTH2_CLIENT_SECRET if it has one)"
        )
