"""The `secretary` command against a real database (SPEC §3)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid

import pytest


def secretary(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        env={**os.environ, "DATABASE_URL": database_url},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_db_migrate_is_idempotent(database_url: str) -> None:
    first = secretary(database_url, "db", "migrate")
    assert first.returncode == 0, first.stderr
    assert "up to date" in first.stdout  # the test database is already migrated


def test_enqueue_list_show_cancel(database_url: str) -> None:
    enq = secretary(database_url, "jobs", "enqueue", "sync", "-q", "--folder", "INBOX")
    assert enq.returncode == 0, enq.stderr
    job_id = enq.stdout.strip()
    uuid.UUID(job_id)
    listed = secretary(database_url, "jobs", "list")
    assert job_id in listed.stdout and "pending" in listed.stdout
    shown = secretary(database_url, "jobs", "show", job_id)
    assert shown.returncode == 0 and '"job_type": "sync"' in shown.stdout
    cancelled = secretary(database_url, "jobs", "cancel", job_id)
    assert cancelled.returncode == 0 and "cancelled" in cancelled.stdout
    again = secretary(database_url, "jobs", "cancel", job_id)
    assert again.returncode == 1 and "already cancelled" in again.stderr
    watched = secretary(database_url, "jobs", "watch", job_id)
    assert watched.returncode == 1 and "cancelled" in watched.stdout


@pytest.mark.parametrize("job_type", ["clean", "mark_read"])
def test_mutations_cannot_be_enqueued_from_the_cli(database_url: str, job_type: str) -> None:
    r = secretary(database_url, "jobs", "enqueue", job_type)
    assert r.returncode == 2 and "approval" in r.stderr


def test_bad_job_id_is_a_clear_error(database_url: str) -> None:
    r = secretary(database_url, "jobs", "show", "not-a-uuid")
    assert r.returncode != 0 and "not a job id" in r.stderr


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("jobs", "enqueue", "sync", "--payload", "notjson"), "not valid JSON"),
        (("jobs", "enqueue", "sync", "--payload", "[1, 2]"), "must be a JSON object"),
        (("jobs", "enqueue", "sync", "--max-attempts", "0"), "must be 1 or more"),
        (("jobs", "list", "--limit", "-1"), "must be 1 or more"),
        (("run", "--workers", "0"), "must be 1 or more"),
    ],
)
def test_bad_arguments_are_one_line_errors_not_tracebacks(
    database_url: str, args: tuple[str, ...], says: str
) -> None:
    r = secretary(database_url, *args)
    assert r.returncode == 2 and says in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("url", ["postgresql://postgres@127.0.0.1:1/nowhere", "not a database url"])
def test_a_database_it_cannot_use_is_a_one_line_error(url: str) -> None:
    r = secretary(url, "jobs", "list")
    assert r.returncode == 3 and r.stderr.startswith("error: cannot use the database"), r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_leaving_watch_with_ctrl_c_is_quiet(database_url: str) -> None:
    job_id = secretary(database_url, "jobs", "enqueue", "sync", "-q").stdout.strip()
    watch = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "jobs", "watch", job_id],
        env={**os.environ, "DATABASE_URL": database_url},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(3)  # it is following the pending job
    watch.send_signal(signal.SIGINT)
    _out, err = watch.communicate(timeout=30)
    assert watch.returncode == 130 and "Traceback" not in err, err
