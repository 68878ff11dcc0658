"""Whether a message mentions the person, for the part of it never downloaded.

Sync fetches the header fields it reads and a prefix of each body (`BODY.PEEK[TEXT]<0.N>`), so
a mention past the cut is invisible to the parser. For those messages only, the
fetching thread asks the server:

    UID SEARCH [CHARSET UTF-8] UID <truncated uids> OR BODY "alex" OR BODY "roy" ...

once per batch, or, in a sync, once for the next stretch of UIDs the
connection will fetch (`SearchAhead`: one round trip where there were up to ten).

BODY, not TEXT: TEXT also searches the header, and `Delivered-To:` holds the
person's address in nearly every message. The server decodes MIME and
matches case-insensitive substrings, so a hit may be "Royal" for "Roy": that
errs towards "mentions you", the safe side. A server that refuses the search
leaves the verdict unknown (None), which `/clean` excludes as well.

This costs no download at all, which matters where the daily IMAP download is
capped (Gmail): nothing here depends on fetching whole messages.

`enqueue_rescore_if_stale` starts the `rescore` job when mirror rows carry a
verdict for another identity (the configured identity changed, or the
matching rules did: `MATCHER_VERSION`).
"""

from __future__ import annotations

import bisect
import dataclasses
import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, TypeVar

import imapclient
from imapclient.exceptions import IMAPClientAbortError, IMAPClientError

from app.db.queries import query
from app.jobs.models import Job, JobType
from app.jobs.store import JobStore
from app.mail.identity import Identity
from app.mail.scores import SCORES_VERSION
from executor import mirror_writes as mirror
from executor.parsing import RawMessage

log = logging.getLogger(__name__)

# Off only for measuring what the check costs (bench/sync.py): then rows are
# stored unchecked (NULL), which /clean treats as "mentions you".
ENABLED = True

T = TypeVar("T")


def uid_set(uids: Sequence[int]) -> str:
    """`1:3,7,9:10` for [1, 2, 3, 7, 9, 10]: short, whatever the batch."""
    ordered = sorted(set(uids))
    spans: list[str] = []
    start = prev = ordered[0]
    for uid in ordered[1:]:
        if uid == prev + 1:
            prev = uid
            continue
        spans.append(f"{start}:{prev}" if prev > start else str(start))
        start = prev = uid
    spans.append(f"{start}:{prev}" if prev > start else str(start))
    return ",".join(spans)


def body_criteria(terms: Sequence[str]) -> list[str]:
    """`OR BODY a OR BODY b BODY c`: IMAP's OR takes exactly two keys."""
    criteria: list[str] = []
    for term in terms[:-1]:
        criteria += ["OR", "BODY", term]
    return criteria + ["BODY", terms[-1]]


def server_mentions(
    client: imapclient.IMAPClient,
    uids: Sequence[int],
    terms: Sequence[str],
    *,
    scope: Sequence[str] | None = None,
) -> tuple[set[int], bool]:
    """(UIDs whose body holds a term, whether a UID not among them is a sure "no").

    Blocking; the folder must be selected. Non-ASCII terms need CHARSET UTF-8;
    a server that refuses it is asked again with the ASCII terms only, and then
    a miss proves nothing (some terms went unasked). `scope` asks about the
    messages those search keys match instead of `uids` (a search ahead).
    """
    if (not uids and scope is None) or not terms:
        return set(), True
    keys = list(scope) if scope is not None else ["UID", uid_set(uids)]
    ascii_terms = [t for t in terms if t.isascii()]
    attempts: list[tuple[list[str], str | None]] = []
    if len(ascii_terms) < len(terms):
        attempts.append((list(terms), "UTF-8"))
    if ascii_terms:
        attempts.append((ascii_terms, None))
    for asked, charset in attempts:
        try:
            found = client.search([*keys, *body_criteria(asked)], charset=charset)
        except IMAPClientAbortError:
            raise  # the connection is gone: the job retries
        except IMAPClientError as exc:
            log.warning("server refused the mention search (%s): %s", charset or "ASCII", exc)
            continue
        hits = {int(u) for u in found}
        return hits if scope is not None else hits & set(uids), len(asked) == len(terms)
    return set(), False


# How far one search looks ahead, in a connection's planned UIDs. It starts at
# two batches and doubles while searches come back quickly, up to ten batches:
# a far-away server is then asked once where it was asked up to ten times. A
# search that takes long (a server without a text index, over big attachments)
# shrinks the next one, so no single command grows towards the socket timeout.
AHEAD_FIRST = 400
AHEAD_MOST = 2000
AHEAD_SECONDS = 1.0


@dataclass
class SearchAhead:
    """One connection's answers for the long messages it is about to fetch.

    Asking the server after every batch that holds a cut message costs a round
    trip per batch (40 ms and more to a far-away server), for nearly every
    batch of a real mailbox. So the first batch that needs the server asks for
    a stretch of the connection's next planned UIDs at once,

        UID SEARCH UID lo:hi LARGER <half the prefix> OR BODY "alex" BODY "roy"

    and the batches after it find their answers here. A message's text never
    changes under its UID, so the answer holds until it is fetched.

    Only what the search surely covered is answered: a UID inside lo:hi whose
    size, as the server gave it in the FETCH, is over `larger`. The search
    asks for LARGER half that: RFC 3501 has LARGER compare RFC822.SIZE, but a
    server that compared the size on its disk (LF line ends, down to half)
    would still cover every such message. A hit is a hit; a miss counts only if
    the search was conclusive. Anything else is asked per batch, as before, so
    a server that sizes or searches oddly costs round trips, never a wrong "no".

    `planned` is the UIDs the connection will fetch, ascending (a serial pass's
    new UIDs, or one UID range of a split pass: `lo:hi` then names no UID that
    another connection fetches). Used by one fetching thread at a time.
    """

    planned: Sequence[int]
    larger: int
    window: int = AHEAD_FIRST
    most: int = AHEAD_MOST
    lo: int = 0
    hi: int = -1
    hits: set[int] = dataclasses.field(default_factory=set)
    conclusive: bool = False
    searches: int = 0

    def _covers(self, raw: RawMessage) -> bool:
        return self.lo <= raw.uid <= self.hi and raw.size is not None and raw.size > self.larger

    def _ask(
        self, client: imapclient.IMAPClient, wanted: Sequence[int], terms: Sequence[str]
    ) -> None:
        """Search the stretch from the first wanted UID: `window` planned UIDs,
        and at least up to the last wanted one (the batch at hand)."""
        first, last = min(wanted), max(wanted)
        start = bisect.bisect_left(self.planned, first)
        stretch = self.planned[start : start + self.window]
        self.lo = min(first, stretch[0]) if stretch else first
        self.hi = max(last, stretch[-1]) if stretch else last
        scope = ["UID", f"{self.lo}:{self.hi}", "LARGER", str(self.larger // 2)]
        began = time.monotonic()
        self.hits, self.conclusive = server_mentions(client, (), terms, scope=scope)
        took = max(time.monotonic() - began, 1e-3)
        self.window = max(1, min(self.most, int(self.window * min(2.0, AHEAD_SECONDS / took))))
        self.searches += 1

    def verdicts(
        self, client: imapclient.IMAPClient, cut: Sequence[RawMessage], terms: Sequence[str]
    ) -> dict[int, bool]:
        """Blocking: the sure verdicts for these truncated messages, asking the
        server about the next stretch when one of them lies beyond the last."""
        sized = [r for r in cut if r.size is not None and r.size > self.larger]
        beyond = [r.uid for r in sized if not self._covers(r)]
        if beyond:
            self._ask(client, beyond, terms)
        return {
            r.uid: r.uid in self.hits
            for r in sized
            if self._covers(r) and (self.conclusive or r.uid in self.hits)
        }


@dataclass(frozen=True)
class MentionCheck:
    """What a fetch-and-parse needs to decide "mentions you": the identity (None:
    the check is off) and the terms for the server."""

    identity: Identity | None

    @classmethod
    def from_settings(cls, settings: Any) -> MentionCheck:
        return cls(Identity.from_settings(settings) if ENABLED else None)

    @property
    def fingerprint(self) -> str | None:
        return self.identity.fingerprint if self.identity is not None else None

    def ask_server(
        self,
        client: imapclient.IMAPClient,
        raws: Sequence[RawMessage],
        ahead: SearchAhead | None = None,
    ) -> list[RawMessage]:
        """Blocking: the truncated messages of a batch, with the server's verdict
        (from `ahead` where it has a sure one, else from a search of their own)."""
        cut = [r for r in raws if r.truncated]
        if self.identity is None or not cut:
            return list(raws)
        terms = self.identity.search_terms()
        known = ahead.verdicts(client, cut, terms) if ahead is not None else {}
        rest = [r.uid for r in cut if r.uid not in known]
        hits, conclusive = server_mentions(client, rest, terms) if rest else (set(), True)

        def verdict(uid: int) -> bool | None:
            if uid in known:
                return known[uid]
            return True if uid in hits else (False if conclusive else None)

        return [
            dataclasses.replace(r, server_mentions=verdict(r.uid)) if r.truncated else r
            for r in raws
        ]

    def fetch(
        self,
        fetch: Callable[..., tuple[list[RawMessage], T]],
        fetcher: Any,
        *args: Any,
        ahead: SearchAhead | None = None,
    ) -> tuple[list[RawMessage], T]:
        """Blocking: `fetch(fetcher, *args)` then `ask_server`, on the same
        connection and in the same thread (a worker's calls never interleave)."""
        raws, problems = fetch(fetcher, *args)
        client = getattr(fetcher, "client", fetcher)
        return self.ask_server(client, raws, ahead), problems


def rescore_key(
    fingerprint: str,
    stale: mirror.StaleMentions,
    day: date,
    scores: mirror.StaleScores | None = None,
) -> str:
    """One rescore job per identity, set of stale rows and day: rows a finished
    job could not reach (a folder it could not open) do not start another job
    at every sync, a job that failed is tried again the next day, and a change
    back to an earlier identity, or new stale rows, start a new one at once.
    Rows whose scores are stale (rules version, flags) count as stale rows too."""
    summary = f"{stale.count}:{stale.max_id}:{','.join(stale.fingerprints)}:{day.isoformat()}"
    if scores is not None and scores.count:
        summary += f":scores:{SCORES_VERSION}:{scores.count}:{scores.max_id}"
    return f"rescore:{fingerprint}:{hashlib.sha256(summary.encode()).hexdigest()[:12]}"


async def enqueue_rescore_if_stale(store: JobStore, identity: Identity) -> Job | None:
    """Start (idempotently) a `rescore` job when mirror rows hold a verdict that was
    not decided against `identity`. Cheap when nothing is stale: one indexed query.

    Called at the start of every sync job; an executor could also call it once
    at start-up (executor/app.py run()).
    """
    fingerprint = identity.fingerprint
    async with store.pool.connection() as conn:
        stale = await mirror.stale_mentions(conn, fingerprint)
        scores = await mirror.stale_scores(conn)
        if not stale.count and not scores.count:
            return None
        active = await (await conn.execute(query("active_rescore"))).fetchone()
    if active is not None:
        return await store.get(active["job_id"])
    return await store.enqueue(
        JobType.RESCORE,
        {"fingerprint": fingerprint},
        idempotency_key=rescore_key(fingerprint, stale, datetime.now(UTC).date(), scores),
        total_estimate=stale.count + scores.count,
    )
