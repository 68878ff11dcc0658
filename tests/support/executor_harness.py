"""Run a real executor inside a test's event loop, and compare mirror to server."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import imapclient

from app.config import ImapAccount, Settings
from app.jobs.models import Job, JobStatus
from app.jobs.store import JobStore
from executor.app import Executor


def executor_settings(**overrides: Any) -> Settings:
    # The live mirror (watcher, sweeps) is off unless a test asks for it: its
    # syncs would otherwise run between the steps other tests make and check.
    values: dict[str, Any] = {
        "lease_seconds": 5.0,
        "poll_seconds": 0.2,
        "sync_batch_size": 50,
        "live_mirror": False,
    }
    values.update(overrides)
    return Settings(**values)


@contextlib.asynccontextmanager
async def running_executor(
    database_url: str, account: ImapAccount, *, workers: int = 3, settings: Settings | None = None
) -> AsyncIterator[Executor]:
    executor = Executor(
        settings or executor_settings(),
        database_url,
        account,
        workers=workers,
        shutdown_grace=2.0,
        release_timeout=5.0,
    )
    task = asyncio.create_task(executor.run())
    try:
        yield executor
    finally:
        executor.stop()
        async with asyncio.timeout(30):
            await task


async def wait_for_job(
    store: JobStore, job_id: uuid.UUID, *, timeout: float = 60.0, until: Any = None
) -> Job:
    """Poll until the job is terminal (or `until(job)` holds)."""
    deadline = time.monotonic() + timeout
    while True:
        job = await store.get(job_id)
        assert job is not None
        if until(job) if until else job.status.is_terminal:
            return job
        if time.monotonic() > deadline:
            raise AssertionError(
                f"job {job_id} still {job.status} ({job.processed}/{job.total_estimate}) after {timeout}s"
            )
        await asyncio.sleep(0.05)


def imap_connect(account: ImapAccount) -> imapclient.IMAPClient:
    client = imapclient.IMAPClient(account.host, port=account.port, ssl=account.ssl, timeout=30)
    client.login(account.username, account.password)
    return client


def server_state(
    account: ImapAccount, folders: list[str] | None = None
) -> dict[str, dict[int, frozenset[str]]]:
    """folder → uid → flags, as the server has them (read-only)."""
    client = imap_connect(account)
    try:
        names = folders or [
            n for flags, _, n in client.list_folders() if b"\\Noselect" not in flags
        ]
        state: dict[str, dict[int, frozenset[str]]] = {}
        for name in names:
            info = client.select_folder(name, readonly=True)
            if not info.get(b"EXISTS"):
                state[name] = {}
                continue
            resp = client.fetch(client.search("ALL"), ["FLAGS"])
            state[name] = {
                uid: frozenset(
                    f.decode() if isinstance(f, bytes) else f
                    for f in d[b"FLAGS"]
                    if f != b"\\Recent"
                )
                for uid, d in resp.items()
            }
        return state
    finally:
        client.logout()


async def mirror_state(pool: Any) -> dict[str, dict[int, frozenset[str]]]:
    async with pool.connection() as conn:
        rows = await (
            await conn.execute(
                "SELECT e.folder, e.uid, e.flags FROM emails e JOIN mail_folders f "
                "ON f.folder = e.folder AND f.uidvalidity = e.uidvalidity"
            )
        ).fetchall()
        folders = await (await conn.execute("SELECT folder FROM mail_folders")).fetchall()
    state: dict[str, dict[int, frozenset[str]]] = {r["folder"]: {} for r in folders}
    for r in rows:
        state[r["folder"]][r["uid"]] = frozenset(f for f in r["flags"] if f != "\\Recent")
    return state


def finished(job: Job, status: JobStatus = JobStatus.COMPLETED) -> bool:
    return job.status is status
