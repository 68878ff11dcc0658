"""A big folder's first sync split into UID ranges over several IMAP connections
(executor/sync_parallel.py), against real Postgres and a real Dovecot: the mirror
ends equal to the server whatever fails or is killed on the way, a retry goes on
from the recorded ranges, cancel stops it within one batch, and the account's
connection budget is never exceeded (counted by Dovecot itself)."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from app.config import ImapAccount
from app.demo.mailbox import SeedMessage, generate_mailbox, seed_via_imap
from app.jobs.models import Job, JobEvent, JobStatus, JobType
from app.jobs.progress import Progress, fold_all, to_message
from app.jobs.store import JobStore
from executor import folder_lock as fence_module
from executor.handlers import sync as sync_handler
from executor.imap_fetch import UidFetcher
from tests.integration.test_connection_budget import ServerCount, finish_all_counting_slots
from tests.integration.test_mentions import big_newsletter
from tests.integration.test_mutation_chaos import Executors
from tests.integration.test_sync_freshness import approved
from tests.support.executor_harness import (
    executor_settings,
    imap_connect,
    mirror_state,
    running_executor,
    server_state,
    wait_for_job,
)
from tests.support.figures import report
from tests.support.gmail_double import GmailMessage
from tests.support.gmail_mailbox import double, labelled, needs_node
from tests.support.gmail_mailbox import mirror_rows as gmail_rows
from tests.support.gmail_mailbox import sync as gmail_sync

SEED = int(os.environ.get("PIPER_CHAOS_SEED", "20261205"))
BATCH = 10


def long_message(i: int, when: Any) -> SeedMessage:
    """Longer than the fetch prefix; every other one names the person (the
    executor's default identity, Alex Roy) only past the cut."""
    tail = "Thanks, Alex Roy." if i % 2 == 0 else "Thanks, everyone."
    return SeedMessage(big_newsletter(f"Long chaos {i}", tail), when, "long", "INBOX")


def seed_inbox(account: ImapAccount, count: int, gaps: int = 0, long_every: int = 0) -> None:
    """`count` realistic messages in INBOX (and, with `long_every`, a message
    longer than the fetch prefix after every `long_every` of them), then `gaps`
    of them expunged at random (so the ranges hold UIDs that no longer exist)."""
    client = imap_connect(account)
    try:
        msgs: list[SeedMessage] = []
        for i, m in enumerate(generate_mailbox(count, seed=3), 1):
            msgs.append(dataclasses.replace(m, folder="INBOX"))
            if long_every and i % long_every == 0:
                msgs.append(long_message(i // long_every, m.internal_date))
        seed_via_imap(client, msgs, batch=100)
        if gaps:
            client.select_folder("INBOX")
            uids = sorted(client.search("ALL"))
            doomed = random.Random(count).sample(uids[:-1], gaps)
            client.delete_messages(doomed)
            client.uid_expunge(doomed)
    finally:
        client.logout()


def change_some(account: ImapAccount, rng: random.Random) -> None:
    """Flag, mark read and expunge a few messages anywhere in INBOX."""
    client = imap_connect(account)
    try:
        client.select_folder("INBOX")
        uids = sorted(client.search("ALL"))
        client.add_flags(rng.sample(uids, 8), [b"\\Flagged"])
        client.add_flags(rng.sample(uids, 8), [b"\\Seen"])
        gone = rng.sample(uids[:-1], 3)
        client.delete_messages(gone)
        client.uid_expunge(gone)
    finally:
        client.logout()


def settings(**overrides: Any) -> Any:
    return executor_settings(
        **{"sync_batch_size": BATCH, "sync_first_connections": 3, "lease_seconds": 5.0, **overrides}
    )


async def events(store: JobStore, job: Job) -> list[JobEvent]:
    return await store.events_after(job.job_id, limit=100_000)


def fetched_uids(evs: Sequence[JobEvent]) -> list[int]:
    return [u for e in evs if e.data.get("phase") == "fetch" for u in e.data["uids"]]


async def folder_row(pool: Any, folder: str = "INBOX") -> dict[str, Any]:
    async with pool.connection() as conn:
        row = await (
            await conn.execute(
                "SELECT f.last_seen_uid, f.uidnext, "
                "(SELECT count(*) FROM mail_folder_ranges r WHERE r.folder = f.folder) AS ranges, "
                "(SELECT count(*) - count(DISTINCT uid) FROM emails e WHERE e.folder = f.folder) "
                "AS duplicates FROM mail_folders f WHERE f.folder = %s",
                (folder,),
            )
        ).fetchone()
    assert row is not None
    return dict(row)


async def assert_mirror_is_the_server(pool: Any, account: ImapAccount) -> None:
    server = await asyncio.to_thread(server_state, account)
    assert await mirror_state(pool) == server
    row = await folder_row(pool)
    assert row["ranges"] == 0, "the ranges are forgotten once all are done"
    assert row["duplicates"] == 0
    assert row["last_seen_uid"] == max(server["INBOX"]) and row["uidnext"] is not None


async def test_a_split_first_sync_mirrors_the_server_over_three_connections(
    store: JobStore, pool: Any, imap_account: ImapAccount, dovecot: Any
) -> None:
    await asyncio.to_thread(seed_inbox, imap_account, 400, gaps=25)
    with ServerCount(dovecot, imap_account.username) as server:
        async with running_executor(str(pool.conninfo), imap_account, settings=settings()):
            job = await store.enqueue("sync", {"folders": ["INBOX"]})
            done = await wait_for_job(store, job.job_id, timeout=120)
    assert done.status is JobStatus.COMPLETED, done.error
    assert done.processed == done.total_estimate == 375
    await assert_mirror_is_the_server(pool, imap_account)
    evs = await events(store, job)
    splits = [e for e in evs if e.data.get("phase") == "split"]
    assert len(splits) == 1 and splits[0].data["connections"] == 3
    ranges = splits[0].data["ranges"]
    assert ranges[0][0] == 1 and all(
        a[1] + 1 == b[0] for a, b in zip(ranges, ranges[1:], strict=False)
    )
    uids = fetched_uids(evs)
    assert len(uids) == len(set(uids)) == 375, "every message fetched once"
    # One counter, only growing, and events numbered without gaps.
    processed = [e.data["processed"] for e in evs if "processed" in e.data]
    assert processed == sorted(processed) and processed[-1] == 375
    assert [e.seq for e in evs] == list(range(1, len(evs) + 1))
    # The ranges really went over several connections at once.
    assert max(server.samples) >= 3, server.samples
    # The card's fold reads it as before: one batch per fetch event, all counted.
    card = fold_all(Progress.start(done), evs)
    assert card.iterations == len([e for e in evs if e.data.get("phase") == "fetch"])
    message = to_message(card)
    assert message["type"] == "batch_complete" and message["processed_count"] == 375, message


async def test_a_failing_range_is_retried_from_the_recorded_ranges_without_gaps_or_repeats(
    store: JobStore, pool: Any, imap_account: ImapAccount, monkeypatch: pytest.MonkeyPatch
) -> None:
    await asyncio.to_thread(seed_inbox, imap_account, 300, gaps=10)
    real_fetch = sync_handler.fetch_raw
    failed: list[int] = []
    asked: list[list[int]] = []

    def flaky_fetch(fetcher: UidFetcher, uids: Sequence[int], *args: Any) -> Any:
        asked.append(list(uids))
        if not failed and max(uids) > 200:
            failed.append(max(uids))
            raise ConnectionResetError("injected: the connection of one range broke")
        return real_fetch(fetcher, uids, *args)

    monkeypatch.setattr(sync_handler, "fetch_raw", flaky_fetch)
    async with running_executor(str(pool.conninfo), imap_account, settings=settings()):
        job = await store.enqueue("sync", {"folders": ["INBOX"]})
        done = await wait_for_job(store, job.job_id, timeout=120)
    assert failed, "the injected failure happened"
    assert done.status is JobStatus.COMPLETED, done.error
    assert done.attempt == 2
    assert done.processed == done.total_estimate == 290
    await assert_mirror_is_the_server(pool, imap_account)
    evs = await events(store, job)
    assert len([e for e in evs if e.data.get("phase") == "split"]) == 1, "never split again"
    second = next(
        e.seq for e in evs if e.message.startswith("claimed by") and e.data["attempt"] == 2
    )
    before = [u for e in evs if e.seq < second for u in fetched_uids([e])]
    after = [u for e in evs if e.seq > second for u in fetched_uids([e])]
    assert before and after
    assert not set(before) & set(after), "the retry fetched nothing the first attempt had written"
    assert sorted(before + after) == sorted(set(before + after)) and len(before + after) == 290


async def test_cancel_during_a_parallel_first_sync_ends_cancelled_within_one_batch(
    store: JobStore, pool: Any, imap_account: ImapAccount
) -> None:
    await asyncio.to_thread(seed_inbox, imap_account, 600)
    async with running_executor(str(pool.conninfo), imap_account, settings=settings()):
        job = await store.enqueue("sync", {"folders": ["INBOX"]})
        await wait_for_job(store, job.job_id, until=lambda j: j.processed >= 40, timeout=60)
        asked = await store.request_cancel(job.job_id)
        assert asked is not None
        done = await wait_for_job(store, job.job_id, timeout=30)
    assert done.status is JobStatus.CANCELLED
    assert done.processed - asked.processed <= BATCH, (asked.processed, done.processed)
    assert done.processed < 600
    # What was written is exact, and the cursor names no message that is missing.
    mirror = (await mirror_state(pool))["INBOX"]
    server = (await asyncio.to_thread(server_state, imap_account))["INBOX"]
    assert all(server[uid] == flags for uid, flags in mirror.items())
    row = await folder_row(pool)
    assert all(uid in mirror for uid in server if uid <= row["last_seen_uid"])
    # The next sync finishes it from the ranges.
    async with running_executor(str(pool.conninfo), imap_account, settings=settings()):
        again = await store.enqueue("sync", {"folders": ["INBOX"]})
        assert (await wait_for_job(store, again.job_id, timeout=120)).status is JobStatus.COMPLETED
    await assert_mirror_is_the_server(pool, imap_account)
    assert not set(fetched_uids(await events(store, again))) & set(mirror)


async def test_changes_approved_during_a_split_first_sync_go_through_its_fence_yields(
    store: JobStore, pool: Any, imap_account: ImapAccount, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fence is yielded every 50 ms between whole batches of all connections:
    mark_read jobs on messages anywhere in the folder finish while the sync
    runs, and no connection writes a flag it read before a yield."""
    monkeypatch.setattr(fence_module, "YIELD_AFTER_SECONDS", 0.05)
    monkeypatch.setattr(fence_module, "LOOK_EVERY_SECONDS", 0.01)
    # A third of the folder is left after the last change: the sync is still
    # running when that change has had its turn (batches of 5 go fast).
    await asyncio.to_thread(seed_inbox, imap_account, 900)
    client = imap_connect(imap_account)
    try:
        validity = int(client.select_folder("INBOX", readonly=True)[b"UIDVALIDITY"])
        uids = sorted(client.search("ALL"))
    finally:
        client.logout()
    rng = random.Random(SEED)
    async with running_executor(
        str(pool.conninfo), imap_account, workers=2, settings=settings(sync_batch_size=5)
    ):
        sync = await store.enqueue("sync", {"folders": ["INBOX"]})
        changes = []
        for at in (20, 150, 300, 450):
            await wait_for_job(store, sync.job_id, until=lambda j, at=at: j.processed >= at)
            rows = [
                {"folder": "INBOX", "uidvalidity": validity, "uid": u, "message_id": None}
                | {"subject": ""}
                for u in rng.sample(uids, 6)
            ]
            changes.append(await approved(store, JobType.MARK_READ, rows))
            done = await wait_for_job(store, changes[-1].job_id, timeout=30)
            assert done.status is JobStatus.COMPLETED, done.error
        final = await wait_for_job(store, sync.job_id, timeout=120)
    assert final.status is JobStatus.COMPLETED, final.error
    for change in changes:
        done = await store.get(change.job_id)
        assert done is not None and done.finished_at is not None and final.finished_at is not None
        assert done.finished_at < final.finished_at, "a change waited for the whole sync"
    await assert_mirror_is_the_server(pool, imap_account)


async def test_borrowed_connections_never_exceed_imap_max_connections(
    store: JobStore, pool: Any, imap_account: ImapAccount, dovecot: Any
) -> None:
    """Budget 3: slot 3 is the watcher's, two for workers. Three workers, a split
    first sync and small syncs of other folders compete for them: the borrowed
    connection goes back as soon as a worker waits, so the small syncs do not
    wait for the big one to end."""
    await asyncio.to_thread(seed_inbox, imap_account, 1200)
    client = imap_connect(imap_account)
    try:
        for i in range(4):
            client.create_folder(f"Other{i}")
            client.append(f"Other{i}", b"Subject: other\r\n\r\nbody\r\n")
    finally:
        client.logout()
    limit = 3
    config = settings(imap_max_connections=limit, live_mirror=True, sync_batch_size=5)
    with ServerCount(dovecot, imap_account.username) as server:
        async with running_executor(str(pool.conninfo), imap_account, settings=config):
            first = await store.enqueue("sync", {"folders": ["INBOX"]})
            await wait_for_job(store, first.job_id, until=lambda j: j.processed >= 20)
            others = [await store.enqueue("sync", {"folders": [f"Other{i}"]}) for i in range(4)]
            db_samples = await finish_all_counting_slots(
                store, pool, imap_account, [first, *others]
            )
    assert max(db_samples) <= limit, db_samples
    assert server.samples and max(server.samples) <= limit, server.samples
    assert await mirror_state(pool) == await asyncio.to_thread(server_state, imap_account)
    split = [e for e in await events(store, first) if e.data.get("phase") == "split"]
    assert split and split[0].data["connections"] == 2
    small = [await store.get(j.job_id) for j in others]
    assert all(j is not None and j.status is JobStatus.COMPLETED for j in small)
    # The waiting workers got the borrowed slot: the split handed it back mid-way
    # (which of them then finished first is a race the machine's load decides).
    summary = (await events(store, first))[-1].data["summary"]
    assert summary["folders"]["INBOX"].get("given_back", 0) >= 1, summary


# -- kill -9 -------------------------------------------------------------------------


@pytest.mark.parametrize("connections", [1, 3], ids=["one-connection-pipeline", "split"])
async def test_kill_9_at_random_points_of_a_first_sync_then_the_mirror_equals_the_server(
    store: JobStore, pool: Any, imap_account: ImapAccount, tmp_path: Path, connections: int
) -> None:
    """Over one connection (its fetch → parse → write pipeline, executor/sync_pipeline.py)
    and split over three: killed anywhere, the next attempt leaves no gap or duplicate,
    and every message longer than the fetch prefix still gets its own sure verdict
    from the server's search (asked a stretch ahead, executor/mentions.py)."""
    await asyncio.to_thread(seed_inbox, imap_account, 700, gaps=30, long_every=20)
    rng = random.Random(SEED)
    procs = Executors(str(pool.conninfo), imap_account, tmp_path / "executor.log")
    procs.job_types = "sync"
    procs.env.update(
        {
            # One connection: batches big enough for the parse processes (MIN_PARALLEL_BATCH),
            # which Executors turns off by default.
            "SECRETARY_SYNC_BATCH_SIZE": str(BATCH if connections > 1 else 70),
            "SECRETARY_PARSE_PROCESSES": "2" if connections == 1 else "0",
            "SECRETARY_SYNC_FIRST_CONNECTIONS": str(connections),
            "SECRETARY_LIVE_MIRROR": "false",
        }
    )
    job = await store.enqueue("sync", {"folders": ["INBOX"]}, max_attempts=50)
    killed_at: list[int] = []
    try:
        for _ in range(6):
            proc = procs.spawn()
            mark = f":{proc.pid}:"
            now = await wait_for_job(
                store,
                job.job_id,
                timeout=60,
                until=lambda j, mark=mark: (
                    j.status.is_terminal
                    or (j.status is JobStatus.RUNNING and mark in (j.lease_owner or ""))
                ),
            )
            at = rng.randint(now.processed, now.processed + 150)
            now = await wait_for_job(
                store,
                job.job_id,
                timeout=60,
                until=lambda j, at=at: j.status.is_terminal or j.processed >= at,
            )
            await asyncio.sleep(rng.uniform(0, 0.08))
            procs.kill(proc)
            now = await store.get(job.job_id)
            assert now is not None
            if now.status.is_terminal:
                break
            killed_at.append(now.processed)
            # Between attempts the mailbox changes: rows an earlier attempt wrote
            # (in any range) must follow, and messages go.
            await asyncio.to_thread(change_some, imap_account, rng)
            async with pool.connection() as conn:  # the process is gone: run its lease out
                await conn.execute(
                    "UPDATE imap_jobs SET lease_expires_at = now() - interval '1 second' "
                    "WHERE job_id = %s AND status = 'running'",
                    (job.job_id,),
                )
        proc = procs.spawn()
        done = await wait_for_job(store, job.job_id, timeout=120)
    finally:
        procs.close()
    assert done.status is JobStatus.COMPLETED, (done.error, procs.tail())
    await assert_mirror_is_the_server(pool, imap_account)
    evs = await events(store, job)
    assert len([e for e in evs if e.data.get("phase") == "split"]) == (connections > 1)
    processed = [e.data["processed"] for e in evs if "processed" in e.data]
    assert processed == sorted(processed)
    assert killed_at, "at least one kill landed in the middle of the sync"
    async with pool.connection() as conn:
        rows = await (
            await conn.execute(
                "SELECT subject, mentions_you FROM emails WHERE subject LIKE 'Long chaos %%'"
            )
        ).fetchall()
    assert len(rows) >= 30  # of 35, a few may have been expunged between attempts
    for row in rows:
        named = int(row["subject"].rsplit(" ", 1)[1]) % 2 == 0
        assert row["mentions_you"] is named, row
    report(
        f"first sync chaos over {connections} connection(s): {len(killed_at)} kill(s) mid-sync at processed={killed_at}, "
        f"attempts={done.attempt}, mirror equal to the server, "
        f"{len(rows)} long messages' mention verdicts exact"
    )


# -- Gmail -----------------------------------------------------------------------------


@needs_node
async def test_a_split_first_sync_on_gmail_keeps_labels_ids_and_the_download_budget(
    store: JobStore, pool: Any
) -> None:
    """Against the Gmail double: every range fetches X-GM-LABELS/MSGID/THRID and
    the bounded body prefix, whichever connection it went over."""
    rng = random.Random(SEED)
    messages = [
        GmailMessage(
            m.raw.decode("utf-8", "replace"),
            labels=["\\Inbox", *(["Work"] if rng.random() < 0.3 else [])],
            flags=["\\Seen"] if rng.random() < 0.5 else [],
        )
        for m in generate_mailbox(160, seed=5)
    ]
    with double(messages) as d:
        summary = await gmail_sync(store, pool, d, sync_batch_size=10, sync_first_connections=3)
        server = labelled(d)
    assert summary["folders"]["INBOX"]["connections"] == 3
    assert summary["messages_fetched"] == summary["processed"] == 160
    assert summary["bytes_fetched"] / 160 <= 16 * 1024
    rows = await gmail_rows(pool)
    assert len(rows) == 160 and len({r["gm_msgid"] for r in rows}) == 160
    for r in rows:
        labels, flags = server[r["gm_msgid"]]
        assert set(r["labels"]) == labels and set(r["flags"]) == flags
        assert r["gm_thrid"] is not None
