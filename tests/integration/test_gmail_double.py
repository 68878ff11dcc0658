"""The Gmail double itself behaves as the Gmail tests assume (tests/support/gmail_double.py)."""

from __future__ import annotations

import imapclient
import pytest

from tests.support.gmail_double import ALL_MAIL, GmailDouble, GmailMessage, gmail_storage

USER = "piper@gmail.test"


def _raw(n: int, body: str = "hello") -> str:
    return (
        f"From: Sender {n} <s{n}@example.com>\r\nTo: {USER}\r\nSubject: message {n}\r\n"
        f"Message-ID: <m{n}@example.com>\r\nDate: Fri, 13 Sep 2024 15:01:00 +0300\r\n\r\n{body} {n}\r\n"
    )


@pytest.fixture
def double():
    messages = [
        GmailMessage(_raw(1), labels=["\\Inbox", "Work"]),
        GmailMessage(_raw(2, "x" * 3000), labels=["\\Inbox"]),
        GmailMessage(_raw(3), labels=["Work"]),
        GmailMessage(_raw(4), labels=["\\Inbox"], flags=["\\Seen"]),
    ]
    with GmailDouble(gmail_storage(messages)) as d:
        yield d


def _login(d: GmailDouble, token: str = "initial-access-token") -> imapclient.IMAPClient:
    c = imapclient.IMAPClient(d.host, d.port, ssl=False, timeout=5)
    c.oauth2_login(USER, token)
    return c


def test_xoauth2_without_sasl_ir_and_gmail_capability(double: GmailDouble) -> None:
    c = _login(double)
    assert b"X-GM-EXT-1" in c.capabilities()
    folders = {f[2] for f in c.list_folders()}
    assert {"INBOX", ALL_MAIL, "Work", "[Gmail]/Trash", "[Gmail]/Spam"} <= folders
    c.logout()
    with pytest.raises(imapclient.exceptions.LoginError):
        _login(double, "wrong")
    double.grant(USER, "second")
    _login(double, "second").logout()
    double.revoke(USER)
    with pytest.raises(imapclient.exceptions.LoginError):
        _login(double, "second")


def test_labels_are_shared_by_every_copy_of_a_message(double: GmailDouble) -> None:
    c = _login(double)
    c.select_folder("INBOX")
    inbox = c.fetch(c.search("ALL"), ["X-GM-MSGID", "X-GM-THRID", "X-GM-LABELS"])
    assert len(inbox) == 3
    uid1 = min(inbox)
    msgid = inbox[uid1][b"X-GM-MSGID"]
    assert inbox[uid1][b"X-GM-THRID"] == msgid
    assert set(inbox[uid1][b"X-GM-LABELS"]) == {b"\\Inbox", b"Work"}
    c.add_gmail_labels([uid1], ["Secretary/Auto-Cleaned"])
    c.remove_gmail_labels([uid1], ["\\Inbox"])
    c.select_folder(ALL_MAIL, readonly=True)
    every = c.fetch(c.search("ALL"), ["X-GM-MSGID", "X-GM-LABELS"])
    assert len(every) == 4
    (same,) = [v for v in every.values() if v[b"X-GM-MSGID"] == msgid]
    assert set(same[b"X-GM-LABELS"]) == {b"Work", b"Secretary/Auto-Cleaned"}
    assert double.stats()["labelStores"] == 2
    c.logout()


def test_a_partial_fetch_returns_every_body(double: GmailDouble) -> None:
    c = _login(double)
    c.select_folder("INBOX", readonly=True)
    got = c.fetch(c.search("ALL"), ["BODY.PEEK[]<0.2048>"])
    bodies = [v[b"BODY[]<0>"] for v in got.values()]
    assert all(b.startswith(b"From: Sender") for b in bodies)
    assert max(len(b) for b in bodies) == 2048
    assert double.stats()["bytesSent"] > 2048
    c.logout()


def test_connections_are_counted_and_can_be_capped(double: GmailDouble) -> None:
    a, b = _login(double), _login(double)
    s = double.stats()
    assert s["open"] == 2 and s["peak"] >= 2
    # Two open: the next is refused whether or not the control connection that
    # set the limit has been seen closing (limit 3 raced that close).
    double.limit_connections(2)
    with pytest.raises(Exception):  # noqa: B017 - Gmail's BYE on connect
        _login(double)
    a.logout()
    b.logout()
