"""Where the CPU of a run went: per program, from /proc, between two snapshots.

Why: on a 2-core machine the sync's speed is bounded by the CPU it needs in
every process it touches (the executor, its parse workers, Postgres, Dovecot),
not by any one of them. Two snapshots of every process's user+system time give
that split without slowing the run the way a profiler does. A process that
starts and ends between the snapshots is missed; the product's are long-lived
(pool connections, parse workers, one IMAP session per connection).
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass

from bench.procfs import proc_stats
from bench.rss import descendants

TICKS = os.sysconf("SC_CLK_TCK")


def _times() -> dict[int, tuple[str, float]]:
    """pid -> (command name, user+system seconds so far) for every process."""
    return {
        pid: (comm, (int(fields[11]) + int(fields[12])) / TICKS)
        for pid, comm, fields in proc_stats()
    }


@dataclass
class CpuSplit:
    """CPU seconds per program between `start()` and `stop()`."""

    executor_pid: int
    seconds: dict[str, float] | None = None
    _before: dict[int, tuple[str, float]] | None = None

    def start(self) -> CpuSplit:
        self._before = _times()
        return self

    def stop(self) -> dict[str, float]:
        after = _times()
        before = self._before or {}
        below = set(descendants(self.executor_pid))
        split: dict[str, float] = defaultdict(float)
        for pid, (comm, spent) in after.items():
            used = spent - before.get(pid, (comm, 0.0))[1]
            if used <= 0:
                continue
            if pid == self.executor_pid:
                group = "executor"
            elif pid in below:
                group = "parse workers"
            elif comm.startswith("postgres"):
                group = "postgres"
            elif comm in ("imap", "dovecot", "imap-login", "auth", "log", "config", "anvil"):
                group = "dovecot"
            else:
                group = "other"
            split[group] += used
        self.seconds = dict(split)
        return self.seconds


def cpu_line(split: dict[str, float], wall: float, cores: int | None = None) -> str:
    cores = cores or os.cpu_count() or 1
    total = sum(split.values())
    order = ["executor", "parse workers", "postgres", "dovecot", "other"]
    parts = ", ".join(f"{k} {split.get(k, 0.0):.2f}" for k in order)
    return (
        f"CPU seconds          : {parts}; total {total:.2f} of {wall * cores:.2f} "
        f"({cores} cores x {wall:.2f}s)"
    )
