"""How late the web process's event loop runs: a task that sleeps 5 ms over
and over and records how much longer each sleep took. A stream or a request
that hogs the loop (a big render, a synchronous call) shows up as oversleep,
which every other open stream and page request waits through as well.

Run on demand (`GET /healthz/lag?seconds=N`, used by bench/sse.py), one probe
at a time, so it costs nothing when nobody measures.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

TICK = 0.005


class ProbeBusy(Exception):
    """Another probe is measuring this process right now."""


_running = False


async def measure(seconds: float, tick: float = TICK, *, raw: bool = False) -> dict[str, Any]:
    """Oversleep of `tick`-second sleeps over `seconds`, in milliseconds
    (with `raw`, every sample too, so a caller can pool several windows)."""
    global _running
    if _running:
        raise ProbeBusy("a lag probe is already running in this process")
    _running = True
    try:
        lags: list[float] = []
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            before = time.monotonic()
            await asyncio.sleep(tick)
            lags.append(max(0.0, time.monotonic() - before - tick))
    finally:
        _running = False
    lags.sort()

    def pct(p: float) -> float:
        return lags[min(len(lags) - 1, int(len(lags) * p))] * 1000 if lags else 0.0

    summary: dict[str, Any] = {
        "seconds": seconds,
        "tick_ms": tick * 1000,
        "samples": len(lags),
        "p50_ms": round(pct(0.50), 3),
        "p99_ms": round(pct(0.99), 3),
        "max_ms": round(lags[-1] * 1000, 3) if lags else 0.0,
    }
    if raw:
        summary["lags_ms"] = [round(lag * 1000, 3) for lag in lags]
    return summary
