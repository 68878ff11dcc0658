"""`python -m app.demo`: run the demo IMAP server on its own (compose's `demo` profile)."""

from __future__ import annotations

import argparse
import signal
import threading
from pathlib import Path

from app.config import load_settings
from app.demo.runtime import start_demo_server


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m app.demo", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1143)
    parser.add_argument("--mail-home", default=".data/demo-mail")
    parser.add_argument("--messages", type=int, default=300)
    args = parser.parse_args()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    server, seeded = start_demo_server(
        load_settings(),
        home=Path(args.mail_home),
        host=args.host,
        port=args.port,
        messages=args.messages,
    )
    with server:
        print(
            f"demo IMAP on {server.host}:{server.port} user={server.username} password={server.password}"
            + (f", seeded {seeded} messages" if seeded else ""),
            flush=True,
        )
        stop.wait()


if __name__ == "__main__":
    main()
