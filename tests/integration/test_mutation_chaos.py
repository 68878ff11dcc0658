"""Chaos: `kill -9` a real executor process at random points of multi-batch
mutations, again and again, until the job ends; then every approved message has
changed exactly once, and undo (killed too) restores the mailbox exactly:
folders and flags, unread mail unread again. Real Postgres, real Dovecot.

SPEC §8: "Every finished mutation can be undone exactly, including one that was
retried, cancelled part-way, or whose worker died mid-way."

After each SIGKILL the dead worker's lease is run out at once (the process is
gone, so waiting SECRETARY_LEASE_SECONDS would change nothing but the clock);
the next executor's reaper then hands the job to it, as it would a real one.
Seeded: PIPER_CHAOS_SEED and PIPER_CHAOS_RUNS change the schedule.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.config import ImapAccount
from app.jobs.models import Job, JobStatus, JobType
from app.jobs.store import ChangeState, JobStore
from executor import imap_ops
from executor.handlers.mutations import RECONCILED
from tests.integration.test_mutations import (
    CLEANED,
    Mailbox,
    approve_rows,
    mailbox,
    undo_everything_recorded,
)
from tests.support.executor_harness import imap_connect, wait_for_job
from tests.support.figures import report

SEED = int(os.environ.get("PIPER_CHAOS_SEED", "20261120"))
CLEAN_RUNS = int(os.environ.get("PIPER_CHAOS_RUNS", "20"))
LEASE_SECONDS = 2
BATCH = 3
SEEN = "\\Seen"
REPO = Path(__file__).resolve().parents[2]


@dataclass
class Figures:
    runs: int = 0
    kills: int = 0
    kills_mid_job: int = 0
    messages_checked: int = 0
    reconciled: int = 0
    mismatches: int = 0

    def line(self, name: str) -> str:
        return (
            f"chaos[{name}]: runs={self.runs} kills={self.kills} "
            f"kills_mid_job={self.kills_mid_job} messages_checked={self.messages_checked} "
            f"reconciled={self.reconciled} mismatches={self.mismatches}"
        )


# -- the mailbox ---------------------------------------------------------------------


def seed_mailbox(account: ImapAccount, rng: random.Random, inbox: int = 13, lists: int = 5) -> None:
    """Unique Message-IDs; read and unread, flagged, a keyword; two folders."""
    client = imap_connect(account)
    try:
        client.create_folder("Lists")
        for i in range(inbox + lists):
            folder = "INBOX" if i < inbox else "Lists"
            mid = f"<chaos-{i}-{rng.getrandbits(40):010x}@example.org>"
            raw = (
                f"Message-ID: {mid}\r\nFrom: News {i} <news{i}@example.org>\r\n"
                f"To: alex.roy@example.com\r\nSubject: chaos {i}\r\n"
                f"Date: Fri, 20 Nov 2026 10:{i:02d}:00 +0000\r\n\r\nbody {i}\r\n"
            ).encode()
            flags = [
                f for f, p in ((SEEN, 0.5), ("\\Flagged", 0.15), ("$Work", 0.2)) if rng.random() < p
            ]
            client.append(folder, raw, flags=flags)
    finally:
        client.logout()


def identities(
    account: ImapAccount, folders: tuple[str, ...] = ("INBOX", "Lists")
) -> list[dict[str, Any]]:
    client = imap_connect(account)
    try:
        out = []
        for folder in folders:
            info = client.select_folder(folder, readonly=True)
            validity = int(info[b"UIDVALIDITY"])
            state = (
                imap_ops.fetch_state(client, client.search("ALL")) if info.get(b"EXISTS") else {}
            )
            out += [
                {
                    "folder": folder,
                    "uidvalidity": validity,
                    "uid": uid,
                    "message_id": mid,
                    "subject": "",
                    "flags": flags,
                }
                for uid, (flags, mid) in sorted(state.items())
            ]
        return out
    finally:
        client.logout()


def expected_after(
    prior: Mailbox, chosen: list[dict[str, Any]], target: str | None, add: set[str]
) -> Mailbox:
    """The prior mailbox with exactly the chosen messages changed once."""
    picked = {(m["folder"], m["message_id"]) for m in chosen}
    out: dict[str, list[tuple[str | None, frozenset[str]]]] = {}
    for folder, items in prior.items():
        for mid, flags in items:
            if (folder, mid) in picked:
                out.setdefault(target or folder, []).append((mid, flags | add))
            else:
                out.setdefault(folder, []).append((mid, flags))
    return {f: sorted(v, key=lambda i: (i[0] or "", sorted(i[1]))) for f, v in out.items() if v}


def mismatches(got: Mailbox, want: Mailbox) -> int:
    flat = lambda box: Counter((f, m, fl) for f, items in box.items() for m, fl in items)  # noqa: E731
    a, b = flat(got), flat(want)
    return sum(((a - b) + (b - a)).values())


def without_ids(box: Mailbox, ids: set[str | None]) -> Mailbox:
    return {f: [i for i in items if i[0] not in ids] for f, items in box.items()}


def size(box: Mailbox) -> int:
    return sum(len(v) for v in box.values())


# -- the executor as a process ----------------------------------------------------------


class Executors:
    """Spawns `python -m executor` processes and makes sure none outlives the test."""

    def __init__(self, database_url: str, account: ImapAccount, log: Path) -> None:
        self.env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "IMAP_HOST": account.host,
            "IMAP_PORT": str(account.port),
            "IMAP_USERNAME": account.username,
            "IMAP_PASSWORD": account.password,
            "IMAP_SSL": "false",
            "SECRETARY_LEASE_SECONDS": str(LEASE_SECONDS),
            "SECRETARY_POLL_SECONDS": "0.1",
            "SECRETARY_PARSE_PROCESSES": "0",
            # Killed executors' IMAP connections count against the account's
            # budget until their slots expire; the chaos kills many.
            "IMAP_MAX_CONNECTIONS": "100",
            "SECRETARY_CONFIG": str(log.parent / "no-config.yaml"),
        }
        self.log = log
        self.live: list[subprocess.Popen[bytes]] = []
        self.job_types = "clean,mark_read,move,undo"

    def spawn(self) -> subprocess.Popen[bytes]:
        with self.log.open("ab") as out:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "executor",
                    "--workers",
                    "1",
                    "--job-types",
                    self.job_types,
                    "--shutdown-grace",
                    "1",
                    "--log-level",
                    "WARNING",
                ],
                cwd=REPO,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.live.append(proc)
        return proc

    def kill(self, proc: subprocess.Popen[bytes]) -> None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        self.live.remove(proc)

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        self.live.remove(proc)

    def close(self) -> None:
        for proc in list(self.live):
            self.kill(proc)

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""


@contextlib.contextmanager
def executors(database_url: str, account: ImapAccount, tmp: Path) -> Iterator[Executors]:
    ex = Executors(database_url, account, tmp / "executor.log")
    try:
        yield ex
    finally:
        ex.close()


async def run_out_lease(pool: Any, job_id: Any) -> None:
    async with pool.connection() as conn:
        await conn.execute(
            "UPDATE imap_jobs SET lease_expires_at = now() - interval '1 second' "
            "WHERE job_id = %s AND status = 'running'",
            (job_id,),
        )


async def poll(store: JobStore, job: Job, until: Any, timeout: float = 60.0) -> Job:
    """Like wait_for_job, but every few milliseconds: kills must land mid-batch."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        now = await store.get(job.job_id)
        assert now is not None
        if until(now):
            return now
        assert loop.time() < deadline, f"job {job.job_id} stuck at {now.status} {now.processed}"
        await asyncio.sleep(0.003)


async def drive(
    store: JobStore,
    pool: Any,
    ex: Executors,
    job: Job,
    rng: random.Random,
    kills: int,
    figures: Figures,
    *,
    max_delay: float = 0.04,
    cancel_after: int | None = None,
    eager: bool = False,
) -> Job:
    """Kill the job's executor `kills` times at random points after it claimed
    the job, then let one run it to the end (cancelling it part-way if asked).
    `eager` kills as soon as the claim is seen, so a short job is surely hit
    in its middle."""
    total = job.total_estimate or 1
    for _ in range(kills):
        proc = ex.spawn()
        pid_mark = f":{proc.pid}:"
        try:
            now = await poll(
                store,
                job,
                lambda j, mark=pid_mark: (
                    j.status.is_terminal
                    or (j.status is JobStatus.RUNNING and mark in (j.lease_owner or ""))
                ),
            )
            # Somewhere in the job: after a random number of messages, then a
            # random moment into the next batch (write-ahead, IMAP, or commit).
            if not eager:
                at = rng.randint(now.processed, max(now.processed, total - 1))
                now = await poll(
                    store, job, lambda j, at=at: j.status.is_terminal or j.processed >= at
                )
                if not now.status.is_terminal:
                    await asyncio.sleep(rng.uniform(0, max_delay))
        finally:
            ex.kill(proc)
        figures.kills += 1
        now = await store.get(job.job_id)
        assert now is not None
        if now.status.is_terminal:
            break
        figures.kills_mid_job += 1
        await run_out_lease(pool, job.job_id)
    if cancel_after is not None:
        now = await store.get(job.job_id)
        assert now is not None
        if now.status is JobStatus.PENDING and now.processed >= cancel_after:
            # Already past the point: cancel it between attempts (part-way all the same).
            await store.request_cancel(job.job_id)
            return await wait_for_job(store, job.job_id, timeout=30)
    proc = ex.spawn()
    try:
        if cancel_after is not None:
            await wait_for_job(
                store,
                job.job_id,
                timeout=60,
                until=lambda j: j.status.is_terminal or j.processed >= cancel_after,
            )
            await store.request_cancel(job.job_id)
        final = await wait_for_job(store, job.job_id, timeout=90)
    finally:
        ex.stop(proc)
    return final


async def check_record(
    store: JobStore, job: Job, chosen: list[dict[str, Any]], figures: Figures
) -> None:
    changes = await store.job_changes(job.job_id)
    keys = Counter((c.folder, c.uidvalidity, c.uid) for c in changes)
    want = Counter((m["folder"], m["uidvalidity"], m["uid"]) for m in chosen)
    assert keys == want, "every approved message has exactly one record row"
    bad = [c for c in changes if c.state is not ChangeState.APPLIED]
    figures.mismatches += len(bad)
    figures.reconciled += sum(1 for c in changes if c.reason == RECONCILED)


async def undo_and_check(
    store: JobStore,
    pool: Any,
    ex: Executors,
    account: ImapAccount,
    original: Job,
    prior: Mailbox,
    rng: random.Random,
    figures: Figures,
) -> None:
    undo = await undo_everything_recorded(store, pool, original, batch_size=BATCH, max_attempts=100)
    done = await drive(store, pool, ex, undo, rng, rng.randint(0, 2), figures)
    assert done.status is JobStatus.COMPLETED, (done.error, ex.tail())
    restored = await asyncio.to_thread(mailbox, account)
    figures.messages_checked += size(prior)
    figures.mismatches += mismatches(restored, prior)


async def chaos_runs(
    store: JobStore,
    pool: Any,
    account: ImapAccount,
    tmp: Path,
    job_type: JobType,
    runs: int,
    seed: int,
    **params: Any,
) -> Figures:
    rng = random.Random(seed)
    figures = Figures()
    await asyncio.to_thread(seed_mailbox, account, rng)
    target = {JobType.CLEAN: CLEANED, JobType.MOVE: params.get("target_folder")}.get(job_type)
    add = {SEEN} if job_type in (JobType.CLEAN, JobType.MARK_READ) else set()
    with executors(str(pool.conninfo), account, tmp) as ex:
        # The runs asked for; then, while no kill has yet landed inside a job
        # (a fast job can end before every random kill point), a few more whose
        # kills come as soon as the job is claimed.
        while figures.runs < runs or (figures.kills_mid_job == 0 and figures.runs < runs + 4):
            eager = figures.runs >= runs
            prior = await asyncio.to_thread(mailbox, account)
            pool_ids = await asyncio.to_thread(identities, account)
            chosen = rng.sample(pool_ids, rng.randint(7, 12))
            job = await approve_rows(
                store, job_type, chosen, batch_size=BATCH, max_attempts=100, **params
            )
            done = await drive(store, pool, ex, job, rng, rng.randint(1, 3), figures, eager=eager)
            assert done.status is JobStatus.COMPLETED, (done.error, ex.tail())
            await check_record(store, done, chosen, figures)
            after = await asyncio.to_thread(mailbox, account)
            want = expected_after(prior, chosen, target, add)
            figures.messages_checked += size(want)
            figures.mismatches += mismatches(after, want)
            await undo_and_check(store, pool, ex, account, done, prior, rng, figures)
            figures.runs += 1
    return figures


async def test_chaos_clean_killed_at_random_moves_each_message_once_and_undo_restores_exactly(
    store: JobStore, pool: Any, imap_account: ImapAccount, tmp_path: Path
) -> None:
    figures = await chaos_runs(
        store,
        pool,
        imap_account,
        tmp_path,
        JobType.CLEAN,
        CLEAN_RUNS,
        SEED,
        target_folder=CLEANED,
    )
    report(figures.line("clean"))
    assert figures.runs >= 20 and figures.kills_mid_job > 0
    assert figures.mismatches == 0


async def test_chaos_mark_read_killed_at_random_undo_makes_unread_mail_unread_again(
    store: JobStore, pool: Any, imap_account: ImapAccount, tmp_path: Path
) -> None:
    figures = await chaos_runs(store, pool, imap_account, tmp_path, JobType.MARK_READ, 4, SEED + 1)
    report(figures.line("mark_read"))
    assert figures.kills_mid_job > 0 and figures.mismatches == 0


async def test_chaos_move_killed_at_random_moves_each_message_once_and_undo_restores_exactly(
    store: JobStore, pool: Any, imap_account: ImapAccount, tmp_path: Path
) -> None:
    figures = await chaos_runs(
        store,
        pool,
        imap_account,
        tmp_path,
        JobType.MOVE,
        4,
        SEED + 2,
        target_folder="Projects/Archive",
    )
    report(figures.line("move"))
    assert figures.kills_mid_job > 0 and figures.mismatches == 0


async def test_chaos_clean_cancelled_part_way_after_a_kill_is_undone_exactly(
    store: JobStore, pool: Any, imap_account: ImapAccount, tmp_path: Path
) -> None:
    """A clean killed once, then cancelled part-way: the undo proposal is made
    from the cancelled job's change record (it used to need a completed job and
    its last event), and restores every message it moved, read state included."""
    rng = random.Random(SEED + 3)
    figures = Figures()
    await asyncio.to_thread(seed_mailbox, imap_account, rng)
    with executors(str(pool.conninfo), imap_account, tmp_path) as ex:
        attempts = 0
        while figures.runs < 3:
            attempts += 1
            assert attempts <= 8, "the cancel kept arriving after the job had finished"
            prior = await asyncio.to_thread(mailbox, imap_account)
            chosen = rng.sample(await asyncio.to_thread(identities, imap_account), 12)
            job = await approve_rows(
                store,
                JobType.CLEAN,
                chosen,
                batch_size=1,
                max_attempts=100,
                target_folder=CLEANED,
            )
            done = await drive(store, pool, ex, job, rng, 1, figures, cancel_after=6)
            changes = await store.job_changes(job.job_id)
            applied = [c for c in changes if c.state is ChangeState.APPLIED]
            if done.status is JobStatus.COMPLETED or len(applied) == len(chosen):
                # The cancel came after the last batch (a timing race, not a fault:
                # the job ends completed, or cancelled with nothing left to do):
                # undo must still be exact, but this run is not a part-way cancel.
                await undo_and_check(store, pool, ex, imap_account, done, prior, rng, figures)
                continue
            assert done.status is JobStatus.CANCELLED, (done.status, done.error, ex.tail())
            assert 0 < len(applied) < len(chosen)
            figures.reconciled += sum(1 for c in changes if c.reason == RECONCILED)
            # Applied ones moved once and read; untouched ones exactly as before.
            uncertain = {c.message_id for c in changes if c.state is ChangeState.INTENDED}
            after = await asyncio.to_thread(mailbox, imap_account)
            moved = [m for m in chosen if m["message_id"] in {c.message_id for c in applied}]
            want = expected_after(prior, moved, CLEANED, {SEEN})
            figures.messages_checked += size(without_ids(want, uncertain))
            figures.mismatches += mismatches(
                without_ids(after, uncertain), without_ids(want, uncertain)
            )
            await undo_and_check(store, pool, ex, imap_account, done, prior, rng, figures)
            figures.runs += 1
    report(figures.line("clean-cancelled"))
    assert figures.mismatches == 0
