"""Sync throughput against a raw imapclient fetch of the same messages, in one run.

    .venv/bin/python bench/sync.py [--messages 10000]
    .venv/bin/python bench/sync.py --rtt 40 [--connections 3]

Prints messages/s for (a) a raw imapclient FETCH of every message with the
same items the sync asks for, and (b) a full `sync` job run by a real
executor into a real Postgres, their ratio, and the time of a re-sync of the
unchanged mailbox, and the bytes the first sync downloads per message (SPEC §9:
at most 16 KB on average) against whole messages and the former 64 KiB prefix.

It also prices the "mentions you" check (executor/mentions.py): the same sync
with the check off and on, each into a fresh database, in the same run, plus
the parse alone per message with and without it. `--big-share` of the mailbox
is made of messages longer than the fetch prefix, so the server's
`SEARCH BODY` for the part never downloaded is part of the figure.

With `--rtt MS` it prices a far-away server instead: Dovecot behind a proxy
that adds MS of round trip (bench/rtt_proxy.py), the same first sync with one
connection and with `--connections` (a split first sync, executor/sync_parallel.py),
each into a fresh database, their ratio, and a raw one-connection fetch at that
round trip for reference.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this file's folder comes first on sys.path, where
# bench/queue.py would shadow the standard library's `queue` (asyncio imports it).
HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(HERE.parent))

import argparse  # noqa: E402
import asyncio  # noqa: E402
import random  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from datetime import UTC, datetime, timedelta  # noqa: E402

from app.config import ImapAccount  # noqa: E402
from app.db.pool import open_pool  # noqa: E402
from app.demo.dovecot import DovecotServer  # noqa: E402
from app.demo.mailbox import SeedMessage, generate_mailbox, write_maildir  # noqa: E402
from app.jobs.store import JobStore  # noqa: E402
from app.mail.identity import Identity  # noqa: E402
from app.mail.mime import parse_message  # noqa: E402
from bench.rtt_proxy import DelayProxy  # noqa: E402
from executor import mentions  # noqa: E402
from executor.handlers.sync import BODY_PREFIX_BYTES, FETCH_ITEMS  # noqa: E402
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


def big_messages(count: int, seed: int = 5) -> list[SeedMessage]:
    """Bulk mail longer than the fetch prefix; every third names the person past the cut."""
    rng = random.Random(seed)
    words = [
        "cache",
        "fleet",
        "latency",
        "throughput",
        "chart",
        "quarter",
        "region",
        "release",
        "notes",
    ]
    out = []
    for i in range(count):
        lines = [" ".join(rng.choice(words) for _ in range(14)) for _ in range(1200)]
        tail = "Thanks to Alex Roy for the charts." if i % 3 == 0 else "See you next quarter."
        body = "\r\n".join(lines) + "\r\n\r\n" + tail + "\r\n"
        raw = (
            f"From: Reports <reports@ops.example>\r\nTo: ops@ops.example\r\n"
            f"Subject: Long report {i}\r\nDate: Tue, 17 Nov 2026 12:00:00 +0000\r\n"
            f"Message-ID: <long-{i}@ops.example>\r\nList-Id: <reports.ops.example>\r\n"
            f"Content-Type: text/plain; charset=utf-8\r\n\r\n{body}"
        ).encode()
        assert len(raw) > BODY_PREFIX_BYTES
        when = datetime(2026, 11, 17, 12, tzinfo=UTC) + timedelta(seconds=i)
        out.append(SeedMessage(raw=raw, internal_date=when, kind="long"))
    return out


def search_cost(account: ImapAccount, identity: Identity, batch: int) -> tuple[int, float]:
    """(messages asked about, seconds): the server's SEARCH BODY over every
    message longer than the fetch prefix, one command per batch as sync does."""
    client = imap_connect(account)
    client.select_folder("INBOX", readonly=True)
    sizes = client.fetch(client.search("ALL"), ["RFC822.SIZE"])
    cut = sorted(u for u, d in sizes.items() if d[b"RFC822.SIZE"] > BODY_PREFIX_BYTES)
    terms = identity.search_terms()
    t0 = time.perf_counter()
    for i in range(0, len(cut), batch):
        mentions.server_mentions(client, cut[i : i + batch], terms)
    elapsed = time.perf_counter() - t0
    client.logout()
    return len(cut), elapsed


def parse_cost(raws: list[bytes], identity: Identity | None) -> float:
    """Microseconds per message to parse the fetched prefix, in this process."""
    prefixes = [r[:BODY_PREFIX_BYTES] for r in raws]
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        for r in prefixes:
            parse_message(r, identity=identity)
        best = min(best, time.perf_counter() - t0)
    return best / len(prefixes) * 1e6


async def run_sync(
    database_url: str,
    account: ImapAccount,
    batch: int,
    *,
    check: bool = True,
    connections: int | None = None,
) -> tuple[float, float, int, int]:
    """(first sync s, re-sync s, messages, bytes the first sync downloaded);
    `connections` caps a split first sync (the product's setting when None)."""
    mentions.ENABLED = check  # read when each sync job starts, in this process
    pool = await open_pool(database_url)
    store = JobStore(pool)
    settings = executor_settings(
        sync_batch_size=batch,
        poll_seconds=0.05,
        **({"sync_first_connections": connections} if connections else {}),
    )
    async with running_executor(database_url, account, workers=1, settings=settings):
        job = await store.enqueue("sync")
        done = await wait_for_job(store, job.job_id, timeout=600)
        assert done.status.value == "completed", done.error
        first = (done.finished_at - done.started_at).total_seconds()  # type: ignore[operator]
        again = await store.enqueue("sync")
        redo = await wait_for_job(store, again.job_id, timeout=60)
        resync = (redo.finished_at - redo.started_at).total_seconds()  # type: ignore[operator]
        events = await store.events_after(job.job_id, 0)
        fetched = int(events[-1].data["summary"]["bytes_fetched"])
    await pool.close()
    return first, resync, done.processed, fetched


class PeakRss:
    """Samples this process's resident memory (the executor runs in it) every
    50 ms while syncs run: what a first sync of this size costs in memory."""

    def __init__(self) -> None:
        self.peak_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    self.peak_kb = max(self.peak_kb, int(line.split()[1]))
            self._stop.wait(0.05)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


def rtt_figures(args: argparse.Namespace) -> None:
    """1 connection vs `--connections` for a first sync at `--rtt` ms of round trip."""
    home = Path(tempfile.mkdtemp(prefix="pbh-", dir="/tmp"))
    factory = DatabaseFactory(admin_url())
    try:
        with DovecotServer(mail_home=home) as server:
            n_big = round(args.messages * args.big_share)
            count = write_maildir(
                server.maildir, generate_mailbox(args.messages - n_big) + big_messages(n_big)
            )
            direct = ImapAccount(server.host, server.port, server.username, server.password, False)
            raw_fetch(direct, args.batch)  # Dovecot builds its indexes here, not in a timing
            with DelayProxy(server.host, server.port, args.rtt) as proxy:
                far = ImapAccount(proxy.host, proxy.port, server.username, server.password, False)
                t0 = time.perf_counter()
                n_raw = raw_fetch(far, args.batch)
                raw_s = time.perf_counter() - t0
                best: dict[int, float] = {}
                with PeakRss() as rss:
                    for _ in range(args.rounds):
                        for conns in (1, args.connections):
                            with factory.database() as url:
                                s, _, n, _b = asyncio.run(
                                    run_sync(url, far, args.batch, connections=conns)
                                )
                            assert n == count, (n, count)
                            best[conns] = min(best.get(conns, float("inf")), s)
        one, many = best[1], best[args.connections]
        print(
            f"first sync of {count} messages at {args.rtt:g} ms round trip (best of {args.rounds}):"
        )
        print(
            f"raw imapclient fetch : 1 connection  {raw_s:6.2f}s = {n_raw / raw_s:,.0f} msgs/s (reference)"
        )
        print(f"sync job             : 1 connection  {one:6.2f}s = {count / one:,.0f} msgs/s")
        print(
            f"sync job             : {args.connections} connections {many:6.2f}s "
            f"= {count / many:,.0f} msgs/s"
        )
        print(f"ratio {args.connections}/1 connections : {one / many:.2f}x  (aim >= 2.5x at 40 ms)")
        print(
            f"executor peak RSS    : {rss.peak_kb / 1024:.0f} MB (this process, which runs the "
            "executor; parse workers apart)"
        )
    finally:
        factory.close()
        shutil.rmtree(home, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument(
        "--big-share", type=float, default=0.02, help="share of messages over the fetch prefix"
    )
    parser.add_argument("--rounds", type=int, default=2, help="sync runs per mode (best counts)")
    parser.add_argument(
        "--rtt", type=float, default=None, help="price a server this many ms away instead"
    )
    parser.add_argument(
        "--connections", type=int, default=3, help="connections of the split first sync (--rtt)"
    )
    args = parser.parse_args()
    if args.rtt is not None:
        rtt_figures(args)
        return
    home = Path(tempfile.mkdtemp(prefix="pbh-", dir="/tmp"))
    factory = DatabaseFactory(admin_url())
    try:
        with DovecotServer(mail_home=home) as server:
            t0 = time.perf_counter()
            n_big = round(args.messages * args.big_share)
            msgs = generate_mailbox(args.messages - n_big) + big_messages(n_big)
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
            me = Identity("alex.roy@example.com", "Alex Roy", ("aroy@example.com",))
            n_cut, search_s = search_cost(account, me, args.batch)
            # Off and on alternate, best of `--rounds` each: a shared machine's
            # load drifts more during one run than the check costs.
            off_s = sync_s = resync_s = float("inf")
            for _ in range(args.rounds):
                with factory.database() as url:
                    s, _, n_off, _b = asyncio.run(run_sync(url, account, args.batch, check=False))
                    off_s = min(off_s, s)
                with factory.database() as url:
                    s, r, n_sync, fetched = asyncio.run(run_sync(url, account, args.batch))
                    sync_s, resync_s = min(sync_s, s), min(resync_s, r)
        raws = [m.raw for m in msgs]
        parse_off, parse_on = parse_cost(raws, None), parse_cost(raws, me)
        print(
            f"raw imapclient fetch : {n_raw} msgs in {raw_s:.2f}s = {n_raw / raw_s:,.0f} msgs/s (baseline)"
        )
        print(
            f"sync job (executor)  : {n_sync} msgs in {sync_s:.2f}s = {n_sync / sync_s:,.0f} msgs/s"
        )
        print(f"ratio sync/raw       : {(n_sync / sync_s) / (n_raw / raw_s):.2f}x  (aim >= 0.8x)")
        print(f"re-sync, unchanged   : {resync_s * 1000:.0f} ms  (aim < 500 ms)")
        print(
            f"mentions check       : sync {n_off / off_s:,.0f} msgs/s without, "
            f"{n_sync / sync_s:,.0f} msgs/s with ({(off_s / sync_s - 1) * 100:+.0f}% throughput); "
            f"{n_big} of {len(msgs)} messages over the {BODY_PREFIX_BYTES // 1024} KiB prefix "
            "asked about with SEARCH BODY"
        )
        print(
            f"parse per message    : {parse_off:.0f} us without the check, "
            f"{parse_on:.0f} us with it (one process)"
        )
        whole = sum(len(r) for r in raws) / len(raws)
        old_prefix = sum(min(len(r), 65536) for r in raws) / len(raws)
        print(
            f"bytes per message    : {fetched / n_sync / 1024:.1f} KiB fetched by the first sync "
            f"(header + {BODY_PREFIX_BYTES // 1024} KiB body prefix; budget 16 KiB), "
            f"{old_prefix / 1024:.1f} KiB with the former 64 KiB prefix "
            f"({fetched / n_sync / old_prefix:.2f}x), {whole / 1024:.1f} KiB whole messages"
        )
        if n_cut:
            print(
                f"server SEARCH BODY   : {n_cut} cut-off messages in {search_s * 1000:.0f} ms "
                f"= {search_s / n_cut * 1e6:.0f} us per message asked about"
            )
    finally:
        factory.close()
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
