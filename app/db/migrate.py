"""Apply the numbered SQL files in `app/db/sql/` once each, in order.

A version table records what ran and the checksum of each file, and an
advisory lock makes concurrent starters (web and executor booting together)
take turns instead of racing. Migrations are append-only: a file that was
applied and has since changed is refused at start, because the database would
silently lack whatever the edit added (it happened once: `run_after`).
"""

from __future__ import annotations

import hashlib
import logging
import re
from pathlib import Path

import psycopg

log = logging.getLogger(__name__)

SQL_DIR = Path(__file__).resolve().parent / "sql"
_MIGRATION = re.compile(r"^(\d{3})_[\w-]+\.sql$")
_LOCK_KEY = 0x5049504552  # "PIPER"

# Checksums a released file once had, accepted for databases that applied it:
# 001 shipped for a while with the `run_after` column that now lives in 003.
HISTORIC_CHECKSUMS: dict[int, frozenset[str]] = {
    1: frozenset({"be5973814476956419deecaf28af6f1798a3411d405e5ce68efce7778f072a76"}),
}


class MigrationMismatch(RuntimeError):
    """An applied migration's file changed: the schema cannot be trusted."""


def checksum(path: Path) -> str:
    """sha256 of the file with CRLF read as LF, so a Windows checkout
    (git autocrlf) of the same migration is the same migration."""
    return hashlib.sha256(path.read_bytes().replace(b"\r\n", b"\n")).hexdigest()


def migration_files(sql_dir: Path = SQL_DIR) -> list[tuple[int, Path]]:
    found: dict[int, Path] = {}
    for path in sorted(sql_dir.glob("*.sql")):
        match = _MIGRATION.match(path.name)
        if match:
            version = int(match.group(1))
            if version in found:
                raise MigrationMismatch(
                    f"two migrations are numbered {version:03d}: {found[version].name} and "
                    f"{path.name}; give the newer one the next free number"
                )
            found[version] = path
    return sorted(found.items())


def migrate(conninfo: str, sql_dir: Path = SQL_DIR) -> list[str]:
    """Return the names of the migrations applied by this call."""
    applied: list[str] = []
    files = migration_files(sql_dir)  # refuses duplicate numbers before connecting
    with psycopg.connect(conninfo, autocommit=True) as conn:
        _lock(conn)
        try:
            conn.execute(
                """CREATE TABLE IF NOT EXISTS schema_migrations (
                       version int PRIMARY KEY,
                       name text NOT NULL,
                       applied_at timestamptz NOT NULL DEFAULT now())"""
            )
            conn.execute("ALTER TABLE schema_migrations ADD COLUMN IF NOT EXISTS checksum text")
            done = {
                row[0]: (row[1], row[2])
                for row in conn.execute("SELECT version, name, checksum FROM schema_migrations")
            }
            known = {version for version, _ in files}
            for version in sorted(set(done) - known):
                log.warning(
                    "the database has migration %s, which this code does not know "
                    "(a newer version ran here)",
                    done[version][0],
                )
            # Verify everything already applied before applying anything new.
            for version, path in files:
                if version in done:
                    _check_unchanged(conn, version, path, checksum(path), *done[version])
            for version, path in files:
                if version in done:
                    continue
                digest = checksum(path)
                if done and version < max(done):
                    log.warning(
                        "applying %s after later migrations: it was numbered out of order",
                        path.name,
                    )
                with conn.transaction():
                    conn.execute(path.read_text())
                    conn.execute(
                        "INSERT INTO schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                        (version, path.name, digest),
                    )
                log.info("applied migration %s", path.name)
                applied.append(path.name)
            _sync_job_types(conn)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
    return applied


def _lock(conn: psycopg.Connection) -> None:
    """Take the migration lock, saying so when another starter holds it."""
    row = conn.execute("SELECT pg_try_advisory_lock(%s)", (_LOCK_KEY,)).fetchone()
    if row is not None and row[0]:
        return
    log.info("another process is migrating this database; waiting for it")
    conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))


def _check_unchanged(
    conn: psycopg.Connection, version: int, path: Path, digest: str, name: str, stored: str | None
) -> None:
    if stored is None:
        # Applied before checksums were kept: record what is there now.
        conn.execute(
            "UPDATE schema_migrations SET checksum = %s WHERE version = %s", (digest, version)
        )
        return
    if stored == digest or stored in HISTORIC_CHECKSUMS.get(version, frozenset()):
        return
    if stored == hashlib.sha256(path.read_bytes()).hexdigest():
        return  # recorded from this very file before CRLF was read as LF
    raise MigrationMismatch(
        f"migration {path.name} changed after it was applied to this database "
        f"(as {name}, sha256 {stored[:12]}, file now {digest[:12]}); migrations are "
        "append-only: restore the file and put the change in a new numbered migration"
    )


def _sync_job_types(conn: psycopg.Connection) -> None:
    """Write `JobType` (the one list of job types) into the table the database checks."""
    from app.jobs.models import JobType

    if conn.execute("SELECT to_regclass('imap_job_types')").fetchone() == (None,):
        return  # a migration set from before 004 (tests replay old releases)
    with conn.transaction():
        for t in JobType:
            conn.execute(
                """INSERT INTO imap_job_types (job_type, is_mutation, is_undoable)
                   VALUES (%s, %s, %s)
                   ON CONFLICT (job_type) DO UPDATE SET
                       is_mutation = EXCLUDED.is_mutation, is_undoable = EXCLUDED.is_undoable
                   WHERE (imap_job_types.is_mutation, imap_job_types.is_undoable)
                         IS DISTINCT FROM (EXCLUDED.is_mutation, EXCLUDED.is_undoable)""",
                (t.value, t.is_mutation, t.is_undoable),
            )
