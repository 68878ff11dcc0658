"""Whether a message mentions the person, for the part of it never downloaded.

Sync fetches a prefix of each message (`BODY.PEEK[]<0.N>`), so a mention past
the cut is invisible to the parser. For those messages only, the fetching
thread asks the server, once per batch:

    UID SEARCH [CHARSET UTF-8] UID <truncated uids> OR BODY "alex" OR BODY "roy" ...

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

import dataclasses
import hashlib
import logging
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
    client: imapclient.IMAPClient, uids: Sequence[int], terms: Sequence[str]
) -> tuple[set[int], bool]:
    """(UIDs whose body holds a term, whether a UID not among them is a sure "no").

    Blocking; the folder must be selected. Non-ASCII terms need CHARSET UTF-8;
    a server that refuses it is asked again with the ASCII terms only, and then
    a miss proves nothing (some terms went unasked).
    """
    if not uids or not terms:
        return set(), True
    wanted = set(uids)
    ascii_terms = [t for t in terms if t.isascii()]
    attempts: list[tuple[list[str], str | None]] = []
    if len(ascii_terms) < len(terms):
        attempts.append((list(terms), "UTF-8"))
    if ascii_terms:
        attempts.append((ascii_terms, None))
    for asked, charset in attempts:
        try:
            found = client.search(["UID", uid_set(uids), *body_criteria(asked)], charset=charset)
        except IMAPClientAbortError:
            raise  # the connection is gone: the job retries
        except IMAPClientError as exc:
            log.warning("server refused the mention search (%s): %s", charset or "ASCII", exc)
            continue
        return {int(u) for u in found} & wanted, len(asked) == len(terms)
    return set(), False


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
        self, client: imapclient.IMAPClient, raws: Sequence[RawMessage]
    ) -> list[RawMessage]:
        """Blocking: the truncated messages of a batch, with the server's verdict."""
        cut = [r.uid for r in raws if r.truncated]
        if self.identity is None or not cut:
            return list(raws)
        hits, conclusive = server_mentions(client, cut, self.identity.search_terms())
        return [
            dataclasses.replace(
                r, server_mentions=True if r.uid in hits else (False if conclusive else None)
            )
            if r.truncated
            else r
            for r in raws
        ]

    def fetch(
        self,
        fetch: Callable[..., tuple[list[RawMessage], T]],
        fetcher: Any,
        *args: Any,
    ) -> tuple[list[RawMessage], T]:
        """Blocking: `fetch(fetcher, *args)` then `ask_server`, on the same
        connection and in the same thread (a worker's calls never interleave)."""
        raws, problems = fetch(fetcher, *args)
        client = getattr(fetcher, "client", fetcher)
        return self.ask_server(client, raws), problems


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
