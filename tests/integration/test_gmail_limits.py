"""Gmail's limits against the Gmail double (SPEC §9): IMAP_MAX_CONNECTIONS holds across two
executor processes, counted by the server itself; "Too many simultaneous connections" makes
a job back off and say so in its events, without spending its attempts."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.jobs.models import JobStatus
from app.jobs.store import JobStore
from executor import throttle
from tests.support.executor_harness import running_executor, wait_for_job
from tests.support.gmail_double import GmailDouble, GmailMessage
from tests.support.gmail_mailbox import account, client, double, needs_node, raw

pytestmark = needs_node
REPO = Path(__file__).resolve().parents[2]
LABELS = ["Work", "Receipts", "Travel", "News", "Family"]


@contextlib.contextmanager
def executor_processes(
    d: GmailDouble, database_url: str, log: Path, *, count: int, workers: int, cap: int
) -> Iterator[list[subprocess.Popen[bytes]]]:
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "IMAP_HOST": d.host,
        "IMAP_PORT": str(d.port),
        "IMAP_USERNAME": "piper@gmail.test",
        "IMAP_PASSWORD": "app-password",
        "IMAP_SSL": "false",
        "IMAP_MAX_CONNECTIONS": str(cap),
        "SECRETARY_SYNC_FOLDERS": ",".join(LABELS),
        "SECRETARY_LEASE_SECONDS": "3",
        "SECRETARY_POLL_SECONDS": "0.1",
        "SECRETARY_PARSE_PROCESSES": "0",
        "SECRETARY_CONFIG": str(log.parent / "no-config.yaml"),
    }
    procs: list[subprocess.Popen[bytes]] = []
    try:
        with log.open("ab") as out:
            for _ in range(count):
                procs.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "executor", "--workers", str(workers)],
                        cwd=REPO,
                        env=env,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                    )
                )
        yield procs
    finally:
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


async def test_two_executor_processes_with_three_workers_never_exceed_a_cap_of_four(
    store: JobStore, pool: Any, tmp_path: Path
) -> None:
    messages = [
        GmailMessage(raw(i), labels=["\\Inbox", LABELS[i % len(LABELS)]]) for i in range(60)
    ]
    with double(messages) as d:
        log = tmp_path / "executors.log"
        with executor_processes(d, str(pool.conninfo), log, count=2, workers=3, cap=4):
            first = await store.enqueue("sync")
            assert (await wait_for_job(store, first.job_id, timeout=90)).status is (
                JobStatus.COMPLETED
            ), log.read_text()[-3000:]
            jobs = [
                await store.enqueue("sync", {"folders": [folder], "batch_size": 3})
                for folder in ["INBOX", *LABELS] * 2
            ]
            for job in jobs:
                done = await wait_for_job(store, job.job_id, timeout=120)
                assert done.status is JobStatus.COMPLETED, (done.error, log.read_text()[-3000:])
        # Read only once the executors are gone: the control connection counts too.
        stats = d.stats()
    print(f"\ngmail double: peak {stats['peak']} connections (cap 4), {stats['total']} opened")
    assert stats["peak"] <= 4
    assert stats["refused"] == 0


async def eventually(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := await predicate():
            return value
        await asyncio.sleep(0.05)
    raise AssertionError(f"not within {timeout}s: {what}")


async def test_too_many_connections_backs_off_says_so_and_spends_no_attempt(
    store: JobStore, pool: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        throttle, "BACKOFF_BASE", {throttle.CONNECTIONS: 0.3, throttle.BANDWIDTH: 0.3}
    )
    with double() as d:
        d.limit_connections(1)
        holder = None
        for _ in range(50):  # the control connection may still count for a moment
            try:
                holder = client(d)
                break
            except Exception:  # noqa: BLE001 - refused while the control connection closes
                await asyncio.sleep(0.05)
        assert holder is not None
        job = await store.enqueue("sync")

        async def throttled() -> list[Any]:
            events = await store.events_after(job.job_id, 0)
            return [e for e in events if (e.data or {}).get("phase") == "throttled"]

        async with running_executor(str(pool.conninfo), account(d), workers=1):
            seen = await eventually(throttled, 30, "a throttled event")
            await eventually(lambda: _more(throttled, 2), 30, "a second backoff")
            now = await store.get(job.job_id)
            assert now is not None and now.status is not JobStatus.FAILED
            holder.logout()
            done = await wait_for_job(store, job.job_id, timeout=60)
    assert done.status is JobStatus.COMPLETED, done.error
    assert done.attempt == 1  # every backoff handed the attempt back
    assert "too many simultaneous connections" in seen[0].message
    assert seen[0].level == "warning"
    assert seen[0].data["limit"] == "connections"


async def _more(events: Any, n: int) -> bool:
    return len(await events()) >= n


async def test_gmails_bandwidth_error_mid_sync_backs_off_and_the_sync_finishes(
    store: JobStore, pool: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        throttle, "BACKOFF_BASE", {throttle.CONNECTIONS: 0.3, throttle.BANDWIDTH: 0.3}
    )
    with double() as d:
        d.over_quota(2)
        job = await store.enqueue("sync")
        async with running_executor(str(pool.conninfo), account(d), workers=1):
            done = await wait_for_job(store, job.job_id, timeout=60)
    assert done.status is JobStatus.COMPLETED, done.error
    assert done.attempt == 1
    events = await store.events_after(job.job_id, 0)
    throttled = [e for e in events if (e.data or {}).get("phase") == "throttled"]
    assert len(throttled) == 2
    assert all(e.data["limit"] == "bandwidth" for e in throttled)
    assert "exceeded its command or bandwidth limits" in throttled[0].message
