"""`python -m bench.executor_process [--no-mentions] [executor options]`: the
product's executor (`python -m executor`), optionally with the "mentions you"
check off.

Why: bench/sync.py prices the check by running the same sync with it off and
on. The switch is a module flag (`executor.mentions.ENABLED`, read when a sync
job starts), not a product setting, so it is flipped here, in the executor's
own process, before the executor's main runs. Everything else comes from the
environment, as for any executor.

`BENCH_TRACEMALLOC=FILE` in the environment traces the executor's Python
allocations (slow: for finding where memory goes, not for timings) and writes
to FILE, every few seconds, the largest allocation sites of the biggest
snapshot seen so far.
"""

from __future__ import annotations

import os
import sys
import threading
import tracemalloc
from pathlib import Path

from executor import mentions
from executor.__main__ import main as executor_main

NO_MENTIONS = "--no-mentions"


TRACE_ENV = "BENCH_TRACEMALLOC"


def trace_allocations(report: Path, every: float = 0.05, top: int = 30) -> None:
    """Snapshot the traced allocations each time they reach a new high (by
    1 MiB or more), and rewrite the report from the highest snapshot."""
    tracemalloc.start(3)
    largest = 0

    def watch() -> None:
        nonlocal largest
        wake = threading.Event()
        while not wake.wait(every):
            current, peak = tracemalloc.get_traced_memory()
            if current < largest + 2**20:
                continue
            largest = current
            snapshot = tracemalloc.take_snapshot().filter_traces(
                [tracemalloc.Filter(False, tracemalloc.__file__)]
            )
            lines = [
                f"traced {current / 2**20:.1f} MiB (peak so far {peak / 2**20:.1f} MiB), "
                f"RSS {rss_mib():.0f} MiB"
            ]
            lines += [str(stat) for stat in snapshot.statistics("lineno")[:top]]
            lines += ["", "by traceback (largest 8):"]
            for stat in snapshot.statistics("traceback")[:8]:
                lines += [f"{stat.size / 2**20:.1f} MiB in {stat.count} blocks"]
                lines += stat.traceback.format()
            report.write_text("\n".join(lines) + "\n")

    threading.Thread(target=watch, daemon=True).start()


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if NO_MENTIONS in args:
        args.remove(NO_MENTIONS)
        mentions.ENABLED = False
    if os.environ.get(TRACE_ENV):
        trace_allocations(Path(os.environ[TRACE_ENV]))
    executor_main(args)


if __name__ == "__main__":
    main()
