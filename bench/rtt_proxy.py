"""A TCP proxy that adds a round-trip delay, for benches that price a far-away server.

    proxy = DelayProxy("127.0.0.1", dovecot_port, rtt_ms=40).start()
    ... connect to ("127.0.0.1", proxy.port) ...
    proxy.stop()

Each direction delays every chunk by half the round trip and keeps order, so
bandwidth is untouched and only latency grows, as on a long but fat link (a
stop-and-wait delay would also cap throughput, which real links do not). It
runs in its own process so its event loop takes no time from the measured one.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing as mp
import time
from multiprocessing.connection import Connection


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    """Copy reader → writer, each chunk written `delay` seconds after it arrived."""
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def deliver() -> None:
        while True:
            due, chunk = await queue.get()
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            if not chunk:
                with contextlib.suppress(OSError):
                    writer.write_eof()
                return
            writer.write(chunk)
            await writer.drain()

    sender = asyncio.create_task(deliver())
    try:
        while True:
            chunk = await reader.read(65536)
            await queue.put((time.monotonic() + delay, chunk))
            if not chunk:
                break
        await sender
    except (ConnectionError, OSError):
        sender.cancel()
    finally:
        with contextlib.suppress(Exception):
            writer.close()


async def _serve(upstream_host: str, upstream_port: int, half: float, ready: Connection) -> None:
    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            up_r, up_w = await asyncio.open_connection(upstream_host, upstream_port)
        except OSError:
            client_w.close()
            return
        await asyncio.gather(
            _pump(client_r, up_w, half), _pump(up_r, client_w, half), return_exceptions=True
        )

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    ready.send(server.sockets[0].getsockname()[1])
    async with server:
        await server.serve_forever()


def _main(upstream_host: str, upstream_port: int, rtt_ms: float, ready: Connection) -> None:
    asyncio.run(_serve(upstream_host, upstream_port, rtt_ms / 2000.0, ready))


class DelayProxy:
    def __init__(self, upstream_host: str, upstream_port: int, rtt_ms: float) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.rtt_ms = rtt_ms
        self.host = "127.0.0.1"
        self.port = 0
        self._proc: mp.Process | None = None

    def start(self) -> DelayProxy:
        parent, child = mp.Pipe()
        self._proc = mp.get_context("spawn").Process(
            target=_main, args=(*self.upstream, self.rtt_ms, child), daemon=True
        )
        self._proc.start()
        if not parent.poll(10):
            self.stop()
            raise RuntimeError("the delay proxy did not start")
        self.port = int(parent.recv())
        return self

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            self._proc.join(5)
            self._proc = None

    def __enter__(self) -> DelayProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
