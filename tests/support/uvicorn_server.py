"""A real uvicorn serving the app on a free loopback port (SSE needs a real server:
httpx's ASGI transport waits for the end of an endless stream).

`serve` runs it in a thread of the test process; `start_process` /
`serve_process` run it as deployed, in a process of its own, for figures
about the web (timings, CPU) that the test's own threads must not share a
GIL with."""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import uvicorn

from app.config import Settings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclasses.dataclass
class RunningServer:
    url: str
    server: uvicorn.Server
    database_url: str = ""


@contextmanager
def serve_asgi(app: Any, *, lifespan: str = "on") -> Iterator[tuple[str, uvicorn.Server]]:
    """Any ASGI app on a free loopback port, in a thread: (base URL, server)."""
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", lifespan=lifespan
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}", server
    finally:
        server.should_exit = True
        thread.join(timeout=15)


@contextmanager
def serve(database_url: str, **settings: Any) -> Iterator[RunningServer]:
    from app.web.main import create_app

    values: dict[str, Any] = {"database_url": database_url, "sse_poll_seconds": 0.5}
    values.update(settings)
    with serve_asgi(create_app(Settings(**values))) as (url, server):
        yield RunningServer(url, server, database_url)


@dataclasses.dataclass
class RunningProcess:
    url: str
    proc: subprocess.Popen[bytes]
    database_url: str = ""


def start_process(database_url: str, **env: str) -> tuple[subprocess.Popen[bytes], str]:
    """`uvicorn app.web.main:app` in its own process (settings from the
    environment plus `env`); returns once it answers /healthz."""
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "app.web.main:app",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        env={**os.environ, "DATABASE_URL": database_url, **env},
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            httpx.get(url + "/healthz", timeout=1)
            return proc, url
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    proc.wait(10)
    raise RuntimeError("the web process did not start")


@contextmanager
def serve_process(database_url: str, **env: str) -> Iterator[RunningProcess]:
    proc, url = start_process(database_url, **env)
    try:
        yield RunningProcess(url, proc, database_url)
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
