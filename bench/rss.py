"""Peak resident memory of one process and of its whole process tree, from /proc.

Why a tree: the executor parses in worker processes (executor/parsing.py,
forkserver), which are children of a forkserver child of the executor, so
"the executor's memory" is only honest with them counted too. Summing RSS
counts pages the processes share (libraries, pages a worker inherited from
the forkserver) once per process, so the tree's RSS is an upper bound; its
PSS (each shared page split between its sharers) is what the tree costs.
"""

from __future__ import annotations

import threading
from pathlib import Path

from bench.procfs import proc_stats

PROC = Path("/proc")


def rss_kb(pid: int) -> int:
    """VmRSS of `pid` in KiB; 0 once it is gone (or a zombie)."""
    try:
        for line in (PROC / str(pid) / "status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return 0


def pss_kb(pid: int) -> int:
    """Proportional set size of `pid` in KiB (shared pages divided among their sharers)."""
    try:
        for line in (PROC / str(pid) / "smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return 0


def descendants(pid: int) -> list[int]:
    """Every live process below `pid`, from each process's parent in /proc/*/stat."""
    children: dict[int, list[int]] = {}
    for child, _comm, fields in proc_stats():
        children.setdefault(int(fields[1]), []).append(child)
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


class PeakRss:
    """Samples a process (`pid`) and its descendants on a thread, keeping the
    highest RSS of the process alone and of the tree, and the tree's highest
    PSS (each summed at the same instant).

    RSS every `interval` (50 ms); the list of descendants every second and PSS
    every 250 ms, which cost 3 ms and ~1 ms a process to read: sampling all of
    it every 50 ms took 8% of a core from the sync it measures.
    """

    RESCAN_EVERY = 20  # samples between two walks of /proc for descendants
    PSS_EVERY = 5  # samples between two PSS readings

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self.pid = pid
        self.interval = interval
        self.peak_kb = 0
        self.peak_tree_kb = 0
        self.peak_tree_pss_kb = 0
        self.most_children = 0
        self._below: list[int] = []
        self._samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> None:
        if self._samples % self.RESCAN_EVERY == 0:
            self._below = descendants(self.pid)
            self.most_children = max(self.most_children, len(self._below))
        own = rss_kb(self.pid)
        self.peak_kb = max(self.peak_kb, own)
        self.peak_tree_kb = max(self.peak_tree_kb, own + sum(rss_kb(p) for p in self._below))
        if self._samples % self.PSS_EVERY == 0:
            tree_pss = sum(pss_kb(p) for p in (self.pid, *self._below))
            self.peak_tree_pss_kb = max(self.peak_tree_pss_kb, tree_pss)
        self._samples += 1

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def start(self) -> PeakRss:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
