"""Every process's /proc/PID/stat, for the benches that watch the product's processes
(bench/rss.py's process tree, bench/cpu.py's CPU split)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

PROC = Path("/proc")


def proc_stats() -> Iterator[tuple[int, str, list[str]]]:
    """(pid, command name, the stat fields after the name) of each live process.

    The name sits in parentheses and may hold spaces and parentheses itself,
    so the fields are split after its last ")": index 0 is the state, 1 the
    parent's pid, 11 and 12 the user and system CPU time in clock ticks."""
    for entry in os.scandir(PROC):
        if not entry.name.isdigit():
            continue
        try:
            stat = (PROC / entry.name / "stat").read_text()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        close = stat.rindex(")")
        yield int(entry.name), stat[stat.index("(") + 1 : close], stat[close + 2 :].split()
