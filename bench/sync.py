"""Sync throughput against a raw imapclient fetch of the same messages, in one run.

    .venv/bin/python bench/sync.py [--messages 10000]
    .venv/bin/python bench/sync.py --rtt 40 [--connections 3]
    .venv/bin/python bench/sync.py --memory-only --messages 100000

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

Every sync runs in an executor of its own process (bench/executor_process.py,
the product's `python -m executor` with the check switchable), so the bench's
own work stays out of its figures. Its resident memory, alone and with its
children (the parse workers and their forkserver), is sampled every 50 ms and
the peaks printed (aim: under 300 MB for a 100,000-message first sync).
`--memory-only` runs just one first sync of `--messages` and prints its time
and those peaks: the cheap way to a 100,000-message figure.

Each first sync also prints where its CPU went (bench/cpu.py): seconds of the
executor, its parse workers, Postgres, Dovecot and everything else, against
what the machine's cores could give in that time. On a 2-core machine the
sync is bounded by that sum, not by any one process. So the default run also
prints a floor: the CPU of work a sync cannot skip, each part measured alone
(the raw fetch, the parse, Postgres's share of the sync), against what the
0.8x aim allows; `--rtt` prints the time the 2.5x aim needs beside the raw
fetch alone over the same connections.

`BENCH_EXECUTOR_LOG=FILE` keeps the executors' log; `BENCH_PYSPY=FILE` samples
each executor and its parse workers with py-spy (not a product dependency).

The mailbox is generated and written as a stream (app/demo/mailbox.py
`iter_mailbox`): only statistics and a sample of at most 10,000 messages (every
message of a default run) are kept, for the parse and bytes-per-message figures.
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
import concurrent.futures  # noqa: E402
import contextlib  # noqa: E402
import multiprocessing as mp  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from collections.abc import Iterable, Iterator  # noqa: E402
from dataclasses import dataclass, field, replace  # noqa: E402
from datetime import UTC, datetime, timedelta  # noqa: E402

from app.config import ImapAccount  # noqa: E402
from app.db.pool import open_pool  # noqa: E402
from app.demo.dovecot import DovecotServer  # noqa: E402
from app.demo.mailbox import SeedMessage, iter_mailbox, write_maildir  # noqa: E402
from app.jobs.models import Job  # noqa: E402
from app.jobs.store import JobStore  # noqa: E402
from app.mail.identity import Identity  # noqa: E402
from app.mail.mime import parse_message  # noqa: E402
from bench.cpu import CpuSplit, cpu_line  # noqa: E402
from bench.executor_process import NO_MENTIONS  # noqa: E402
from bench.rss import PeakRss  # noqa: E402
from bench.rtt_proxy import DelayProxy  # noqa: E402
from executor import mentions  # noqa: E402
from executor.handlers.sync import BODY_PREFIX_BYTES, FETCH_ITEMS  # noqa: E402
from tests.support.databases import DatabaseFactory, admin_url  # noqa: E402
from tests.support.executor_harness import imap_connect, wait_for_job  # noqa: E402

REPO = HERE.parent
# The parse figure is taken over at most this many messages, spread over the
# whole mailbox (a default run's 10,000 are all of them).
PARSE_SAMPLE = 10_000
# The memory aim of a 100,000-message first sync (issue 14).
RSS_AIM_MB = 300


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


def _fetch_share(account: ImapAccount, work: list[tuple[str, list[int]]]) -> int:
    """One connection's share of a split raw fetch: (folder, UIDs) batches in order."""
    client = imap_connect(account)
    n, selected = 0, None
    for name, uids in work:
        if name != selected:
            client.select_folder(name, readonly=True)
            selected = name
        n += len(client.fetch(uids, FETCH_ITEMS + ["MODSEQ"]))
    client.logout()
    return n


def raw_fetch_split(account: ImapAccount, batch: int, connections: int, *, processes: bool) -> int:
    """The raw fetch over `connections` connections, batches dealt out in turn,
    on threads of this one process (imapclient's parsing shares one GIL, as in
    the executor) or in processes of their own (no shared GIL): the ceiling a
    split sync in one process can hope for, beside the one without that limit."""
    client = imap_connect(account)
    batches: list[tuple[str, list[int]]] = []
    for flags, _, name in client.list_folders():
        if b"\\Noselect" in flags:
            continue
        client.select_folder(name, readonly=True)
        uids = sorted(client.search("ALL"))
        batches += [(name, uids[i : i + batch]) for i in range(0, len(uids), batch)]
    client.logout()
    shares = [batches[i::connections] for i in range(connections)]
    pool: concurrent.futures.Executor = (
        concurrent.futures.ProcessPoolExecutor(connections, mp.get_context("fork"))
        if processes
        else concurrent.futures.ThreadPoolExecutor(connections)
    )
    with pool:
        return sum(pool.map(_fetch_share, [account] * connections, shares))


def big_messages(count: int, seed: int = 5) -> Iterator[SeedMessage]:
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
    for i in range(count):
        drawn = rng.choices(words, k=14 * 1200)  # one draw per message: 2 ms, not 30
        lines = [" ".join(drawn[j : j + 14]) for j in range(0, len(drawn), 14)]
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
        yield SeedMessage(raw=raw, internal_date=when, kind="long")


@dataclass
class Mailbox:
    """What the bench keeps of the mailbox it wrote: counts, byte totals, and
    a sample of messages for the parse figure (never all of a big mailbox)."""

    count: int = 0
    big: int = 0
    whole_bytes: int = 0
    old_prefix_bytes: int = 0  # each message cut at the former 64 KiB prefix
    sample: list[bytes] = field(default_factory=list)

    def keep(self, messages: Iterable[SeedMessage], stride: int) -> Iterator[SeedMessage]:
        for i, m in enumerate(messages):
            self.count += 1
            self.whole_bytes += len(m.raw)
            self.old_prefix_bytes += min(len(m.raw), 65536)
            if i % stride == 0:
                self.sample.append(m.raw)
            yield m


def spread(
    regular: Iterator[SeedMessage], regular_count: int, big: Iterator[SeedMessage], big_count: int
) -> Iterator[SeedMessage]:
    """The long messages spread evenly among the others, as in a real mailbox
    (not all in one stretch): each batch then asks the server about a few, and
    no one connection of a split first sync gets all the SEARCH BODY work. Each
    takes the date of the message before it (Dovecot numbers a Maildir's files
    in date order), so the spread holds in UID order, not only in the stream."""
    stride = max(1, regular_count // big_count) if big_count else 0
    for i, message in enumerate(regular, 1):
        yield message
        if stride and i % stride == 0 and (long := next(big, None)) is not None:
            yield replace(long, internal_date=message.internal_date, folder=message.folder)
    yield from big


def write_mailbox(maildir: Path, messages: int, big_share: float) -> Mailbox:
    """Generate `messages` (`big_share` of them over the fetch prefix) straight
    into the Maildir, one at a time: 100,000 never sit in memory together."""
    box = Mailbox(big=round(messages * big_share))
    stream = spread(
        iter_mailbox(messages - box.big), messages - box.big, big_messages(box.big), box.big
    )
    write_maildir(maildir, box.keep(stream, stride=max(1, -(-messages // PARSE_SAMPLE))))
    return box


def search_cost(account: ImapAccount, identity: Identity, batch: int) -> tuple[int, float]:
    """(messages asked about, seconds): the server's SEARCH BODY over every
    message longer than the fetch prefix, one command per batch as sync does."""
    client = imap_connect(account)
    client.select_folder("INBOX", readonly=True)
    # The server picks them (RFC822.SIZE > n): a FETCH naming every UID of a
    # 100,000-message folder would not fit Dovecot's 64 KB command line.
    cut = sorted(client.search(["LARGER", str(BODY_PREFIX_BYTES)]))
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


def floor_line(
    raw_s: float, raw_cpu: dict[str, float], parse_s: float, sync_cpu: dict[str, float]
) -> str:
    """What a sync at 0.8x the raw fetch may spend, beside work it cannot skip.

    Why: on a 2-core machine the sync is bounded by the CPU of every process it
    touches. It does the raw fetch's work (the same FETCH, parsed by the same
    imapclient, served by the same Dovecot), parses what it fetched and has
    Postgres store it: the sum of those, each measured alone in this run, is a
    floor no pipeline goes under; the aim allows 2 cores x raw / 0.8."""
    cores = os.cpu_count() or 1
    # The bench process fetched; Dovecot, its child, counts as "parse workers" here.
    fetch = sum(v for k, v in raw_cpu.items() if k not in ("postgres", "other"))
    postgres = sync_cpu.get("postgres", 0.0)
    floor = fetch + parse_s + postgres
    allowed = cores * raw_s / 0.8
    return (
        f"CPU floor            : raw fetch {fetch:.2f} (imapclient + Dovecot) + parse alone "
        f"{parse_s:.2f} + Postgres {postgres:.2f} = {floor:.2f} core-s; the 0.8x aim allows "
        f"{allowed:.2f} ({cores} cores x {raw_s:.2f}s / 0.8)"
    )


@dataclass
class SyncFigures:
    first_s: float  # the first sync job, started_at -> finished_at
    resync_s: float | None  # the re-sync of the unchanged mailbox, when asked
    messages: int
    fetched: int  # bytes the first sync downloaded
    rss: PeakRss  # the executor process's, sampled while it ran
    cpu: dict[str, float]  # CPU seconds per program during the first sync


def executor_env(
    database_url: str, account: ImapAccount, batch: int, connections: int | None, home: Path
) -> dict[str, str]:
    """What tests/support/executor_harness.py's `executor_settings` gives an
    in-process executor, as the environment `python -m executor` reads."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SECRETARY_", "IMAP_")) and k != "DATABASE_URL"
    }
    env.update(
        {
            "DATABASE_URL": database_url,
            "IMAP_HOST": account.host,
            "IMAP_PORT": str(account.port),
            "IMAP_USERNAME": account.username,
            "IMAP_PASSWORD": account.password,
            "IMAP_SSL": "false",
            "SECRETARY_CONFIG": str(home / "no-config.yaml"),
            "SECRETARY_DATA_DIR": str(home / "executor-data"),
            "SECRETARY_LEASE_SECONDS": "5",
            "SECRETARY_POLL_SECONDS": "0.05",
            "SECRETARY_SYNC_BATCH_SIZE": str(batch),
            "SECRETARY_LIVE_MIRROR": "false",
        }
    )
    if connections:
        env["SECRETARY_SYNC_FIRST_CONNECTIONS"] = str(connections)
    return env


def profile(pid: int) -> subprocess.Popen[bytes] | None:
    """`BENCH_PYSPY=FILE`: sample the executor and its parse workers with py-spy
    (not a product dependency: `pip install py-spy`) into FILE, one folded
    stack per line, for finding where a sync's CPU goes; figures taken then are
    slowed by the sampling."""
    out = os.environ.get("BENCH_PYSPY")
    if not out:
        return None
    command = ["py-spy", "record", "-p", str(pid), "-s", "-r", "250", "-f", "raw", "-o", out]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@contextlib.contextmanager
def executor_process(
    env: dict[str, str], log: Path, *, check: bool
) -> Iterator[tuple[subprocess.Popen[bytes], PeakRss]]:
    """One worker's executor in its own process, its memory sampled until it stops."""
    # `-c`, not `-m bench.executor_process`: a parse worker re-runs a main
    # module run by name (multiprocessing's spawn fixup) and would import the
    # whole executor again; the product's `python -m executor` is spared
    # that, being a package's __main__.
    command = [sys.executable, "-c", "from bench.executor_process import main; main()"]
    command += [] if check else [NO_MENTIONS]
    command += ["--workers", "1", "--shutdown-grace", "2", "--log-level", "WARNING"]
    with log.open("ab") as out:
        proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    rss = PeakRss(proc.pid).start()
    spy = profile(proc.pid)
    try:
        yield proc, rss
    finally:
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(timeout=60)
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        rss.stop()


def log_tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:] if log.exists() else ""


async def finished(
    store: JobStore, job_id: uuid.UUID, proc: subprocess.Popen[bytes], log: Path, timeout: float
) -> Job:
    """The job once completed; the executor's log tail if it died first."""
    job = await wait_for_job(
        store,
        job_id,
        timeout=timeout,
        until=lambda j: j.status.is_terminal or proc.poll() is not None,
    )
    if not job.status.is_terminal:
        raise RuntimeError(f"executor exited ({proc.returncode}):\n{log_tail(log)}")
    assert job.status.value == "completed", job.error
    return job


def took(job: Job) -> float:
    assert job.started_at is not None and job.finished_at is not None
    return (job.finished_at - job.started_at).total_seconds()


async def run_sync(
    database_url: str,
    account: ImapAccount,
    batch: int,
    home: Path,
    *,
    check: bool = True,
    connections: int | None = None,
    resync: bool = True,
    timeout: float = 600.0,
) -> SyncFigures:
    """A first sync (and a re-sync) by an executor process of its own;
    `connections` caps a split first sync (the product's setting when None),
    `check` off runs it without the "mentions you" check."""
    pool = await open_pool(database_url)
    store = JobStore(pool)
    env = executor_env(database_url, account, batch, connections, home)
    log = Path(os.environ.get("BENCH_EXECUTOR_LOG") or home / "executor.log")
    try:
        with executor_process(env, log, check=check) as (proc, rss):
            cpu = CpuSplit(proc.pid).start()
            job = await store.enqueue("sync")
            done = await finished(store, job.job_id, proc, log, timeout)
            split = cpu.stop()
            resync_s = None
            if resync:
                again = await store.enqueue("sync")
                resync_s = took(await finished(store, again.job_id, proc, log, 60))
            last = await store.events_after(job.job_id, max(0, done.last_seq - 5))
            fetched = int(last[-1].data["summary"]["bytes_fetched"])
    finally:
        await pool.close()
    return SyncFigures(took(done), resync_s, done.processed, fetched, rss, split)


def rss_line(runs: Iterable[SyncFigures]) -> str:
    """The executor's peak resident memory over `runs`, alone and with its children."""
    peaks = [r.rss for r in runs]
    own = max(p.peak_kb for p in peaks) / 1024
    tree = max(p.peak_tree_kb for p in peaks) / 1024
    pss = max(p.peak_tree_pss_kb for p in peaks) / 1024
    children = max(p.most_children for p in peaks)
    return (
        f"executor peak RSS    : {own:.0f} MB executor process, {tree:.0f} MB with its "
        f"{children} children (parse workers, forkserver; RSS summed, {pss:.0f} MB PSS)"
    )


def sync_timeout(messages: int) -> float:
    """Long enough for a first sync of `messages` on a loaded machine."""
    return 600.0 + messages / 20


def rtt_figures(args: argparse.Namespace) -> None:
    """1 connection vs `--connections` for a first sync at `--rtt` ms of round trip."""
    home = Path(tempfile.mkdtemp(prefix="pbh-", dir="/tmp"))
    factory = DatabaseFactory(admin_url())
    try:
        with DovecotServer(mail_home=home) as server:
            count = write_mailbox(server.maildir, args.messages, args.big_share).count
            direct = ImapAccount(server.host, server.port, server.username, server.password, False)
            raw_fetch(direct, args.batch)  # Dovecot builds its indexes here, not in a timing
            with DelayProxy(server.host, server.port, args.rtt) as proxy:
                far = ImapAccount(proxy.host, proxy.port, server.username, server.password, False)
                t0 = time.perf_counter()
                n_raw = raw_fetch(far, args.batch)
                raw_s = time.perf_counter() - t0
                split_s: dict[str, float] = {}
                for how in ("threads", "processes"):
                    t0 = time.perf_counter()
                    n = raw_fetch_split(
                        far, args.batch, args.connections, processes=how == "processes"
                    )
                    split_s[how] = time.perf_counter() - t0
                    assert n == n_raw, (how, n, n_raw)
                best: dict[int, float] = {}
                runs: list[SyncFigures] = []
                for _ in range(args.rounds):
                    for conns in (1, args.connections):
                        with factory.database() as url:
                            run = asyncio.run(
                                run_sync(
                                    url,
                                    far,
                                    args.batch,
                                    home,
                                    connections=conns,
                                    timeout=sync_timeout(count),
                                )
                            )
                        assert run.messages == count, (run.messages, count)
                        best[conns] = min(best.get(conns, float("inf")), run.first_s)
                        runs.append(run)
        one, many = best[1], best[args.connections]
        print(
            f"first sync of {count} messages at {args.rtt:g} ms round trip (best of {args.rounds}):"
        )
        print(
            f"raw imapclient fetch : 1 connection  {raw_s:6.2f}s = {n_raw / raw_s:,.0f} msgs/s (reference)"
        )
        for how, took in split_s.items():
            print(
                f"raw imapclient fetch : {args.connections} connections {took:6.2f}s "
                f"= {n_raw / took:,.0f} msgs/s, {raw_s / took:.2f}x of 1 ({how})"
            )
        print(f"sync job             : 1 connection  {one:6.2f}s = {count / one:,.0f} msgs/s")
        print(
            f"sync job             : {args.connections} connections {many:6.2f}s "
            f"= {count / many:,.0f} msgs/s"
        )
        print(f"ratio {args.connections}/1 connections : {one / many:.2f}x  (aim >= 2.5x at 40 ms)")
        print(
            f"what the aim needs   : {args.connections} connections in <= {one / 2.5:.2f}s; "
            f"the raw fetch alone over {args.connections} took {split_s['threads']:.2f}s "
            f"(threads, one GIL as in the executor) and {split_s['processes']:.2f}s (processes)"
        )
        for run in runs:
            print(cpu_line(run.cpu, run.first_s))
        print(rss_line(runs))
    finally:
        factory.close()
        shutil.rmtree(home, ignore_errors=True)


def memory_figures(args: argparse.Namespace) -> None:
    """One first sync of `--messages` (the product's settings, check on): time and peak RSS."""
    home = Path(tempfile.mkdtemp(prefix="pbh-", dir="/tmp"))
    factory = DatabaseFactory(admin_url())
    try:
        with DovecotServer(mail_home=home) as server:
            t0 = time.perf_counter()
            box = write_mailbox(server.maildir, args.messages, args.big_share)
            account = ImapAccount(server.host, server.port, server.username, server.password, False)
            raw_fetch(account, args.batch)  # warm-up: Dovecot builds its indexes here
            print(
                f"mailbox: {box.count} messages generated and indexed in {time.perf_counter() - t0:.1f}s"
            )
            with factory.database() as url:
                run = asyncio.run(
                    run_sync(
                        url,
                        account,
                        args.batch,
                        home,
                        resync=False,
                        timeout=sync_timeout(box.count),
                    )
                )
        assert run.messages == box.count, (run.messages, box.count)
        print(
            f"first sync (executor): {run.messages} msgs in {run.first_s:.2f}s "
            f"= {run.messages / run.first_s:,.0f} msgs/s (one run, mentions check on)"
        )
        print(rss_line([run]) + f"; aim < {RSS_AIM_MB} MB")
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
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--rtt", type=float, default=None, help="price a server this many ms away instead"
    )
    mode.add_argument(
        "--memory-only",
        action="store_true",
        help="one first sync of --messages: its time and the executor's peak RSS only",
    )
    parser.add_argument(
        "--connections", type=int, default=3, help="connections of the split first sync (--rtt)"
    )
    args = parser.parse_args()
    if args.rtt is not None:
        rtt_figures(args)
        return
    if args.memory_only:
        memory_figures(args)
        return
    home = Path(tempfile.mkdtemp(prefix="pbh-", dir="/tmp"))
    factory = DatabaseFactory(admin_url())
    try:
        with DovecotServer(mail_home=home) as server:
            t0 = time.perf_counter()
            box = write_mailbox(server.maildir, args.messages, args.big_share)
            account = ImapAccount(
                server.host, server.port, server.username, server.password, ssl=False
            )
            raw_fetch(account, args.batch)  # warm-up: Dovecot builds its indexes here
            print(
                f"mailbox: {box.count} messages generated and indexed in {time.perf_counter() - t0:.1f}s"
            )
            raw_cpu = CpuSplit(os.getpid()).start()
            t0 = time.perf_counter()
            n_raw = raw_fetch(account, args.batch)
            raw_s = time.perf_counter() - t0
            raw_split = raw_cpu.stop()
            me = Identity("alex.roy@example.com", "Alex Roy", ("aroy@example.com",))
            n_cut, search_s = search_cost(account, me, args.batch)
            # Off and on alternate, best of `--rounds` each: a shared machine's
            # load drifts more during one run than the check costs.
            off_s = sync_s = resync_s = float("inf")
            runs: list[SyncFigures] = []
            limit = sync_timeout(box.count)
            for _ in range(args.rounds):
                with factory.database() as url:
                    off = asyncio.run(
                        run_sync(url, account, args.batch, home, check=False, timeout=limit)
                    )
                    off_s, n_off = min(off_s, off.first_s), off.messages
                with factory.database() as url:
                    on = asyncio.run(run_sync(url, account, args.batch, home, timeout=limit))
                    assert on.resync_s is not None
                    if on.first_s < sync_s:
                        best_on = on
                    sync_s, resync_s = min(sync_s, on.first_s), min(resync_s, on.resync_s)
                    n_sync, fetched = on.messages, on.fetched
                runs += [off, on]
        parse_off, parse_on = parse_cost(box.sample, None), parse_cost(box.sample, me)
        print(
            f"raw imapclient fetch : {n_raw} msgs in {raw_s:.2f}s = {n_raw / raw_s:,.0f} msgs/s (baseline)"
        )
        print(
            f"sync job (executor)  : {n_sync} msgs in {sync_s:.2f}s = {n_sync / sync_s:,.0f} msgs/s"
        )
        print(f"ratio sync/raw       : {(n_sync / sync_s) / (n_raw / raw_s):.2f}x  (aim >= 0.8x)")
        print(cpu_line(best_on.cpu, best_on.first_s))
        print(floor_line(raw_s, raw_split, parse_on * n_sync / 1e6, best_on.cpu))
        print(f"re-sync, unchanged   : {resync_s * 1000:.0f} ms  (aim < 50 ms)")
        print(
            f"mentions check       : sync {n_off / off_s:,.0f} msgs/s without, "
            f"{n_sync / sync_s:,.0f} msgs/s with ({(off_s / sync_s - 1) * 100:+.0f}% throughput); "
            f"{box.big} of {box.count} messages over the {BODY_PREFIX_BYTES // 1024} KiB prefix "
            "asked about with SEARCH BODY"
        )
        sampled = "" if len(box.sample) == box.count else f", over {len(box.sample)} of them"
        print(
            f"parse per message    : {parse_off:.0f} us without the check, "
            f"{parse_on:.0f} us with it (one process{sampled})"
        )
        whole = box.whole_bytes / box.count
        old_prefix = box.old_prefix_bytes / box.count
        print(
            f"bytes per message    : {fetched / n_sync / 1024:.1f} KiB fetched by the first sync "
            f"(header fields + {BODY_PREFIX_BYTES // 1024} KiB body prefix; budget 16 KiB), "
            f"{old_prefix / 1024:.1f} KiB with the former 64 KiB prefix "
            f"({fetched / n_sync / old_prefix:.2f}x), {whole / 1024:.1f} KiB whole messages"
        )
        if n_cut:
            print(
                f"server SEARCH BODY   : {n_cut} cut-off messages in {search_s * 1000:.0f} ms "
                f"= {search_s / n_cut * 1e6:.0f} us per message asked about"
            )
        print(rss_line(runs))
    finally:
        factory.close()
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
