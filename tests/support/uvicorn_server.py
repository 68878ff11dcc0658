"""A real uvicorn serving the app on a free loopback port (SSE needs a real server:
httpx's ASGI transport waits for the end of an endless stream)."""

from __future__ import annotations

import dataclasses
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

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
