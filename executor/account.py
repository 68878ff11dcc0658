"""Which IMAP account this executor works on: the configured one, and only that.

There is deliberately no fallback to the demo's address: an executor started
without `IMAP_HOST` outside `secretary run` (which passes the demo account in
the environment) must not quietly work on some other mailbox.
"""

from __future__ import annotations

from app.config import ImapAccount, Settings


class NoAccountConfigured(RuntimeError):
    pass


def configured_account(settings: Settings) -> ImapAccount:
    if settings.imap is None:
        raise NoAccountConfigured(
            "no IMAP account configured: set IMAP_HOST, IMAP_USERNAME and IMAP_PASSWORD "
            "(or start the demo with `secretary run`, which passes its account to the executor)"
        )
    return settings.imap
