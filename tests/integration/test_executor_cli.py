"""`python -m executor` refuses to start, in one clear line and without
touching anything, when it has no account or cannot trust the database."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

ROOT = Path(__file__).resolve().parents[2]


class Trap:
    """A listening socket that records whether anyone connected to it."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]

    def connections(self) -> int:
        # The kernel completes handshakes without accept(): count what queued up.
        self.sock.setblocking(False)
        count = 0
        while True:
            try:
                conn, _ = self.sock.accept()
            except BlockingIOError:
                return count
            conn.close()
            count += 1


@pytest.fixture
def trap() -> Iterator[Trap]:
    t = Trap()
    yield t
    t.sock.close()


@pytest.fixture
def second_trap() -> Iterator[Trap]:
    t = Trap()
    yield t
    t.sock.close()


def clean_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The caller's environment without any account, database or Piper setting."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("IMAP_", "SECRETARY_", "DATABASE_URL"))
    }
    env.update(
        SECRETARY_CONFIG=str(tmp_path / "no-config.yaml"),  # no config.yaml fills the gap
        SECRETARY_DATA_DIR=str(tmp_path / "data"),
        PYTHONPATH=str(ROOT),
    )
    env.update(extra)
    return env


def run_executor(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "executor", "--workers", "1"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_an_executor_without_imap_host_exits_2_naming_it_and_ignores_a_demo_state_file(
    tmp_path: Path, trap: Trap, second_trap: Trap
) -> None:
    # What an earlier `secretary run` left behind: the demo's address and login.
    data = tmp_path / "data"
    data.mkdir()
    (data / "demo-imap.json").write_text(
        json.dumps({"host": "127.0.0.1", "port": trap.port, "username": "demo", "password": "pw"})
    )
    db_url = f"postgresql://postgres@127.0.0.1:{second_trap.port}/postgres?connect_timeout=2"
    result = run_executor(tmp_path, clean_env(tmp_path, DATABASE_URL=db_url))

    assert result.returncode == 2, result.stderr
    assert "IMAP_HOST" in result.stderr and "no IMAP account configured" in result.stderr
    assert "Traceback" not in result.stderr
    assert trap.connections() == 0, "it logged in to the demo's mailbox"
    assert second_trap.connections() == 0, "it touched the database before checking"


def test_an_executor_with_imap_host_but_no_username_exits_2(tmp_path: Path, trap: Trap) -> None:
    result = run_executor(
        tmp_path, clean_env(tmp_path, IMAP_HOST="127.0.0.1", IMAP_PORT=str(trap.port))
    )
    assert result.returncode == 2, result.stderr
    assert "IMAP_USERNAME is empty" in result.stderr and "Traceback" not in result.stderr
    assert trap.connections() == 0


def test_an_executor_on_a_database_whose_migration_changed_refuses_in_one_line(
    tmp_path: Path, database_url: str, trap: Trap
) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("UPDATE schema_migrations SET checksum = repeat('0', 64) WHERE version = 2")
    env = clean_env(
        tmp_path,
        DATABASE_URL=database_url,
        IMAP_HOST="127.0.0.1",
        IMAP_PORT=str(trap.port),
        IMAP_USERNAME="someone",
        IMAP_PASSWORD="pw",
        IMAP_SSL="false",
    )
    result = run_executor(tmp_path, env)
    assert result.returncode == 3, result.stderr
    assert "Traceback" not in result.stderr
    [line] = [ln for ln in result.stderr.splitlines() if "refusing to start" in ln]
    assert "002_mirror.sql changed after it was applied" in line
    assert trap.connections() == 0  # no IMAP connection was opened


def test_an_executor_whose_database_is_unreachable_says_so_in_one_line(
    tmp_path: Path, trap: Trap
) -> None:
    port = trap.port
    trap.sock.close()  # nothing listens there now: connection refused
    env = clean_env(
        tmp_path,
        DATABASE_URL=f"postgresql://postgres@127.0.0.1:{port}/postgres?connect_timeout=2",
        IMAP_HOST="127.0.0.1",
        IMAP_USERNAME="someone",
    )
    result = run_executor(tmp_path, env)
    assert result.returncode == 3, result.stderr
    assert "cannot reach the database" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "command",
    [
        ["-m", "app.cli", "db", "migrate"],
        ["-m", "uvicorn", "app.web.main:app", "--port", "0"],
    ],
    ids=["secretary-db-migrate", "web"],
)
def test_the_cli_and_the_web_refuse_a_changed_migration_in_one_line(
    tmp_path: Path, database_url: str, command: list[str]
) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("UPDATE schema_migrations SET checksum = repeat('0', 64) WHERE version = 2")
    result = subprocess.run(
        [sys.executable, *command],
        cwd=tmp_path,
        env=clean_env(tmp_path, DATABASE_URL=database_url),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 3, result.stderr
    assert "Traceback" not in result.stderr
    [line] = [ln for ln in result.stderr.splitlines() if "refusing to start" in ln]
    assert "002_mirror.sql changed after it was applied" in line
