"""`python -m app.demo.deliver`: new mail for the demo mailbox, the way a mail
server's delivery agent brings it (a file into the Maildir's `new/`), so the
live mirror can be watched at work: with `./scripts/run.sh` running and the
page open, each delivered message shows up in the page within seconds.

    .venv/bin/python -m app.demo.deliver               # one message
    .venv/bin/python -m app.demo.deliver -n 5 --every 3

It writes straight into the demo's mail home (`<SECRETARY_DATA_DIR>/demo-mail`),
so it needs no IMAP credentials or port; Dovecot notices the file (inotify)
and tells IDLE clients about it. Run it as the user that runs the demo (root:
the files are handed to `nobody`, whom Dovecot reads mail as).
"""

from __future__ import annotations

import argparse
import os
import random
import re
import socket
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from email.parser import BytesHeaderParser
from email.policy import default
from email.utils import format_datetime
from pathlib import Path

from app.config import SettingsError, load_settings
from app.demo.dovecot import nobody_ids
from app.demo.mailbox import generate_mailbox

DEMO_USER = "piper"  # DovecotServer's default user, the one `secretary run` seeds
_DATE = re.compile(rb"^Date: [^\r\n]*", re.MULTILINE)
_counter = iter(range(10**9))


def fresh_messages(count: int, *, seed: int | None = None) -> Iterator[bytes]:
    """`count` generated messages (the demo mailbox's mix); `dated_now` them
    as they are delivered."""
    settings = load_settings()
    rng_seed = seed if seed is not None else random.SystemRandom().randrange(2**31)
    now = datetime.now(UTC)
    pool = generate_mailbox(
        max(count, 8),
        identity_email=settings.identity_email,
        identity_name=settings.identity_name,
        aliases=settings.identity_aliases,
        now=now,
        seed=rng_seed,
    )
    random.Random(rng_seed).shuffle(pool)
    for m in pool[:count]:
        yield m.raw


def dated_now(raw: bytes) -> bytes:
    stamp = format_datetime(datetime.now(UTC)).encode()
    return _DATE.sub(b"Date: " + stamp, raw, count=1)


def deliver(maildir: Path, raw: bytes) -> Path:
    """Maildir delivery: write into tmp/, then rename into new/ (atomic)."""
    uid, gid = nobody_ids()
    for sub in ("tmp", "new", "cur"):
        (maildir / sub).mkdir(parents=True, exist_ok=True)
    name = f"{time.time_ns()}.P{os.getpid()}Q{next(_counter)}.{socket.gethostname()}"
    tmp = maildir / "tmp" / name
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, raw)
        if os.geteuid() == 0:
            os.fchown(fd, uid, gid)
    finally:
        os.close(fd)
    final = maildir / "new" / name
    os.rename(tmp, final)
    return final


def subject_of(raw: bytes) -> str:
    headers = BytesHeaderParser(policy=default).parsebytes(raw)
    return str(headers.get("Subject") or "(no subject)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.demo.deliver", description=__doc__)
    parser.add_argument("-n", "--count", type=int, default=1, help="messages to deliver")
    parser.add_argument(
        "--every", type=float, default=0.0, help="seconds between messages (default: at once)"
    )
    parser.add_argument(
        "--mail-home", type=Path, help="the demo's mail home (default: <data dir>/demo-mail)"
    )
    parser.add_argument("--user", default=DEMO_USER, help=f"mailbox user (default {DEMO_USER})")
    args = parser.parse_args(argv)
    try:
        home = args.mail_home or load_settings().data_dir / "demo-mail"
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    maildir = Path(home).resolve() / args.user / "Maildir"
    if not maildir.is_dir():
        print(
            f"error: no demo mailbox at {maildir}: start the demo first (./scripts/run.sh)",
            file=sys.stderr,
        )
        return 2
    for i, raw in enumerate(fresh_messages(args.count)):
        if i and args.every:
            time.sleep(args.every)
        raw = dated_now(raw)
        deliver(maildir, raw)
        print(f"delivered: {subject_of(raw)}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
