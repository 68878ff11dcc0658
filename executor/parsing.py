"""MIME parsing off the event loop and across processes.

Parsing is the CPU-heavy part of a sync (the email package is pure Python),
so batches big enough to pay for it are parsed in a small process pool while
the worker fetches the next batch and writes the previous one.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from app.mail.mime import parse_message
from executor.mirror_writes import FetchedMessage

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


def parse_raw(raws: Sequence[RawMessage]) -> tuple[list[FetchedMessage], list[dict[str, Any]]]:
    """Parse a batch; one bad message is a problem entry, never an exception."""
    fetched: list[FetchedMessage] = []
    problems: list[dict[str, Any]] = []
    for raw in raws:
        try:
            parsed = parse_message(raw.body)
        except Exception as exc:  # parse_message should not raise; belt and braces
            problems.append({"uid": raw.uid, "problem": f"skipped: {type(exc).__name__}: {exc}"})
            continue
        fetched.append(
            FetchedMessage(
                uid=raw.uid,
                flags=raw.flags,
                internal_date=raw.internal_date,
                size=raw.size,
                modseq=raw.modseq,
                parsed=parsed,
            )
        )
        if parsed.problems:
            problems.append({"uid": raw.uid, "problem": "; ".join(parsed.problems)})
    return fetched, problems


class ParserPool:
    """Started lazily, so executors that only see small batches never fork."""

    def __init__(self, processes: int) -> None:
        self.processes = max(0, processes)
        self._pool: ProcessPoolExecutor | None = None

    def _ensure(self) -> ProcessPoolExecutor:
        if self._pool is None:
            # forkserver: never fork a process that runs threads and an event loop.
            self._pool = ProcessPoolExecutor(
                self.processes, mp_context=multiprocessing.get_context("forkserver")
            )
        return self._pool

    async def parse(
        self, raws: Sequence[RawMessage]
    ) -> tuple[list[FetchedMessage], list[dict[str, Any]]]:
        if self.processes == 0 or len(raws) < MIN_PARALLEL_BATCH:
            return await asyncio.to_thread(parse_raw, raws)
        loop = asyncio.get_running_loop()
        size = -(-len(raws) // self.processes)
        chunks = [list(raws[i : i + size]) for i in range(0, len(raws), size)]
        try:
            parts = await asyncio.gather(
                *(loop.run_in_executor(self._ensure(), parse_raw, c) for c in chunks)
            )
        except Exception as exc:  # a broken pool must not fail the sync: parse here instead
            log.warning("parser pool failed (%s); parsing in-process", exc)
            self.close()
            self.processes = 0
            return await asyncio.to_thread(parse_raw, raws)
        fetched = [m for part in parts for m in part[0]]
        problems = [p for part in parts for p in part[1]]
        return fetched, problems

    def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
