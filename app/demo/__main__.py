"""`python -m app.demo`: run the demo IMAP server on its own (compose's `demo` profile)."""

from __future__ import annotations

import argparse
import signal
import threading
from pathlib import Path

from app.config import load_settings
from app.demo.dovecot import DovecotServer
from app.demo.mailbox import seed_demo


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m app.demo", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1143)
    parser.add_argument("--mail-home", default=".data/demo-mail")
    parser.add_argument("--messages", type=int, default=300)
    args = parser.parse_args()
    settings = load_settings()
    home = Path(args.mail_home).resolve()
    home.mkdir(parents=True, exist_ok=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with DovecotServer(mail_home=home, host=args.host, port=args.port) as server:
        seeded = seed_demo(
            server,
            count=args.messages,
            identity_email=settings.identity_email,
            identity_name=settings.identity_name,
            aliases=settings.identity_aliases,
        )
        print(
            f"demo IMAP on {server.host}:{server.port} user={server.username} password={server.password}"
            + (f", seeded {seeded} messages" if seeded else ""),
            flush=True,
        )
        stop.wait()


if __name__ == "__main__":
    main()
