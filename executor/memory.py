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

log = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3  # glibc's <malloc.h>
MMAP_THRESHOLD = 128 * 1024  # glibc's default before it starts adjusting it
ENV = "MALLOC_MMAP_THRESHOLD_"


def pin_mmap_threshold() -> bool:
    """Pin glibc's mmap threshold unless the environment sets it; call it
    early, before threads start. Whether it was pinned here."""
    if os.environ.get(ENV):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the process's own C library
    except (OSError, AttributeError):
        return False  # not glibc (macOS has no mallopt)
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    pinned = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1  # glibc: 1 on success, musl: 0
    log.debug("malloc mmap threshold %s", f"pinned at {MMAP_THRESHOLD}" if pinned else "left alone")
    return pinned
