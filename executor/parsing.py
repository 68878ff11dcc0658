"""MIME parsing off the event loop and across processes.

Parsing is the CPU-heavy part of a sync (the email package is pure Python),
so batches big enough to pay for it are parsed in a small process pool while
the worker fetches the next batch and writes the previous one.

Parsing also decides whether each message mentions the person: the identity
(a small frozen dataclass) travels to the pool with each chunk. For a message
the prefix fetch cut short, the server's answer to `SEARCH BODY` (asked by the
fetching thread, see executor/mentions.py) covers the part never downloaded.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from app.mail.identity import Identity
from app.mail.mime import ParsedMessage, parse_message
from app.mail.scores import Scores, score_row
from executor.mirror_writes import EncodedRows, FetchedMessage, encode_rows

log = logging.getLogger(__name__)
MIN_PARALLEL_BATCH = 64


@dataclass(frozen=True)
class RawMessage:
    uid: int
    flags: tuple[str, ...]
    internal_date: datetime | None
    size: int | None
    modseq: int | None
    body: bytes
    # The server's `SEARCH BODY` verdict for the person's name and addresses,
    # asked only for truncated messages; None = not asked, or the server failed.
    server_mentions: bool | None = None
    # Gmail mode (executor/gmail.py): X-GM-MSGID, X-GM-THRID, X-GM-LABELS; None elsewhere.
    gm_msgid: int | None = None
    gm_thrid: int | None = None
    gm_labels: tuple[str, ...] | None = None
    # Whether the body was cut at the fetch's prefix (None: not known). The sync
    # fetches only the header fields it reads, so `size` no longer tells.
    cut: bool | None = None

    @property
    def truncated(self) -> bool:
        """Part of the body was not fetched (or that is not known)."""
        if self.cut is not None:
            return self.cut
        return self.size is None or self.size > len(self.body)


def mention_verdict(local: bool | None, raw: RawMessage) -> bool | None:
    """Whole-message verdict: the parse of what was fetched, plus the server's
    search of what was not. Unknown stays unknown (None), which /clean excludes."""
    if local is True or not raw.truncated:
        return local
    if raw.server_mentions is None:
        return None
    # The server searched the whole message, decoded, as a substring: its
    # "no" covers what the prefix did not hold (or could not be read).
    return raw.server_mentions


def parse_raw(
    raws: Sequence[RawMessage], identity: Identity | None = None
) -> tuple[list[FetchedMessage], list[dict[str, Any]]]:
    """Parse a batch; one bad message is a problem entry, never an exception.

    The whole batch is parsed first and scored after, rather than message by
    message: each loop then keeps its own code and data warm in the CPU's
    caches (1-10% less CPU per message in three runs here). Rows and
    problems come out in the same order either way."""
    fetched: list[FetchedMessage] = []
    problems: list[dict[str, Any]] = []
    fingerprint = identity.fingerprint if identity is not None else None
    results: list[ParsedMessage | Exception] = []
    for raw in raws:
        try:
            results.append(parse_message(raw.body, identity=identity))
        except Exception as exc:  # parse_message should not raise; belt and braces
            results.append(exc)
    for raw, parsed in zip(raws, results, strict=True):
        if isinstance(parsed, Exception):
            problems.append(
                {"uid": raw.uid, "problem": f"skipped: {type(parsed).__name__}: {parsed}"}
            )
            continue
        mentions = mention_verdict(parsed.mentions_you, raw) if identity is not None else None
        fetched.append(
            FetchedMessage(
                uid=raw.uid,
                flags=raw.flags,
                internal_date=raw.internal_date,
                size=raw.size,
                modseq=raw.modseq,
                parsed=parsed,
                mentions_you=mentions,
                mention_identity=fingerprint,
                scores=(
                    _scores(parsed, raw, mentions, identity, problems)
                    if identity is not None
                    else None
                ),
                gm_msgid=raw.gm_msgid,
                gm_thrid=raw.gm_thrid,
                gm_labels=raw.gm_labels,
            )
        )
        if parsed.problems:
            problems.append({"uid": raw.uid, "problem": "; ".join(parsed.problems)})
    return fetched, problems


@dataclass(frozen=True)
class ParsedBatch:
    """What a parse process sends back for a fetched batch: its mirror rows,
    encoded, and the problems met. Small to pickle (one JSON document), so the
    process that fetches spends next to nothing per message on it."""

    rows: EncodedRows
    problems: list[dict[str, Any]]


def parse_batch(
    raws: Sequence[RawMessage], identity: Identity | None, folder: str, uidvalidity: int
) -> ParsedBatch:
    """Parse, decide "mentions you", score and encode a batch (a parse process)."""
    fetched, problems = parse_raw(raws, identity)
    return ParsedBatch(encode_rows(folder, uidvalidity, fetched), problems)


class _RowView:
    """A parsed message as its mirror row will read (what the scoring rules see).

    A plain class with slots rather than a frozen dataclass: it lives for one
    `score_row` call, and a frozen dataclass's __init__ costs a call per field."""

    __slots__ = (
        "from_addr",
        "to_addrs",
        "cc_addrs",
        "subject",
        "body_excerpt",
        "flags",
        "date",
        "list_unsubscribe",
        "list_id",
        "precedence",
        "auto_submitted",
        "mentions_you",
        "mention_identity",
    )

    def __init__(
        self,
        parsed: ParsedMessage,
        flags: tuple[str, ...],
        mentions_you: bool | None,
        mention_identity: str | None,
    ) -> None:
        self.from_addr = parsed.from_addr
        self.to_addrs = parsed.to_addrs
        self.cc_addrs = parsed.cc_addrs
        self.subject = parsed.subject
        self.body_excerpt = parsed.body_excerpt
        self.flags = flags
        self.date = parsed.date
        self.list_unsubscribe = parsed.list_unsubscribe
        self.list_id = parsed.list_id
        self.precedence = parsed.precedence
        self.auto_submitted = parsed.auto_submitted
        self.mentions_you = mentions_you
        self.mention_identity = mention_identity


def _scores(
    parsed: ParsedMessage,
    raw: RawMessage,
    mentions: bool | None,
    identity: Identity,
    problems: list[dict[str, Any]],
) -> Scores | None:
    """Triage and /clean verdict for the row about to be written. A rule that
    fails on odd input leaves the row unscored (stale: never a candidate)
    rather than failing the batch."""
    view = _RowView(parsed, raw.flags, mentions, identity.fingerprint)
    try:
        return score_row(view, identity)
    except Exception as exc:  # belt and braces: the rules are pure and total
        problems.append({"uid": raw.uid, "problem": f"not scored: {type(exc).__name__}: {exc}"})
        return None


def _exit_with(owner: int) -> None:
    """Parse workers end when the executor that started them is gone: after a
    kill -9 nothing tells them (their parent is the forkserver), and each would
    otherwise hold ~70 MB for good."""

    def watch() -> None:
        while True:
            time.sleep(1)
            try:
                os.kill(owner, 0)
            except ProcessLookupError:
                os._exit(0)
            except PermissionError:
                pass  # a process with that pid exists

    threading.Thread(target=watch, name="exit-with-executor", daemon=True).start()


def _ready() -> int:
    return os.getpid()


class ParserPool:
    """Started lazily, so executors that only see small batches never fork;
    `warm()` starts it ahead of a sync that will need it.

    The forkserver imports this module (and so the MIME parser and the
    scoring rules) once, before it forks any worker: each worker then starts
    in ~10 ms with those pages shared, where importing them itself cost
    ~0.25 s of CPU per worker at the start of every executor's first big sync,
    while the first batch waited."""

    PRELOAD = ["executor.parsing"]

    def __init__(self, processes: int) -> None:
        self.processes = max(0, processes)
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()
        self._closed = False

    def _ensure(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._closed:  # a warm-up thread late for the executor's shutdown
                raise RuntimeError("the parser pool is closed")
            if self._pool is None:
                # forkserver: never fork a process that runs threads and an event loop.
                context = multiprocessing.get_context("forkserver")
                context.set_forkserver_preload(self.PRELOAD)
                self._pool = ProcessPoolExecutor(
                    self.processes,
                    mp_context=context,
                    initializer=_exit_with,
                    initargs=(os.getpid(),),
                )
            return self._pool

    def warm(self) -> None:
        """Start the forkserver and every worker on a thread of their own, so
        that a sync's IMAP round trips before its first batch hide their start
        (starting a process blocks its caller until the forkserver answers)."""
        if self.processes == 0 or self._pool is not None:
            return

        def start() -> None:
            try:
                pool = self._ensure()
                for future in [pool.submit(_ready) for _ in range(self.processes)]:
                    future.result()
            except Exception as exc:  # the first batch will find out and parse in-process
                if not self._closed:
                    log.warning("parser pool did not start (%s)", exc)

        threading.Thread(target=start, name="parser-pool-start", daemon=True).start()

    async def parse(
        self, raws: Sequence[RawMessage], identity: Identity | None = None
    ) -> tuple[list[FetchedMessage], list[dict[str, Any]]]:
        """Parse a batch, deciding "mentions you" when an identity is given."""
        if self.processes == 0 or len(raws) < MIN_PARALLEL_BATCH:
            return await asyncio.to_thread(parse_raw, raws, identity)
        loop = asyncio.get_running_loop()
        size = -(-len(raws) // self.processes)
        chunks = [list(raws[i : i + size]) for i in range(0, len(raws), size)]
        try:
            parts = await asyncio.gather(
                *(loop.run_in_executor(self._ensure(), parse_raw, c, identity) for c in chunks)
            )
        except Exception as exc:  # a broken pool must not fail the sync: parse here instead
            log.warning("parser pool failed (%s); parsing in-process", exc)
            self.close()
            self.processes = 0
            return await asyncio.to_thread(parse_raw, raws, identity)
        fetched = [m for part in parts for m in part[0]]
        problems = [p for part in parts for p in part[1]]
        return fetched, problems

    async def parse_batch(
        self,
        raws: Sequence[RawMessage],
        identity: Identity | None,
        folder: str,
        uidvalidity: int,
    ) -> ParsedBatch:
        """A whole fetched batch to one parse process (a sync keeps several
        batches in flight, one per process); a small one in a thread."""
        args = (list(raws), identity, folder, uidvalidity)
        if self.processes == 0 or len(raws) < MIN_PARALLEL_BATCH:
            return await asyncio.to_thread(parse_batch, *args)
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._ensure(), parse_batch, *args)
        except Exception as exc:  # a broken pool must not fail the sync: parse here instead
            log.warning("parser pool failed (%s); parsing in-process", exc)
            self.close()
            self.processes = 0
            return await asyncio.to_thread(parse_batch, *args)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
