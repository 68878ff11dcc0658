"""Poll a URL from a process of its own and report every wait.

    python -m tests.support.poller URL [INTERVAL_SECONDS]

GETs URL every interval until its standard input closes, then prints the
waits in milliseconds as a JSON list. In its own process, a wait is the
server's answer time plus the loopback, not time spent queueing for the
GIL behind the test's other threads (a browser driver, a server in a thread).
"""

from __future__ import annotations

import json
import sys
import threading
import time

import httpx


def poll(url: str, interval: float, stop: threading.Event) -> list[float]:
    waits: list[float] = []
    with httpx.Client(timeout=10) as client:
        client.get(url).raise_for_status()  # connection set up outside the figures
        while not stop.is_set():
            start = time.perf_counter()
            client.get(url).raise_for_status()
            waits.append((time.perf_counter() - start) * 1000)
            stop.wait(interval)
    return waits


def main() -> None:
    url = sys.argv[1]
    interval = float(sys.argv[2]) if len(sys.argv) > 2 else 0.05
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    json.dump(poll(url, interval, stop), sys.stdout)


if __name__ == "__main__":
    main()
