"""The private Dovecot and the generated mailbox, against a real server.

Everything else that talks IMAP in the test suite trusts these two pieces, so
they are checked here on their own: the server starts and stops cleanly, shows
the capabilities sync relies on, and holds exactly what was seeded.
"""

from __future__ import annotations

import email
import email.policy
import os
import shutil
import socket
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import imapclient
import pytest

from app.demo.dovecot import DovecotServer, _descendants, dovecot_available
from app.demo.mailbox import (
    KIND_SHARES,
    SeedMessage,
    generate_mailbox,
    seed_demo,
    seed_via_imap,
    write_maildir,
)

pytestmark = pytest.mark.skipif(
    not dovecot_available() or os.geteuid() != 0,
    reason="needs /usr/sbin/dovecot and root (Dovecot drops to nobody itself)",
)

NOW = datetime(2026, 3, 14, 15, 9, 26, tzinfo=UTC)
IDENTITY = "alex.roy@example.com"


@pytest.fixture(scope="module")
def server() -> Iterator[DovecotServer]:
    # Not pytest's tmp_path: /tmp/pytest-of-root is 0700, and Dovecot reads mail as nobody.
    home = Path(tempfile.mkdtemp(prefix="pmh-", dir="/tmp"))
    srv = DovecotServer(mail_home=home).start()
    try:
        yield srv
    finally:
        srv.stop()
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def client(server: DovecotServer) -> Iterator[imapclient.IMAPClient]:
    """A fresh user, hence an empty mailbox of its own."""
    c = server.connect(f"t{uuid.uuid4().hex[:10]}")
    try:
        yield c
    finally:
        c.logout()


def _expected(messages: list[SeedMessage]) -> dict[str, list[SeedMessage]]:
    by_folder: dict[str, list[SeedMessage]] = {}
    for m in messages:
        by_folder.setdefault(m.folder, []).append(m)
    return by_folder


def _message_ids(client: imapclient.IMAPClient) -> dict[int, str]:
    uids = client.search("ALL")
    if not uids:
        return {}
    fetched = client.fetch(uids, ["BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]"])
    return {
        uid: data[b"BODY[HEADER.FIELDS (MESSAGE-ID)]"].decode().split(":", 1)[1].strip()
        for uid, data in fetched.items()
    }


def _message_id(m: SeedMessage) -> str:
    return str(email.message_from_bytes(m.raw, policy=email.policy.default)["Message-ID"])


def _assert_mailbox_matches(client: imapclient.IMAPClient, messages: list[SeedMessage]) -> None:
    for folder, expected in _expected(messages).items():
        status = client.select_folder(folder, readonly=True)
        assert status[b"EXISTS"] == len(expected), folder
        assert len(client.search(["SEEN"])) == sum("\\Seen" in m.flags for m in expected)
        assert len(client.search(["FLAGGED"])) == sum("\\Flagged" in m.flags for m in expected)
        assert sorted(_message_ids(client).values()) == sorted(map(_message_id, expected))
        client.unselect_folder()


# -- the server ------------------------------------------------------------------


def test_capabilities_include_what_sync_and_clean_rely_on(
    client: imapclient.IMAPClient,
) -> None:
    caps = set(client.capabilities())
    assert {b"CONDSTORE", b"QRESYNC", b"MOVE", b"UIDPLUS", b"MULTIAPPEND"} <= caps
    client.enable("CONDSTORE")
    status = client.select_folder("INBOX")
    assert b"HIGHESTMODSEQ" in status


def test_seeding_over_imap_keeps_folders_flags_and_dates(client: imapclient.IMAPClient) -> None:
    messages = generate_mailbox(120, now=NOW)
    assert seed_via_imap(client, messages) == 120
    folders = {name for _, _, name in client.list_folders()}
    assert {"INBOX", "Receipts", "Archive"} <= folders
    _assert_mailbox_matches(client, messages)

    client.select_folder("INBOX", readonly=True)
    fetched = client.fetch(client.search("ALL"), ["INTERNALDATE"])
    dates = sorted(d[b"INTERNALDATE"].timestamp() for d in fetched.values())
    inbox = [m for m in messages if m.folder == "INBOX"]
    assert dates == sorted(m.internal_date.timestamp() for m in inbox)


def test_write_maildir_is_visible_over_imap(server: DovecotServer) -> None:
    user = f"bulk{uuid.uuid4().hex[:8]}"
    messages = generate_mailbox(2000, now=NOW, seed=11)
    assert write_maildir(server.user_maildir(user), messages) == 2000
    c = server.connect(user)
    try:
        _assert_mailbox_matches(c, messages)
        c.select_folder("INBOX", readonly=True)
        uids = c.search("ALL")
        fetched = c.fetch(uids, ["INTERNALDATE"])
        # UIDs follow the internal date, as in a mailbox that received mail over time.
        dates = [fetched[u][b"INTERNALDATE"].timestamp() for u in sorted(uids)]
        assert dates == sorted(dates)
        assert dates[-1] == max(
            m.internal_date.timestamp() for m in messages if m.folder == "INBOX"
        )
    finally:
        c.logout()


@pytest.mark.parametrize("folder", ["INBOX", "Archive"])
def test_reset_folder_uidvalidity_keeps_the_messages(server: DovecotServer, folder: str) -> None:
    user = f"uv{uuid.uuid4().hex[:8]}"
    c = server.connect(user)
    try:
        seed_via_imap(c, generate_mailbox(150, now=NOW))
        before = c.select_folder(folder, readonly=True)
        old_ids = _message_ids(c)
        old_flags = Counter(
            tuple(sorted(d[b"FLAGS"])) for d in c.fetch(list(old_ids), ["FLAGS"]).values()
        )
        c.unselect_folder()

        new = server.reset_folder_uidvalidity(folder, user)

        after = c.select_folder(folder, readonly=True)
        assert after[b"UIDVALIDITY"] == new != before[b"UIDVALIDITY"]
        assert after[b"EXISTS"] == before[b"EXISTS"] > 0
        new_ids = _message_ids(c)
        assert sorted(new_ids.values()) == sorted(old_ids.values())
        # No old UID is reused, so a client ignoring UIDVALIDITY cannot go unnoticed.
        assert min(new_ids) >= before[b"UIDNEXT"]
        flags = Counter(
            tuple(sorted(d[b"FLAGS"])) for d in c.fetch(list(new_ids), ["FLAGS"]).values()
        )
        assert flags == old_flags
        c.unselect_folder()
        names = {name for _, _, name in c.list_folders()}
        assert not any(n.startswith("PiperUidvalidityReset") for n in names)
    finally:
        c.logout()


def test_seed_demo_seeds_only_an_empty_inbox(server: DovecotServer) -> None:
    # Same running server, another user: connect() needs only host, port and password.
    demo = DovecotServer(
        mail_home=server.mail_home, username=f"demo{uuid.uuid4().hex[:8]}", port=server.port
    )
    assert seed_demo(demo, count=60, now=NOW) == 60
    assert seed_demo(demo, count=60, now=NOW) == 0
    c = demo.connect()
    try:
        total = sum(
            c.folder_status(name, [b"MESSAGES"])[b"MESSAGES"] for _, _, name in c.list_folders()
        )
        assert total == 60
    finally:
        c.logout()


def _instance_processes(config: Path, pids: set[int]) -> list[int]:
    """Live (non-zombie) processes that are, or were started by, this instance."""
    marker = str(config).encode()
    alive = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_bytes()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        state = stat[stat.rindex(b")") + 2 :].split()[0]
        if state != b"Z" and (int(entry) in pids or marker in cmdline):
            alive.append(int(entry))
    return alive


def test_stop_leaves_no_process_port_or_runtime_dir() -> None:
    home = Path(tempfile.mkdtemp(prefix="pmh-", dir="/tmp"))
    try:
        srv = DovecotServer(mail_home=home)
        t0 = time.monotonic()
        with srv:
            started = time.monotonic() - t0
            c = srv.connect()
            c.select_folder("INBOX")  # an imap process of our own, still logged in at stop()
            assert srv.pid is not None
            pids = {srv.pid, *_descendants(srv.pid)}
            assert len(pids) > 3
            config = srv.config_path
            assert config is not None and config.is_file()
        assert started < 15
        assert srv.pid is None
        assert _instance_processes(config, pids) == []
        assert not config.parent.exists()
        with pytest.raises(OSError), socket.create_connection((srv.host, srv.port), timeout=1):
            pass
        srv.stop()  # twice is fine
    finally:
        shutil.rmtree(home, ignore_errors=True)


def test_start_failure_reports_dovecot_log() -> None:
    home = Path(tempfile.mkdtemp(prefix="pmh-", dir="/tmp"))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        srv = DovecotServer(mail_home=home, port=taken.getsockname()[1])
        try:
            with pytest.raises(RuntimeError, match="Address already in use"):
                srv.start()
            assert srv.pid is None
        finally:
            srv.stop()
            shutil.rmtree(home, ignore_errors=True)


def test_mail_home_nobody_cannot_reach_is_refused_early() -> None:
    locked = Path(tempfile.mkdtemp(prefix="pml-", dir="/tmp"))  # mkdtemp makes it 0700
    try:
        with pytest.raises(RuntimeError, match="cannot enter"):
            DovecotServer(mail_home=locked / "home").start()
    finally:
        shutil.rmtree(locked, ignore_errors=True)


# -- the generated mailbox ---------------------------------------------------------


def test_generated_mailbox_is_deterministic_and_realistic() -> None:
    messages = generate_mailbox(300, now=NOW)
    assert [m.raw for m in messages] == [m.raw for m in generate_mailbox(300, now=NOW)]
    assert [m.raw for m in messages] != [m.raw for m in generate_mailbox(300, now=NOW, seed=8)]

    kinds = Counter(m.kind for m in messages)
    for kind, share in KIND_SHARES:
        assert abs(kinds[kind] - 300 * share) <= 1, kind
    folders = Counter(m.folder for m in messages)
    assert 0.85 <= folders["INBOX"] / 300 <= 0.95
    assert folders["Receipts"] and folders["Archive"]
    assert any(m.internal_date.date() == NOW.date() for m in messages)
    assert all(m.internal_date <= NOW and (NOW - m.internal_date).days <= 60 for m in messages)
    seen = sum("\\Seen" in m.flags for m in messages)
    assert 0.4 < seen / 300 < 0.9
    assert any("\\Flagged" in m.flags for m in messages)

    raw = b"".join(m.raw for m in messages)
    for needle in (
        b"=?utf-8?",
        b"=?iso-8859-1?",
        b"Content-Transfer-Encoding: quoted-printable",
        b"Content-Transfer-Encoding: base64",
        b"multipart/alternative",
        b"text/calendar",
        b"https://zoom.us/j/",
        b"application/pdf",
        b"Precedence: bulk",
        b'"Roy, Alex" <AROY@EXAMPLE.COM>',
        b"no-reply@accounts.google.com",
        b"notifications@github.com",
    ):
        assert needle in raw, needle

    html_only = 0
    for m in messages:
        assert m.internal_date.tzinfo is not None
        assert b"\n" not in m.raw.replace(b"\r\n", b"")
        msg = email.message_from_bytes(m.raw, policy=email.policy.default)
        html_only += msg.get_content_type() == "text/html"
        to_cc = " ".join(str(msg.get(h, "")) for h in ("To", "Cc")).lower()
        body = msg.get_body(("plain", "html"))
        assert body is not None
        text = body.get_content()
        if m.kind == "newsletter":
            unsubscribe = str(msg["List-Unsubscribe"])
            assert "mailto:" in unsubscribe and "https://" in unsubscribe and msg["List-Id"]
        elif m.kind == "list":
            assert msg["List-Id"] and "aroy" not in to_cc and IDENTITY not in to_cc
            assert "Alex" not in text
        elif m.kind == "mention":
            assert "aroy" not in to_cc and IDENTITY not in to_cc and "Alex" in text
        elif m.kind == "cc":
            assert "aroy" in str(msg["Cc"]).lower() or IDENTITY in str(msg["Cc"]).lower()
        elif m.kind == "zoom":
            assert str(msg["Subject"]).startswith("Invitation: ") and "zoom.us/j/" in text
    assert html_only >= 5


def test_generating_ten_thousand_messages_is_fast() -> None:
    t0 = time.perf_counter()
    messages = generate_mailbox(10_000, now=NOW)
    elapsed = time.perf_counter() - t0
    assert len(messages) == 10_000
    assert len({_message_id(m) for m in messages[::50]}) == 200
    assert elapsed < 6, f"{elapsed:.1f}s (aim: under 3 s)"
