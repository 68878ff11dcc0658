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
