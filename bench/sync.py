"""Sync throughput against a raw imapclient fetch of the same messages, in one run.

    .venv/bin/python bench/sync.py [--messages 10000]

Prints messages/s for (a) a raw imapclient FETCH of every message with the
same items the sync asks for, and (b) a full `sync` job run by a real
executor into a real Postgres, their ratio, and the time of a re-sync of the
unchanged mailbox.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.config import ImapAccount  # noqa: E402
from app.db.pool import open_pool  # noqa: E402
from app.demo.dovecot import DovecotServer  # noqa: E402
from app.demo.mailbox import generate_mailbox, write_maildir  # noqa: E402
from app.jobs.store import JobStore  # noqa: E402
from executor.handlers.sync import FETCH_ITEMS  # noqa: E402
from tests.support.databases import DatabaseFactory, admin_url  # noqa: E402
from tests.support.executor_harness import (  # noqa: E402
    executor_settings,
    imap_connect,
    running_executor,
    wait_for_job,
)


def raw_fetch(account: ImapAccount, batch: int) -> int:
    client = imap_connect(account)
    n = 0
    for flags, _, name in client.list_folders():
        if b"\\Noselect" in flags:
            continue
        client.select_folder(name, readonly=True)
        uids = sorted(client.search("ALL"))
        for i in range(0, len(uids), batch):
            n += len(client.fetch(uids[i : i + batch], FETCH_ITEMS + ["MODSEQ"]))
    client.logout()
    return n


async def run_sync(database_url: str, account: ImapAccount, batch: int) -> tuple[float, float, int]:
    pool = await open_pool(database_url)
    store = JobStore(pool)
    settings = executor_settings(sync_batch_size=batch, poll_seconds=0.05)
    async with running_executor(database_url, account, workers=1, settings=settings):
        job = await store.enqueue("sync")
        done = await wait_for_job(store, job.job_id, timeout=600)
        assert done.status.value == "completed", done.error
        first = (done.finished_at - done.started_at).total_seconds()  # type: ignore[operator]
        again = await store.enqueue("sync")
        redo = await wait_for_job(store, again.job_id, timeout=60)
        resync = (redo.finished_at - redo.started_at).total_seconds()  # type: ignore[operator]
    await pool.close()
    return first, resync, done.processed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=200)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="pbh-", dir="/tmp"))
    factory = DatabaseFactory(admin_url())
    try:
        with DovecotServer(mail_home=home) as server:
            t0 = time.perf_counter()
            msgs = generate_mailbox(args.messages)
            write_maildir(server.maildir, msgs)
            account = ImapAccount(
                server.host, server.port, server.username, server.password, ssl=False
            )
            raw_fetch(account, args.batch)  # warm-up: Dovecot builds its indexes here
            print(
                f"mailbox: {len(msgs)} messages generated and indexed in {time.perf_counter() - t0:.1f}s"
            )
            t0 = time.perf_counter()
            n_raw = raw_fetch(account, args.batch)
            raw_s = time.perf_counter() - t0
            with factory.database() as url:
                sync_s, resync_s, n_sync = asyncio.run(run_sync(url, account, args.batch))
        print(
            f"raw imapclient fetch : {n_raw} msgs in {raw_s:.2f}s = {n_raw / raw_s:,.0f} msgs/s (baseline)"
        )
        print(
            f"sync job (executor)  : {n_sync} msgs in {sync_s:.2f}s = {n_sync / sync_s:,.0f} msgs/s"
        )
        print(f"ratio sync/raw       : {(n_sync / sync_s) / (n_raw / raw_s):.2f}x  (aim >= 0.8x)")
        print(f"re-sync, unchanged   : {resync_s * 1000:.0f} ms  (aim < 500 ms)")
    finally:
        factory.close()
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
