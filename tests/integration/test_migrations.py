"""Migrations are append-only and checked: an applied file that changed is
refused, the released 001 is still accepted, old databases are upgraded, and
concurrent starters apply each file once (real Postgres, empty databases)."""

from __future__ import annotations

import shutil
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest

from app.db.migrate import (
    HISTORIC_CHECKSUMS,
    SQL_DIR,
    MigrationMismatch,
    checksum,
    migrate,
    migration_files,
)
from app.jobs.models import JobType
from tests.support.databases import DatabaseFactory, with_dbname

# What 001 ended with when it shipped: `run_after` was added to it in place
# (the change that now lives in 003_run_after.sql).
RELEASED_001_TAIL = (
    "\n-- Retries wait out a backoff before they can be claimed again.\n"
    "ALTER TABLE imap_jobs ADD COLUMN run_after timestamptz NOT NULL DEFAULT now();\n"
)


@pytest.fixture
def empty_database(database_factory: DatabaseFactory) -> Iterator[str]:
    """A database with nothing in it (not cloned from the migrated template)."""
    name = f"piper_m_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(database_factory.admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield with_dbname(database_factory.admin, name)
    finally:
        with psycopg.connect(database_factory.admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def sql_copy(tmp_path: Path) -> Path:
    target = tmp_path / "sql"
    shutil.copytree(SQL_DIR, target)
    return target


def released_sql_dir(tmp_path: Path) -> Path:
    """The migrations as the first release had them: 001 (with run_after) and 002."""
    target = tmp_path / "released"
    target.mkdir()
    (target / "001_job_store.sql").write_text(
        (SQL_DIR / "001_job_store.sql").read_text() + RELEASED_001_TAIL
    )
    shutil.copy(SQL_DIR / "002_mirror.sql", target / "002_mirror.sql")
    return target


def all_names() -> list[str]:
    return [path.name for _, path in migration_files()]


def recorded(url: str) -> dict[int, tuple[str, str | None]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT version, name, checksum FROM schema_migrations").fetchall()
    return {v: (n, c) for v, n, c in rows}


def schema(url: str) -> set[tuple[str, str, str, str, str | None]]:
    """Every column of every table in `public`: what a migration leaves behind."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT table_name, column_name, data_type, is_nullable, column_default "
            "FROM information_schema.columns WHERE table_schema = 'public'"
        ).fetchall()
    return set(rows)


def test_migrating_twice_applies_everything_once_then_nothing(empty_database: str) -> None:
    assert migrate(empty_database) == all_names()
    assert migrate(empty_database) == []
    stored = recorded(empty_database)
    assert {v: n for v, (n, _) in stored.items()} == {v: p.name for v, p in migration_files()}
    assert {v: c for v, (_, c) in stored.items()} == {v: checksum(p) for v, p in migration_files()}


def test_an_applied_migration_that_was_edited_refuses_start_naming_the_file(
    empty_database: str, sql_copy: Path
) -> None:
    migrate(empty_database, sql_dir=sql_copy)
    edited = sql_copy / "002_mirror.sql"
    edited.write_text(edited.read_text() + "\nALTER TABLE emails ADD COLUMN sneaky int;\n")
    (sql_copy / "900_new.sql").write_text("CREATE TABLE must_not_appear (x int);\n")
    with pytest.raises(MigrationMismatch, match=r"002_mirror\.sql changed after it was applied"):
        migrate(empty_database, sql_dir=sql_copy)
    # Refused before anything else ran: the pending 900 was not applied either.
    assert 900 not in recorded(empty_database)
    with psycopg.connect(empty_database) as conn:
        assert conn.execute("SELECT to_regclass('must_not_appear')").fetchone() == (None,)


def test_a_crlf_checkout_of_the_same_migrations_is_not_a_change(
    empty_database: str, sql_copy: Path
) -> None:
    migrate(empty_database, sql_dir=sql_copy)
    for _, path in migration_files(sql_copy):
        path.write_bytes(path.read_bytes().replace(b"\n", b"\r\n"))
    assert migrate(empty_database, sql_dir=sql_copy) == []


def test_two_migrations_with_one_number_are_refused(empty_database: str, sql_copy: Path) -> None:
    (sql_copy / "003_another.sql").write_text("SELECT 1;\n")
    with pytest.raises(MigrationMismatch, match=r"two migrations are numbered 003"):
        migrate(empty_database, sql_dir=sql_copy)
    with psycopg.connect(empty_database) as conn:  # refused before connecting to migrate
        assert conn.execute("SELECT to_regclass('schema_migrations')").fetchone() == (None,)


def test_the_released_001_is_recognised_by_its_historic_checksum(
    empty_database: str, tmp_path: Path
) -> None:
    released = released_sql_dir(tmp_path)
    assert checksum(released / "001_job_store.sql") in HISTORIC_CHECKSUMS[1]
    # A database migrated (with checksums) while 001 still carried run_after...
    assert migrate(empty_database, sql_dir=released) == ["001_job_store.sql", "002_mirror.sql"]
    # ...is accepted by today's files and brought up to date, not refused.
    assert migrate(empty_database) == all_names()[2:]


def test_a_database_from_the_runner_without_checksums_is_upgraded(
    empty_database: str, tmp_path: Path, database_factory: DatabaseFactory
) -> None:
    released = released_sql_dir(tmp_path)
    # What the first release's runner did: no checksum column, no job-types table.
    with psycopg.connect(empty_database, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE schema_migrations (version int PRIMARY KEY, name text NOT NULL, "
            "applied_at timestamptz NOT NULL DEFAULT now())"
        )
        for version, path in migration_files(released):
            with conn.transaction():
                conn.execute(path.read_text())
                conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                    (version, path.name),
                )
        conn.execute("INSERT INTO imap_jobs (job_type) VALUES ('sync')")  # data survives

    assert migrate(empty_database) == all_names()[2:]
    stored = recorded(empty_database)
    assert all(c is not None for _, c in stored.values())  # checksums filled in
    assert migrate(empty_database) == []  # and from now on checked
    with psycopg.connect(empty_database) as conn:
        assert conn.execute("SELECT count(*) FROM imap_jobs").fetchone() == (1,)

    # The upgraded schema is the schema a fresh database gets.
    fresh = f"piper_m_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(database_factory.admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{fresh}"')
    try:
        fresh_url = with_dbname(database_factory.admin, fresh)
        migrate(fresh_url)
        assert schema(empty_database) == schema(fresh_url)
    finally:
        with psycopg.connect(database_factory.admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{fresh}" WITH (FORCE)')


def test_concurrent_starters_apply_each_migration_exactly_once(empty_database: str) -> None:
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: migrate(empty_database), range(4)))
    applied = Counter(name for result in results for name in result)
    assert applied == Counter(all_names())  # each once, by whichever got the lock first
    assert sorted(results, key=len)[:-1] == [[], [], []]
    assert len(recorded(empty_database)) == len(all_names())


def test_the_job_types_table_is_the_JobType_list_and_is_restored_on_start(
    empty_database: str,
) -> None:
    def table() -> set[tuple[str, bool, bool]]:
        with psycopg.connect(empty_database) as conn:
            return set(
                conn.execute(
                    "SELECT job_type, is_mutation, is_undoable FROM imap_job_types"
                ).fetchall()
            )

    expected = {(t.value, t.is_mutation, t.is_undoable) for t in JobType}
    migrate(empty_database)
    assert table() == expected

    # Someone loosens the rule in the database by hand: the next start puts it back,
    # and the approval rule (which reads this table) holds again.
    with psycopg.connect(empty_database, autocommit=True) as conn:
        conn.execute("UPDATE imap_job_types SET is_mutation = false WHERE job_type = 'clean'")
    migrate(empty_database)
    assert table() == expected
    with (
        psycopg.connect(empty_database, autocommit=True) as conn,
        pytest.raises(psycopg.errors.CheckViolation, match="needs an approval"),
    ):
        conn.execute("INSERT INTO imap_jobs (job_type) VALUES ('clean')")
