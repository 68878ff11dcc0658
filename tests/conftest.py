"""Shared fixtures: real Postgres databases and a real Dovecot per session."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from tests.support.databases import DatabaseFactory, admin_url


@pytest.fixture(scope="session")
def database_factory() -> Iterator[DatabaseFactory]:
    factory = DatabaseFactory(admin_url())
    yield factory
    factory.close()


@pytest.fixture
def database_url(database_factory: DatabaseFactory) -> Iterator[str]:
    with database_factory.database() as url:
        yield url


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[object]:
    from app.db.pool import open_pool

    p = await open_pool(database_url, max_size=20)
    try:
        yield p
    finally:
        await p.close()


@pytest.fixture
async def store(pool: object) -> object:
    from app.jobs.store import JobStore

    return JobStore(pool)  # type: ignore[arg-type]


# -- IMAP ---------------------------------------------------------------------


@pytest.fixture(scope="session")
def dovecot() -> Iterator[object]:
    """One private Dovecot per test session; each test logs in as its own user,
    so each test gets an empty mailbox of its own (the static passdb takes any name)."""
    import shutil
    import tempfile
    from pathlib import Path

    from app.demo.dovecot import DovecotServer, dovecot_available

    if not dovecot_available():
        pytest.fail("Dovecot is not installed: run scripts/setup.sh (installs dovecot-imapd)")
    home = Path(tempfile.mkdtemp(prefix="pmh-", dir="/tmp"))
    server = DovecotServer(mail_home=home).start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def imap_account(dovecot: object) -> object:
    import uuid

    from app.config import ImapAccount

    return ImapAccount(
        dovecot.host,  # type: ignore[attr-defined]
        dovecot.port,  # type: ignore[attr-defined]
        f"u{uuid.uuid4().hex[:10]}",
        dovecot.password,  # type: ignore[attr-defined]
        ssl=False,
    )


# -- web ----------------------------------------------------------------------


@pytest.fixture
def web(database_url: str) -> Iterator[object]:
    """A real uvicorn on a fresh database (short heartbeat for the tests)."""
    from tests.support.uvicorn_server import serve

    with serve(database_url, sse_heartbeat_seconds=0.5) as running:
        yield running


def pytest_terminal_summary(terminalreporter: object) -> None:
    """Print the figures tests reported (tests/support/figures.py)."""
    from tests.support.figures import FIGURES

    if FIGURES:
        terminalreporter.section("figures")  # type: ignore[attr-defined]
        for line in FIGURES:
            terminalreporter.write_line(line)  # type: ignore[attr-defined]
