"""`python -m executor` / `imap-executor`: run the IMAP worker pool."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

import psycopg

from app.cli import positive_int
from app.config import SettingsError, load_settings
from app.db.connect import resolve_database_url
from app.db.migrate import MigrationMismatch, migrate
from app.jobs.models import JobType
from app.logs import configure_logging
from executor.account import NoAccountConfigured, configured_account
from executor.app import Executor
from executor.memory import pin_mmap_threshold

log = logging.getLogger("executor")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="imap-executor", description=__doc__)
    parser.add_argument(
        "--workers",
        type=positive_int,
        default=3,
        help="worker count, each with its own IMAP connection (default 3)",
    )
    parser.add_argument(
        "--job-types", help="comma-separated job types this executor takes (default: all)"
    )
    parser.add_argument(
        "--shutdown-grace",
        type=float,
        default=5.0,
        help="seconds in-flight jobs may finish after SIGTERM before they are released",
    )
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    if args.job_types:
        known = {t.value for t in JobType}
        unknown = sorted(set(args.job_types.split(",")) - known)
        if unknown:  # an executor that takes no job would wait for ever, silently
            parser.error(
                f"unknown job type(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
    return args


async def amain(args: argparse.Namespace) -> int:
    """Exit codes: 0 stopped on a signal, 2 no IMAP account configured,
    3 the database is unreachable or its schema cannot be trusted."""
    try:
        settings = load_settings()
        account = configured_account(settings)
    except SettingsError as exc:  # one line naming the wrong setting
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except NoAccountConfigured as exc:
        log.error("%s", exc)
        return 2
    try:
        conninfo = await asyncio.to_thread(resolve_database_url, settings)
        await asyncio.to_thread(migrate, conninfo)
    except MigrationMismatch as exc:
        log.error("refusing to start: %s", exc)
        return 3
    except psycopg.OperationalError as exc:
        log.error("refusing to start: cannot reach the database: %s", str(exc).strip())
        return 3
    executor = Executor(
        settings,
        conninfo,
        account,
        workers=args.workers,
        job_types=args.job_types.split(",") if args.job_types else None,
        shutdown_grace=args.shutdown_grace,
    )
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, executor.stop)
    await executor.run()
    return 0


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    configure_logging(args.log_level)
    pin_mmap_threshold()  # before any thread: RSS stays flat over a long sync
    sys.exit(asyncio.run(amain(args)))


if __name__ == "__main__":
    main()
