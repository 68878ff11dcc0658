"""Start the demo IMAP server: a private Dovecot seeded with a generated mailbox.

`secretary run` passes its account to the executor in the environment; nothing
else ever reads the demo's credentials.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from app.config import Settings

if TYPE_CHECKING:
    from app.demo.dovecot import DovecotServer


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
