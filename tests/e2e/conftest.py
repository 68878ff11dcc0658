"""Browser tests: a real Chromium (Debian's), a real uvicorn, a real executor
process and a real Dovecot. Run in their own pytest process (-p no:asyncio):
Playwright's sync API and pytest-asyncio do not share an event loop."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from app.config import ImapAccount
from app.demo.mailbox import generate_mailbox, write_maildir
from tests.support.uvicorn_server import serve

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    if not os.path.exists(CHROMIUM):
        pytest.fail("Debian chromium is missing: run scripts/setup.sh")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    pg = context.new_page()
    pg.set_default_timeout(30_000)
    yield pg
    context.close()


@dataclass
class Stack:
    url: str
    database_url: str
    account: ImapAccount
    executor: subprocess.Popen[bytes]


@pytest.fixture
def stack(database_url: str, dovecot: Any, request: pytest.FixtureRequest) -> Iterator[Stack]:
    count = getattr(request, "param", 400)
    user = f"e2e{uuid.uuid4().hex[:8]}"
    write_maildir(dovecot.user_maildir(user), generate_mailbox(count))
    account = ImapAccount(dovecot.host, dovecot.port, user, dovecot.password, ssl=False)
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "IMAP_HOST": account.host,
        "IMAP_PORT": str(account.port),
        "IMAP_USERNAME": user,
        "IMAP_PASSWORD": account.password,
        "IMAP_SSL": "false",
        "SECRETARY_POLL_SECONDS": "0.2",
        "SECRETARY_SYNC_BATCH_SIZE": "20",
    }
    executor = subprocess.Popen(
        [sys.executable, "-m", "executor", "--workers", "3", "--log-level", "WARNING"], env=env
    )
    try:
        with serve(database_url) as web:
            yield Stack(web.url, database_url, account, executor)
    finally:
        executor.terminate()
        executor.wait(timeout=30)
