"""Server limits (SPEC §9): Gmail's "too many connections" and bandwidth errors.

Gmail refuses a login past about 15 connections per account (`* BYE [ALERT]
Too many simultaneous connections. (Failure)`, or NO at LOGIN), and answers
commands with `[OVERQUOTA] Account exceeded command or bandwidth limits` once
the daily IMAP download (2,500 MB) or command budget is used up. Neither is
fixed by trying again at once, and neither is the job's fault. So such an
error becomes `ServerThrottled`, and the worker hands the job back: pending
again after a growing backoff, its attempt *not* spent (a bounded number of
times, `MAX_BACKOFFS`; past that it is an ordinary transient failure that
spends attempts), with a warning event that says which limit was hit.
Handing back rather than sleeping in the worker: a bandwidth limit lasts
hours, and a held lease would only keep other executors from the job.
"""

from __future__ import annotations

CONNECTIONS = "connections"
BANDWIDTH = "bandwidth"

# How often one job may be handed back for a limit before it spends attempts.
MAX_BACKOFFS = 6
# Seconds before the n-th hand-back (0-based) runs again; tests shrink these.
BACKOFF_BASE = {CONNECTIONS: 15.0, BANDWIDTH: 300.0}
BACKOFF_MAX = 3600.0

_CONNECTION_MARKERS = ("too many simultaneous connections", "too many connections")
_BANDWIDTH_MARKERS = (
    "exceeded command or bandwidth",
    "bandwidth limit",
    "[throttled]",
)


class ServerThrottled(Exception):
    """The server refused for a limit; `kind` is CONNECTIONS or BANDWIDTH."""

    def __init__(self, kind: str, detail: str) -> None:
        self.kind = kind
        self.detail = detail
        super().__init__(f"{describe(kind)}: {detail}")


def classify(exc: BaseException, *, gmail: bool = True) -> str | None:
    """CONNECTIONS, BANDWIDTH or None, from an error and the errors behind it.

    `[OVERQUOTA]` alone means "over the mailbox quota" on other servers (a
    full mailbox, RFC 5530), which backing off does not fix: it counts as a
    bandwidth limit only on Gmail.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        text = str(current).lower()
        if any(m in text for m in _CONNECTION_MARKERS):
            return CONNECTIONS
        if any(m in text for m in _BANDWIDTH_MARKERS) or (gmail and "[overquota]" in text):
            return BANDWIDTH
        current = current.__cause__ or current.__context__
    return None


def describe(kind: str) -> str:
    if kind == CONNECTIONS:
        return "the server refused a connection: too many simultaneous connections"
    return "the server says the account exceeded its command or bandwidth limits"


def backoff(kind: str, previous: int) -> float:
    """Seconds to wait after `previous` earlier hand-backs of the same job."""
    return min(BACKOFF_MAX, BACKOFF_BASE.get(kind, 60.0) * 2**previous)
