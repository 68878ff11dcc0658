"""UidFetcher against a scripted IMAP server on a real socket, through imapclient's
public `fetch`: an answer is kept only when it is about the UID that was asked.

The fake server speaks just enough IMAP (greeting, LOGIN, EXAMINE, UID FETCH,
UID SEARCH, LOGOUT) and can slip unsolicited `* n FETCH (FLAGS ...)` lines
without a UID into its UID FETCH answers, as Dovecot does for flag changes
made by another connection (tests/integration/test_imap_protocol.py shows
Dovecot doing it).
"""

from __future__ import annotations

import re
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import imapclient
import pytest

from executor.imap_fetch import UID_CHUNK, UidFetcher, UnreliableFetch, dense_prefix

Inject = Callable[[list[int]], tuple[list[str], list[str]]]
"""Given the UIDs a UID FETCH asked for: lines to send (before, after) the answers."""


@dataclass
class FakeImap:
    """A one-connection IMAP server; `messages` is the folder, in sequence order."""

    messages: list[tuple[int, tuple[str, ...]]]
    inject: Inject | None = None
    commands: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1)
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.sock.accept()
        with conn, conn.makefile("rb") as rfile:

            def send(*lines: str) -> None:
                conn.sendall("".join(f"{line}\r\n" for line in lines).encode())

            send("* OK [CAPABILITY IMAP4rev1 UIDPLUS] fake ready")
            for raw in rfile:
                line = raw.decode().rstrip("\r\n")
                self.commands.append(line)
                tag, _, rest = line.partition(" ")
                verb = rest.split(" ", 1)[0].upper()
                if verb == "CAPABILITY":
                    send("* CAPABILITY IMAP4rev1 UIDPLUS", f"{tag} OK capability")
                elif verb == "LOGIN":
                    send(f"{tag} OK [CAPABILITY IMAP4rev1 UIDPLUS] logged in")
                elif verb in ("EXAMINE", "SELECT"):
                    top = max((u for u, _ in self.messages), default=0)
                    send(
                        f"* {len(self.messages)} EXISTS",
                        "* OK [UIDVALIDITY 7] ok",
                        f"* OK [UIDNEXT {top + 1}] ok",
                        f"{tag} OK [READ-ONLY] examined",
                    )
                elif rest.upper().startswith("UID FETCH"):
                    uid_set = rest.split(" ")[2]
                    asked = [int(u) for u in uid_set.split(",")]
                    before, after = self.inject(asked) if self.inject else ([], [])
                    date = (
                        ' INTERNALDATE "01-Jan-2026 10:00:00 +0000"'
                        if "INTERNALDATE" in rest.upper()
                        else ""
                    )
                    answers = [
                        f"* {seq} FETCH (UID {uid} FLAGS ({' '.join(flags)}){date})"
                        for seq, (uid, flags) in enumerate(self.messages, 1)
                        if uid in asked
                    ]
                    send(*before, *answers, *after, f"{tag} OK fetched")
                elif rest.upper().startswith("UID SEARCH"):
                    send("* SEARCH " + " ".join(map(str, self.search(rest))), f"{tag} OK searched")
                elif verb == "LOGOUT":
                    send("* BYE bye", f"{tag} OK bye")
                    return
                else:
                    send(f"{tag} BAD unknown")

    def search(self, command: str) -> list[int]:
        """`UID SEARCH ALL`, or the probe `UID SEARCH n UID m` (sequence n is UID m)."""
        probe = re.fullmatch(r"UID SEARCH (\d+) UID (\d+)", command, re.IGNORECASE)
        if probe is None:
            return [u for u, _ in self.messages]
        seq, uid = int(probe[1]), int(probe[2])
        return [uid] if seq <= len(self.messages) and self.messages[seq - 1][0] == uid else []

    def searches(self) -> list[str]:
        return [c.split(" ", 1)[1] for c in self.commands if " UID SEARCH " in c.upper()]

    def seq_of(self, uid: int) -> int:
        return next(i for i, (u, _) in enumerate(self.messages, 1) if u == uid)

    def fetches(self) -> list[str]:
        return [c for c in self.commands if " UID FETCH " in c.upper()]


@pytest.fixture
def connect() -> Iterator[Callable[[FakeImap], imapclient.IMAPClient]]:
    clients: list[imapclient.IMAPClient] = []

    def make(server: FakeImap) -> imapclient.IMAPClient:
        client = imapclient.IMAPClient("127.0.0.1", port=server.port, ssl=False, timeout=10)
        client.login("u", "p")
        client.select_folder("INBOX", readonly=True)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.logout()


def gappy() -> list[tuple[int, tuple[str, ...]]]:
    """UIDs 3, 4, 5, 7, 9, 11 at sequence numbers 1..6: sequence 5 is UID 9."""
    return [(3, ()), (4, ()), (5, ()), (7, ()), (9, ()), (11, ())]


def once(lines_after: list[str]) -> Inject:
    sent = []

    def inject(asked: list[int]) -> tuple[list[str], list[str]]:
        if sent:
            return [], []
        sent.append(True)
        return [], lines_after

    return inject


def test_imapclient_public_fetch_reads_an_unsolicited_fetch_without_uid_as_that_uid(
    connect: Callable[[FakeImap], imapclient.IMAPClient],
) -> None:
    """The hazard itself, pinned for imapclient 4.1: if this starts failing,
    imapclient changed how it keys answers and imap_fetch.py should be revisited."""
    server = FakeImap(gappy(), inject=once(["* 5 FETCH (FLAGS (\\Seen))"]))
    client = connect(server)
    answer = client.fetch([4, 5, 7], ["FLAGS"])
    assert answer[5][b"FLAGS"] == (b"\\Seen",)  # really UID 9's news, filed as UID 5


def test_unsolicited_fetch_without_uid_is_not_read_as_uid_5(
    connect: Callable[[FakeImap], imapclient.IMAPClient],
) -> None:
    server = FakeImap(gappy(), inject=once(["* 5 FETCH (FLAGS (\\Seen))"]))
    fetcher = UidFetcher(connect(server))
    answer = fetcher.fetch([4, 5, 7], ["FLAGS"], required=(b"FLAGS",))
    assert {uid: data[b"FLAGS"] for uid, data in answer.items()} == {4: (), 5: (), 7: ()}
    assert fetcher.refetched == 1
    # The doubtful UID was asked again on its own, by explicit UID.
    assert [c.split(" ")[3] for c in server.fetches()] == ["4,5,7", "5"]


def test_unsolicited_fetch_before_the_real_answer_is_overwritten_and_kept(
    connect: Callable[[FakeImap], imapclient.IMAPClient],
) -> None:
    sent: list[bool] = []

    def before(asked: list[int]) -> tuple[list[str], list[str]]:
        if sent:
            return [], []
        sent.append(True)
        return ["* 5 FETCH (FLAGS (\\Seen))"], []

    server = FakeImap(gappy(), inject=before)
    fetcher = UidFetcher(connect(server))
    answer = fetcher.fetch([4, 5, 7], ["FLAGS"], required=(b"FLAGS",))
    assert answer[5][b"FLAGS"] == ()
    assert answer[5][b"SEQ"] == server.seq_of(5)
    assert fetcher.refetched == 0  # the last word on key 5 named UID 5: nothing to redo


def test_unsolicited_fetch_for_a_number_not_asked_is_dropped(
    connect: Callable[[FakeImap], imapclient.IMAPClient],
) -> None:
    server = FakeImap(
        gappy(), inject=once(["* 1 FETCH (FLAGS (\\Flagged))", "* 6 FETCH (FLAGS (\\Seen))"])
    )
    fetcher = UidFetcher(connect(server))
    answer = fetcher.fetch([4, 5], ["FLAGS"], required=(b"FLAGS",))
    assert set(answer) == {4, 5}
    assert all(data[b"FLAGS"] == () for data in answer.values())


def test_in_a_folder_without_gaps_news_about_sequence_n_is_news_about_uid_n(
    connect: Callable[[FakeImap], imapclient.IMAPClient],
) -> None:
    """UIDs 1..5 at sequences 1..5: `* 3 FETCH (FLAGS (\\Seen))` is about UID 3."""
    messages = [(u, ()) for u in range(1, 6)]
    server = FakeImap(messages, inject=once(["* 3 FETCH (FLAGS (\\Seen))"]))
    client = connect(server)
    fetcher = UidFetcher.for_folder(client, exists=5, uidnext=6)
    assert fetcher.dense == 5
    answer = fetcher.fetch([2, 3, 4], ["FLAGS"], required=(b"FLAGS",))
    assert answer[3][b"FLAGS"] == (b"\\Seen",)
    assert fetcher.refetched == 0
    assert not [c for c in server.commands if "SEARCH" in c.upper()]


def test_density_is_learnt_with_one_search_when_examine_cannot_tell(
    connect: Callable[[FakeImap], imapclient.IMAPClient],
) -> None:
    """UIDs 1..4 then 9: SEQ == UID is trusted for 1..4 only, after one UID SEARCH."""
    messages = [(1, ()), (2, ()), (3, ()), (4, ()), (9, ())]
    server = FakeImap(messages)
    fetcher = UidFetcher.for_folder(connect(server), exists=5, uidnext=10)
    assert fetcher.dense is None
    answer = fetcher.fetch([1, 2, 3, 4, 9], ["FLAGS"], required=(b"FLAGS",))
    assert set(answer) == {1, 2, 3, 4, 9}
    assert fetcher.dense == 4
    assert len([c for c in server.commands if "SEARCH" in c.upper()]) == 1


def test_a_forgotten_density_is_learnt_again_with_one_small_probe(
    connect: Callable[[FakeImap], imapclient.IMAPClient],
) -> None:
    """After a fence yield the sync forgets `dense`; asking "is sequence 1200
    still UID 1200?" vouches for 1..1200 without listing every UID."""
    messages = [(u, ()) for u in range(1, 1201)]
    server = FakeImap(messages, inject=once(["* 3 FETCH (FLAGS (\\Seen))"]))
    fetcher = UidFetcher.for_folder(connect(server), exists=1200, uidnext=1201)
    fetcher.dense = None
    answer = fetcher.fetch([2, 3, 4], ["FLAGS"], required=(b"FLAGS",))
    assert answer[3][b"FLAGS"] == (b"\\Seen",)  # sequence 3 is UID 3: the news is its own
    assert fetcher.dense == 1200
    assert server.searches() == ["UID SEARCH 1200 UID 1200"]
    fetcher.fetch([900, 1000], ["FLAGS"], required=(b"FLAGS",))
    assert len(server.searches()) == 1  # learnt once, until forgotten again


def test_a_probe_that_finds_an_expunge_falls_back_to_listing_the_uids(
    connect: Callable[[FakeImap], imapclient.IMAPClient],
) -> None:
    """UID 3 went while the density was forgotten: sequence 5 is now UID 6,
    so the probe says no, and UIDs 1..2 only are trusted by sequence."""
    messages = [(u, ()) for u in range(1, 7)]
    server = FakeImap(messages, inject=once(["* 4 FETCH (FLAGS (\\Seen))"]))
    fetcher = UidFetcher.for_folder(connect(server), exists=6, uidnext=7)
    fetcher.dense = None
    del server.messages[2]  # UID 3 expunged by another connection
    answer = fetcher.fetch([2, 4, 5], ["FLAGS"], required=(b"FLAGS",))
    assert {uid: data[b"FLAGS"] for uid, data in answer.items()} == {2: (), 4: (), 5: ()}
    assert fetcher.dense == 2
    assert server.searches() == ["UID SEARCH 6 UID 6", "UID SEARCH ALL"]


def test_a_uid_above_what_the_probe_vouched_for_is_checked_with_the_full_list(
    connect: Callable[[FakeImap], imapclient.IMAPClient],
) -> None:
    """Mail arrived after the density was forgotten: the probe vouches for 1..5
    only, and UID 7 at sequence 7 is trusted after listing the UIDs."""
    server = FakeImap([(u, ()) for u in range(1, 6)])
    fetcher = UidFetcher.for_folder(connect(server), exists=5, uidnext=6)
    fetcher.dense = None
    server.messages += [(6, ()), (7, ())]
    answer = fetcher.fetch([4, 7], ["FLAGS"], required=(b"FLAGS",))
    assert set(answer) == {4, 7}
    assert fetcher.dense == 7
    assert server.searches() == ["UID SEARCH 5 UID 5", "UID SEARCH ALL"]


def test_a_server_that_keeps_sending_doubtful_answers_fails_the_fetch(
    connect: Callable[[FakeImap], imapclient.IMAPClient],
) -> None:
    server = FakeImap(gappy(), inject=lambda asked: ([], ["* 5 FETCH (FLAGS (\\Seen))"]))
    fetcher = UidFetcher(connect(server))
    with pytest.raises(UnreliableFetch):
        fetcher.fetch([4, 5, 7], ["FLAGS"], required=(b"FLAGS",))


def test_an_answer_made_only_of_unsolicited_data_is_not_a_message(
    connect: Callable[[FakeImap], imapclient.IMAPClient],
) -> None:
    """UID 3 is gone from a gap-free folder view; a FLAGS-only line for sequence 3
    must not invent it (it lacks what a real answer carries)."""
    messages = [(1, ()), (2, ()), (4, ()), (5, ())]
    server = FakeImap(messages, inject=once(["* 3 FETCH (FLAGS (\\Seen))"]))
    fetcher = UidFetcher(connect(server), dense=5)  # stale density: 3 was expunged
    answer = fetcher.fetch([2, 3], ["FLAGS", "INTERNALDATE"], required=(b"INTERNALDATE",))
    assert set(answer) == {2}


def test_large_requests_go_out_as_explicit_uid_chunks(
    connect: Callable[[FakeImap], imapclient.IMAPClient],
) -> None:
    messages = [(u, ()) for u in range(1, 1201)]
    server = FakeImap(messages)
    fetcher = UidFetcher.for_folder(connect(server), exists=1200, uidnext=1201)
    answer = fetcher.fetch(range(1, 1201), ["FLAGS"], required=(b"FLAGS",))
    assert set(answer) == set(range(1, 1201))
    sets = [c.split(" ")[3] for c in server.fetches()]
    assert len(sets) == 3
    for uid_set in sets:
        assert ":" not in uid_set and "*" not in uid_set
        assert len(uid_set.split(",")) <= UID_CHUNK
        assert len(uid_set) < 8000  # RFC 7162 §4: keep command lines under 8 KB


@pytest.mark.parametrize(
    ("uids", "expected"),
    [([], 0), ([1, 2, 3], 3), ([2, 3], 0), ([1, 2, 4, 5], 2), ([1], 1)],
)
def test_dense_prefix(uids: list[int], expected: int) -> None:
    assert dense_prefix(uids) == expected


def test_fake_server_speaks_the_uid_fetch_it_is_asked() -> None:
    """Guard for the fake itself: answers carry the right sequence numbers."""
    server = FakeImap(gappy())
    client = imapclient.IMAPClient("127.0.0.1", port=server.port, ssl=False, timeout=10)
    client.login("u", "p")
    client.select_folder("INBOX", readonly=True)
    answer = client.fetch([9, 11], ["FLAGS"])
    client.logout()
    assert {u: d[b"SEQ"] for u, d in answer.items()} == {9: 5, 11: 6}
    assert re.search(r"UID FETCH 9,11 \(FLAGS\)", " ".join(server.commands))
