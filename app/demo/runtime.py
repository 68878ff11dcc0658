"""Where the demo IMAP server is, for processes that did not start it.

`secretary run` starts the demo Dovecot and records its address in the data
dir; an executor started on its own finds it there.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import TYPE_CHECKING

from app.config import ImapAccount, Settings

if TYPE_CHECKING:
    from app.demo.dovecot import DovecotServer

STATE_FILE = "demo-imap.json"


def write_demo_state(data_dir: Path, account: ImapAccount) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / STATE_FILE).write_text(
        json.dumps(
            {
                "host": account.host,
                "port": account.port,
                "username": account.username,
                "password": account.password,
            }
        )
    )


def read_demo_state(data_dir: Path) -> ImapAccount | None:
    path = data_dir / STATE_FILE
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    account = ImapAccount(
        data["host"], int(data["port"]), data["username"], data["password"], ssl=False
    )
    try:
        with socket.create_connection((account.host, account.port), timeout=1):
            return account
    except OSError:
        return None


def imap_account_or_demo(settings: Settings) -> ImapAccount | None:
    return settings.imap or read_demo_state(settings.data_dir)


def start_demo_server(
    settings: Settings,
    *,
    home: Path | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    messages: int = 300,
) -> tuple[DovecotServer, int]:
    """Start the demo Dovecot and seed it once (a persistent mailbox is never seeded twice)."""
    from app.demo.dovecot import DovecotServer
    from app.demo.mailbox import seed_demo

    home = (home or settings.data_dir / "demo-mail").resolve()
    home.mkdir(parents=True, exist_ok=True)
    server = DovecotServer(mail_home=home, host=host, port=port).start()
    seeded = seed_demo(
        server,
        count=messages,
        identity_email=settings.identity_email,
        identity_name=settings.identity_name,
        aliases=settings.identity_aliases,
    )
    return server, seeded
