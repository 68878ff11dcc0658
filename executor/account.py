"""Which IMAP account this executor works on: the configured one, and only that.

There is deliberately no fallback to the demo's address: an executor started
without `IMAP_HOST` outside `secretary run` (which passes the demo account in
the environment) must not quietly work on some other mailbox. The check runs
before the executor touches the database or the network.
"""

from __future__ import annotations

from app.config import ImapAccount, Settings


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
    return account
