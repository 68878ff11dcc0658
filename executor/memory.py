"""Keep the executor's resident memory from creeping up over a long sync.

Why: glibc's malloc raises its mmap threshold to the size of any mapped block
that is freed (up to 32 MiB). A sync frees such blocks all the time: a
100,000-UID SEARCH answer, each batch's pickles to and from the parse workers,
its JSON for Postgres. After the first of them, buffers of a few hundred KiB
are carved from the heaps of the threads that make them (the IMAP calls run in
threads) instead of being mapped and unmapped, the heaps fragment, and RSS
grows with the number of messages: a peak of 217-223 MB in a 100,000-message
first sync, while tracemalloc saw at most ~22 MB of live Python objects
(bench/sync.py --memory-only, issue 14).

Pinning the threshold at glibc's own starting value (which also turns the
adjustment off) keeps big buffers mapped, and so returned when freed: 134 MB
for that sync (102 MB with executor/imap_fetch.py's density probe as well).
Capping the arenas too (MALLOC_ARENA_MAX=2) gained 3 MB more at most: left
alone. `MALLOC_MMAP_THRESHOLD_` in the environment wins. Elsewhere than glibc
this does nothing.
"""

from __future__ import annotations

import ctypes
import logging
import os
from typing import Any

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1  # glibc's <malloc.h>
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 128 * 1024  # glibc's default before it starts adjusting it
ENV = "MALLOC_MMAP_THRESHOLD_"
# Parse processes (see `tune_for_parsing`).
PARSE_MMAP_THRESHOLD = 1024 * 1024
PARSE_TRIM_THRESHOLD = 4 * 1024 * 1024


def _mallopt() -> Any:
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the process's own C library
    except (OSError, AttributeError):
        return None  # not glibc (macOS has no mallopt)
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return mallopt


def tune_for_parsing() -> bool:
    """Let a parse process reuse the memory each HTML document takes.

    Every lexbor document (app/mail/mime.py renders HTML with it) allocates
    two blocks of ~320 KiB and frees them when done. With glibc's defaults the
    heap grew by both and was trimmed back after every document (three `brk`
    calls, and fresh zeroed pages to fault in each time); with the executor's
    pinned 128 KiB threshold both were mapped and unmapped instead. Either
    way parsing a small page cost ~20 us where ~6 us is lexbor's own work.
    Here blocks up to 1 MiB come from the heap, and up to 4 MiB of free heap
    top is kept. A process that parses only; the environment's settings win."""
    if os.environ.get(ENV) or os.environ.get("MALLOC_TRIM_THRESHOLD_"):
        return False
    mallopt = _mallopt()
    if mallopt is None:
        return False
    tuned = mallopt(M_MMAP_THRESHOLD, PARSE_MMAP_THRESHOLD) == 1
    return mallopt(M_TRIM_THRESHOLD, PARSE_TRIM_THRESHOLD) == 1 and tuned


def pin_mmap_threshold() -> bool:
    """Pin glibc's mmap threshold unless the environment sets it; call it
    early, before threads start. Whether it was pinned here."""
    if os.environ.get(ENV):
        return False
    mallopt = _mallopt()
    if mallopt is None:
        return False
    pinned = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1  # glibc: 1 on success, musl: 0
    log.debug("malloc mmap threshold %s", f"pinned at {MMAP_THRESHOLD}" if pinned else "left alone")
    return pinned
