"""`secretary`: migrate, enqueue and follow jobs, and run everything locally."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg

from app.config import ImapAccount, Settings, SettingsError, load_settings
from app.db.connect import resolve_database_url
from app.db.migrate import MigrationMismatch, migrate
from app.jobs.models import MUTATION_JOB_TYPES, Job, JobStatus, JobType
from app.logs import configure_logging


def _conninfo(settings: Settings) -> str:
    return resolve_database_url(settings)


async def _with_store(settings: Settings, fn: Callable[[Any], Awaitable[int]]) -> int:
    from app.db.pool import open_pool
    from app.jobs.store import JobStore

    conninfo = await asyncio.to_thread(_conninfo, settings)
    await asyncio.to_thread(migrate, conninfo)
    pool = await open_pool(conninfo, max_size=2)
    try:
        return await fn(JobStore(pool))
    finally:
        await pool.close()


def positive_int(value: str) -> int:
    """argparse type: a whole number from 1 up (a limit, a count of attempts)."""
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {number}")
    return number


def _payload(value: str) -> dict[str, Any]:
    """argparse type: a JSON object (a list or a string would fail the job later)."""
    try:
        payload = json.loads(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON ({exc})") from None
    if not isinstance(payload, dict):
        raise argparse.ArgumentTypeError(
            'must be a JSON object, such as \'{"folders": ["INBOX"]}\''
        )
    return payload


def _job_id(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise SystemExit(f"error: {value!r} is not a job id (expected a UUID)") from None


def _print_job(job: Job) -> None:
    snap = job.snapshot()
    total = snap["total_estimate"]
    progress = f"{snap['processed']}/{total}" if total is not None else str(snap["processed"])
    print(
        f"{snap['job_id']}  {snap['job_type']:<11} {snap['status']:<10} {progress:>12}  {snap['created_at']}"
        + (f"  error: {snap['error']}" if snap["error"] else "")
    )


# -- commands ---------------------------------------------------------------


def cmd_db_migrate(settings: Settings, args: argparse.Namespace) -> int:
    applied = migrate(_conninfo(settings))
    print("applied: " + ", ".join(applied) if applied else "database is up to date")
    return 0


def cmd_jobs_enqueue(settings: Settings, args: argparse.Namespace) -> int:
    if JobType(args.job_type) in MUTATION_JOB_TYPES:
        print(
            "error: mutation jobs are enqueued only from an approval in the chat", file=sys.stderr
        )
        return 2
    payload: dict[str, Any] = dict(args.payload or {})
    if args.folder:
        payload["folders"] = args.folder

    async def go(store: Any) -> int:
        job = await store.enqueue(
            args.job_type,
            payload,
            idempotency_key=args.idempotency_key,
            max_attempts=args.max_attempts,
        )
        print(job.job_id if args.quiet else json.dumps(job.snapshot(), indent=2))
        return 0

    return asyncio.run(_with_store(settings, go))


def cmd_jobs_list(settings: Settings, args: argparse.Namespace) -> int:
    async def go(store: Any) -> int:
        jobs = await store.list(JobStatus(args.status) if args.status else None, limit=args.limit)
        for job in jobs:
            _print_job(job)
        if not jobs:
            print("no jobs")
        return 0

    return asyncio.run(_with_store(settings, go))


def cmd_jobs_show(settings: Settings, args: argparse.Namespace) -> int:
    job_id = _job_id(args.job_id)

    async def go(store: Any) -> int:
        job = await store.get(job_id)
        if job is None:
            print(f"error: no job {job_id}", file=sys.stderr)
            return 1
        print(json.dumps(job.snapshot(), indent=2))
        for event in await store.events_after(job_id, 0, limit=10_000):
            print(f"  #{event.seq:<4} {event.created_at:%H:%M:%S} {event.level:<7} {event.message}")
        return 0

    return asyncio.run(_with_store(settings, go))


def cmd_jobs_cancel(settings: Settings, args: argparse.Namespace) -> int:
    job_id = _job_id(args.job_id)

    async def go(store: Any) -> int:
        job = await store.request_cancel(job_id)
        if job is None:
            current = await store.get(job_id)
            print(
                f"error: {'no job ' + str(job_id) if current is None else 'job already ' + current.status}",
                file=sys.stderr,
            )
            return 1
        _print_job(job)
        if job.status is JobStatus.RUNNING:
            print("cancel requested: it stops at its next batch boundary")
        return 0

    return asyncio.run(_with_store(settings, go))


def cmd_jobs_watch(settings: Settings, args: argparse.Namespace) -> int:
    job_id = _job_id(args.job_id)

    async def go(store: Any) -> int:
        from tqdm import tqdm

        job = await store.get(job_id)
        if job is None:
            print(f"error: no job {job_id}", file=sys.stderr)
            return 1
        bar = tqdm(
            total=job.total_estimate or None,
            unit="msg",
            desc=f"{job.job_type} {str(job_id)[:8]}",
            dynamic_ncols=True,
            file=sys.stderr,
        )
        seen = 0
        try:
            while True:
                for event in await store.events_after(job_id, seen):
                    seen = event.seq
                    if args.events:
                        bar.write(f"#{event.seq} {event.level} {event.message}")
                job = await store.get(job_id)
                assert job is not None
                if job.total_estimate is not None and bar.total != job.total_estimate:
                    bar.total = job.total_estimate
                bar.n = job.processed
                bar.set_postfix_str(job.status.value)
                bar.refresh()
                if job.status.is_terminal:
                    break
                await asyncio.sleep(args.interval)
        finally:
            bar.close()
        print(
            f"{job.job_type} {job.job_id}: {job.status.value}, {job.processed} processed"
            + (f", error: {job.error}" if job.error else "")
        )
        return 0 if job.status is JobStatus.COMPLETED else 1

    return asyncio.run(_with_store(settings, go))


def cmd_run(settings: Settings, args: argparse.Namespace) -> int:
    """Start everything for local use: database, demo IMAP if needed, executor, web."""
    from app.web.security import check_bind, resolve_token_file

    host = args.host or settings.web_host
    port = args.port or settings.web_port
    try:
        # Before anything starts: serving beyond loopback needs a token (SPEC §6).
        check_bind(resolve_token_file(settings), host)
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from app.graph.chat_model import missing_extra

    extra = missing_extra(settings.chat_model)
    if extra:  # ./scripts/run.sh installs it; a bare `secretary run` says how
        print(
            f"error: SECRETARY_CHAT_MODEL={settings.chat_model!r} needs its provider: "
            f"run ./scripts/run.sh, or .venv/bin/pip install -e '.[{extra}]'",
            file=sys.stderr,
        )
        return 2
    conninfo = _conninfo(settings)
    migrate(conninfo)
    # The web process learns its bind address, so it serves that name too.
    env = dict(os.environ, DATABASE_URL=conninfo, SECRETARY_WEB_HOST=host)
    dovecot = None
    account: ImapAccount | None = settings.imap
    if account is None:
        from app.demo.runtime import start_demo_server

        dovecot, seeded = start_demo_server(settings, messages=args.demo_messages)
        account = ImapAccount(
            dovecot.host, dovecot.port, dovecot.username, dovecot.password, ssl=False
        )
        print(
            f"demo mailbox: Dovecot on {dovecot.host}:{dovecot.port}"
            + (f", seeded {seeded} messages" if seeded else ""),
            flush=True,
        )
        print(
            "to use your own Gmail, Workspace or Microsoft 365 mailbox: README, "
            "'Connect a real account' (`secretary auth google` / `secretary auth microsoft`)",
            flush=True,
        )
        env.update(
            IMAP_HOST=account.host,
            IMAP_PORT=str(account.port),
            IMAP_USERNAME=account.username,
            IMAP_PASSWORD=account.password,
            IMAP_SSL="false",
            IMAP_AUTH="password",  # the demo Dovecot takes LOGIN, whatever else is set
        )
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "executor", "--workers", str(args.workers)], env=env
        ),
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "app.web.main:app",
                "--host",
                host,
                "--port",
                str(port),
            ],
            env=env,
        ),
    ]
    print(f"Piper is at http://{host}:{port}/", flush=True)
    stop = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        while not stop and all(p.poll() is None for p in procs):
            time.sleep(0.5)
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
        if dovecot is not None:
            dovecot.stop()
    return 0 if stop else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="secretary", description="Piper, the workspace secretary")
    parser.add_argument("--log-level", default="WARNING")
    sub = parser.add_subparsers(dest="command", required=True)

    db = sub.add_parser("db", help="database").add_subparsers(dest="db_command", required=True)
    db.add_parser("migrate", help="apply schema migrations (idempotent)").set_defaults(
        fn=cmd_db_migrate
    )

    jobs = sub.add_parser("jobs", help="IMAP jobs").add_subparsers(
        dest="jobs_command", required=True
    )
    enqueue = jobs.add_parser("enqueue", help="enqueue a read-only job")
    enqueue.add_argument("job_type", choices=[t.value for t in JobType])
    enqueue.add_argument(
        "--folder", action="append", help="folder to sync (repeatable; default all)"
    )
    enqueue.add_argument("--payload", type=_payload, help="JSON object payload")
    enqueue.add_argument("--idempotency-key")
    enqueue.add_argument("--max-attempts", type=positive_int, default=3)
    enqueue.add_argument("-q", "--quiet", action="store_true", help="print only the job id")
    enqueue.set_defaults(fn=cmd_jobs_enqueue)

    listing = jobs.add_parser("list", help="recent jobs")
    listing.add_argument("--status", choices=[s.value for s in JobStatus])
    listing.add_argument("--limit", type=positive_int, default=50)
    listing.set_defaults(fn=cmd_jobs_list)

    for name, fn, help_text in (
        ("show", cmd_jobs_show, "a job and its events"),
        ("cancel", cmd_jobs_cancel, "cancel a job"),
        ("watch", cmd_jobs_watch, "follow a job with a live progress bar"),
    ):
        p = jobs.add_parser(name, help=help_text)
        p.add_argument("job_id")
        p.set_defaults(fn=fn)
        if name == "watch":
            p.add_argument("--interval", type=float, default=0.3)
            p.add_argument("--events", action="store_true", help="print each event too")

    run = sub.add_parser(
        "run", help="start everything for local use (demo mailbox when no IMAP account)"
    )
    run.add_argument("--host")
    run.add_argument("--port", type=int)
    run.add_argument("--workers", type=positive_int, default=3)
    run.add_argument("--demo-messages", type=int, default=300)
    run.set_defaults(fn=cmd_run)

    from app.oauth2.commands import add_auth_parser

    add_auth_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level)
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    try:
        sys.exit(args.fn(settings, args))
    except MigrationMismatch as exc:
        print(f"error: refusing to start: {exc}", file=sys.stderr)
        sys.exit(3)
    except (psycopg.OperationalError, psycopg.ProgrammingError) as exc:
        # Unreachable, missing, or not a database URL at all: one line, no traceback.
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"error: cannot use the database: {reason}", file=sys.stderr)
        sys.exit(3)
    except KeyboardInterrupt:
        sys.exit(130)  # Ctrl-C (e.g. leaving `jobs watch`): quietly, as shells expect
    except BrokenPipeError:
        # `secretary jobs list | head`: the reader left; say nothing more.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)


if __name__ == "__main__":
    main()
