"""What imapclient 4.1 and a real Dovecot actually do, where the executor depends
on it: UID-less unsolicited FETCH answers, STATUS of a selected folder, and
where COPYUID lives after MOVE and COPY. Each test fails if that changes."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import imapclient
import pytest

from app.config import ImapAccount
from executor.imap_fetch import UidFetcher
from executor.imap_ops import move_uids, take_copyuid
from executor.imap_session import leave_folder
from tests.support.executor_harness import imap_connect

MESSAGE_ID = "BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]"


def append(client: imapclient.IMAPClient, folder: str, count: int, tag: str = "m") -> None:
    for i in range(count):
        client.append(
            folder,
            (
                f"From: a@example.com\r\nTo: b@example.com\r\nSubject: {tag} {i}\r\n"
                f"Message-ID: <{tag}-{i}@example.com>\r\n\r\nbody {i}\r\n"
            ).encode(),
        )


def message_ids(client: imapclient.IMAPClient, uids: list[int]) -> dict[int, bytes]:
    answer = client.fetch(uids, [MESSAGE_ID])
    return {
        uid: next(v for k, v in data.items() if k.startswith(b"BODY[")).strip()
        for uid, data in answer.items()
    }


@pytest.fixture
def clients(imap_account: ImapAccount) -> Iterator[tuple[imapclient.IMAPClient, ...]]:
    a, b = imap_connect(imap_account), imap_connect(imap_account)
    yield a, b
    for c in (a, b):
        c.logout()


def test_dovecot_files_another_messages_flags_under_an_asked_uid_and_the_fetcher_does_not(
    clients: tuple[imapclient.IMAPClient, imapclient.IMAPClient],
) -> None:
    """UIDs 4..8 at sequences 1..5. Another connection flags UID 7 (sequence 4);
    during our UID FETCH 4,5 Dovecot sends `* 4 FETCH (FLAGS (\\Flagged))` with
    no UID, and imapclient's public fetch reports it as UID 4's flags."""
    a, b = clients
    append(a, "INBOX", 8)
    a.select_folder("INBOX")
    a.delete_messages([1, 2, 3])
    a.expunge()
    a.unselect_folder()

    for fetch_with_guard in (False, True):
        flag = b"\\Flagged" if not fetch_with_guard else b"\\Answered"
        a.select_folder("INBOX", readonly=True)
        assert a.search("ALL") == [4, 5, 6, 7, 8]
        b.select_folder("INBOX")
        b.add_flags([7], [flag])
        if fetch_with_guard:
            answer = UidFetcher(a).fetch([4, 5], ["FLAGS"], required=(b"FLAGS",))
            assert flag not in answer[4][b"FLAGS"]
            assert answer[4][b"SEQ"] == 1
        else:
            raw = a.fetch([4, 5], ["FLAGS"])
            assert flag in raw[4][b"FLAGS"], "Dovecot/imapclient no longer mix them up"
            assert raw[4][b"SEQ"] == 4
        leave_folder(a, True)


def test_status_of_the_selected_folder_is_stale_until_the_folder_is_left(
    clients: tuple[imapclient.IMAPClient, imapclient.IMAPClient],
) -> None:
    """Why sync leaves every folder before STATUS (RFC 3501 §6.3.10)."""
    a, b = clients
    append(a, "INBOX", 3)
    a.select_folder("INBOX", readonly=True)
    append(b, "INBOX", 1, tag="late")
    assert a.folder_status("INBOX", [b"MESSAGES"])[b"MESSAGES"] == 3  # the old view
    leave_folder(a, b"UNSELECT" in a.capabilities())
    assert a.folder_status("INBOX", [b"MESSAGES"])[b"MESSAGES"] == 4
    leave_folder(a, True)  # nothing selected: a no-op, not an error


def test_leaving_without_unselect_expunges_nothing(
    clients: tuple[imapclient.IMAPClient, imapclient.IMAPClient],
) -> None:
    """The fallback (EXAMINE + CLOSE) after a read-write SELECT with \\Deleted mail."""
    a, _ = clients
    append(a, "INBOX", 3)
    a.select_folder("INBOX")
    a.add_flags([2], [imapclient.DELETED])
    leave_folder(a, has_unselect=False)
    a.select_folder("INBOX", readonly=True)
    assert a.search("ALL") == [1, 2, 3]


@pytest.mark.parametrize("with_move", [True, False], ids=["MOVE", "COPY+EXPUNGE"])
def test_move_uids_maps_every_moved_uid_to_its_new_uid(
    clients: tuple[imapclient.IMAPClient, imapclient.IMAPClient],
    monkeypatch: pytest.MonkeyPatch,
    with_move: bool,
) -> None:
    """A multi-UID, non-contiguous move: COPYUID must name each message's new
    UID (checked by Message-ID on both sides). This reads imaplib's stored
    response codes (imap_ops.take_copyuid); it fails if imapclient stops
    leaving them there."""
    a, _ = clients
    append(a, "INBOX", 12)
    a.create_folder("Target")
    append(a, "Target", 2, tag="already")  # target UIDs do not start at 1
    a.select_folder("INBOX")
    moving = [2, 3, 5, 8, 9, 12]
    before = message_ids(a, moving)
    if not with_move:
        caps = tuple(c for c in a.capabilities() if c.upper() != b"MOVE")
        monkeypatch.setattr(a, "capabilities", lambda: caps)
    validity, mapping = move_uids(a, moving, "Target")
    assert set(mapping) == set(moving)
    assert len(set(mapping.values())) == len(moving)
    a.select_folder("INBOX", readonly=True)
    assert not set(a.search("ALL")) & set(moving)
    info = a.select_folder("Target", readonly=True)
    assert validity == info[b"UIDVALIDITY"]
    after = message_ids(a, sorted(mapping.values()))
    assert {src: after[dst] for src, dst in mapping.items()} == before


def test_a_stale_copyuid_is_not_read_as_the_next_moves(
    clients: tuple[imapclient.IMAPClient, imapclient.IMAPClient],
) -> None:
    a, _ = clients
    append(a, "INBOX", 4)
    a.create_folder("T")
    a.select_folder("INBOX")
    a.copy([1], "T")  # leaves a COPYUID code behind
    validity, mapping = move_uids(a, [2, 3], "T")
    assert set(mapping) == {2, 3}
    assert take_copyuid(a) == (None, {})


async def test_protocol_tests_run_against_dovecot(imap_account: ImapAccount) -> None:
    """The fixtures above really reach a Dovecot offering what sync relies on."""
    client = await asyncio.to_thread(imap_connect, imap_account)
    caps: Any = await asyncio.to_thread(client.capabilities)
    await asyncio.to_thread(client.logout)
    assert {b"UNSELECT", b"CONDSTORE", b"MOVE", b"UIDPLUS"} <= set(caps)
