"""UID FETCH through imapclient's public `fetch`, keeping only what the asked UIDs said.

Why this module exists. `IMAPClient.fetch` keys its answer by UID when a
response carries one and by *sequence number* when it does not, merges
responses that land on the same key, and then keeps the keys that were asked
for. A server may send an unsolicited `* 4 FETCH (FLAGS (...))` without a UID
in the middle of a UID FETCH (Dovecot does, for a flag change made by another
connection: seen on this project's test server). When 4 is also a UID that was
asked for, the flags of *the message at sequence 4* are merged into UID 4's
answer and returned as UID 4's. Asking for explicit UID lists (never ranges)
drops such responses for every other number, but not for this one.

How it is told apart. Every entry also carries `SEQ`, set by whichever
response wrote it last. A response with UID u says u's own sequence number; a
sequence-keyed one landing on key u says u. So an entry whose `SEQ` differs
from its UID was last written by a response that named that UID: it is kept.
An entry whose `SEQ` equals its UID is kept only when the folder's UIDs 1..u
all exist (then sequence u *is* UID u, and a response about sequence u is
about UID u). Anything else is fetched again on its own; if it still cannot be
trusted the fetch fails loudly instead of guessing.

Residual risk, stated so nobody has to rediscover it: the dense-prefix fact is
learnt once per folder pass. An EXPUNGE below u reported *inside* a UID FETCH
(allowed by RFC 3501) followed, in that same command and after the last
solicited response, by a UID-less notification for the shifted sequence u
would still pass. A shift seen anywhere else in the chunk (an entry below the
prefix whose SEQ moved) invalidates the fact and the chunk is checked again.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import imapclient
from imapclient.exceptions import IMAPClientError

# Explicit UID lists stay well under the 8 KB command line RFC 7162 §4 asks
# clients to respect: 500 UIDs of up to 7 digits plus commas is ~4 KB.
UID_CHUNK = 500
# A UID whose answer cannot be trusted is fetched again this many times.
REFETCH_ROUNDS = 3

FetchData = dict[bytes, Any]


class UnreliableFetch(IMAPClientError):
    """The server kept answering for a UID with responses that may describe
    another message; the mirror is not written from a guess."""


def chunks(uids: Sequence[int], size: int = UID_CHUNK) -> Iterator[list[int]]:
    for start in range(0, len(uids), size):
        yield list(uids[start : start + size])


def dense_prefix(sorted_uids: Iterable[int]) -> int:
    """The largest k such that UIDs 1..k all exist (then sequence n == UID n for n <= k)."""
    k = 0
    for uid in sorted_uids:
        if uid != k + 1:
            break
        k = uid
    return k


class UidFetcher:
    """Fetches by UID in one selected folder; one instance per folder pass.

    `dense` is how far the folder is known to have no gaps (see `dense_prefix`);
    None means "not known yet": it is learnt the first time an answer needs it.
    `exists` and `uidnext` from SELECT/EXAMINE give it for free when the folder
    never lost a message; otherwise one UID SEARCH ALL does.

    Setting `dense` to None (a job in between may have expunged) keeps the old
    value as a hint, and learning it again starts with one probe of a few
    bytes, `UID SEARCH k UID k` ("is sequence k still UID k?", which holds only
    when UIDs 1..k all exist), instead of listing every UID of the folder: a
    100,000-message first sync forgets it every couple of seconds (each fence
    yield, on each connection), and each SEARCH ALL answer cost ~10 MB and a
    large parse. A probe that says no, or a UID above what it vouched for,
    falls back to the SEARCH ALL.
    """

    def __init__(
        self, client: imapclient.IMAPClient, dense: int | None = None, chunk_size: int = UID_CHUNK
    ) -> None:
        self.client = client
        self.chunk_size = chunk_size
        self.refetched = 0
        self._dense = dense
        self._exact = dense is not None  # False: a probed lower bound of the prefix
        self._hint = dense or 0

    @property
    def dense(self) -> int | None:
        return self._dense

    @dense.setter
    def dense(self, value: int | None) -> None:
        if value is None and self._dense:
            self._hint = self._dense
        self._dense = value
        self._exact = value is not None

    @classmethod
    def for_folder(
        cls,
        client: imapclient.IMAPClient,
        *,
        exists: int,
        uidnext: int | None,
        known_uids: Sequence[int] | None = None,
    ) -> UidFetcher:
        dense: int | None = None
        if uidnext is not None and uidnext - 1 == exists:
            dense = exists  # `exists` distinct UIDs all below uidnext: exactly 1..exists
        elif known_uids is not None:
            dense = dense_prefix(sorted(known_uids))
        return cls(client, dense)

    def fetch(
        self,
        uids: Iterable[int],
        items: Sequence[str],
        *,
        modifiers: Sequence[str] | None = None,
        required: Sequence[bytes] = (),
    ) -> dict[int, FetchData]:
        """UID FETCH `items` for `uids` in chunks; returns only trustworthy answers.

        `required` names response items a solicited answer always has: an entry
        keyed by a sequence number that lacks them was made by an unsolicited
        response alone. UIDs with no answer are simply absent (expunged
        meanwhile, or never in the folder).
        """
        asked = sorted(set(uids))
        out: dict[int, FetchData] = {}
        for chunk in chunks(asked, self.chunk_size):
            todo = chunk
            for _round in range(1 + REFETCH_ROUNDS):
                response = self.client.fetch(todo, list(items), list(modifiers or ()) or None)
                good, doubtful = self._sort(todo, response, required)
                out.update(good)
                if not doubtful:
                    break
                self.refetched += len(doubtful)
                todo = doubtful
            else:
                raise UnreliableFetch(
                    f"UID FETCH answers for UID(s) {todo[:10]} may describe other messages "
                    f"(unsolicited FETCH without UID); not trusting them"
                )
        return out

    def _sort(
        self, asked: Sequence[int], response: dict[int, FetchData], required: Sequence[bytes]
    ) -> tuple[dict[int, FetchData], list[int]]:
        """Split answers into trusted ones and UIDs to ask again."""
        present = {uid: response[uid] for uid in asked if uid in response}
        if self._prefix_contradicted(present):
            self.dense = None  # an expunge moved sequence numbers: learn it again
        good: dict[int, FetchData] = {}
        doubtful: list[int] = []
        for uid, data in present.items():
            if data.get(b"SEQ") != uid:
                good[uid] = data  # last written by a response that named this UID
                continue
            if self._covers(uid) and all(k in data for k in required):
                good[uid] = data  # sequence uid is UID uid: whatever spoke of it spoke of this one
            else:
                doubtful.append(uid)
        return good, doubtful

    def _prefix_contradicted(self, present: dict[int, FetchData]) -> bool:
        if not self._dense:
            return False
        return any(uid <= self._dense and data.get(b"SEQ") != uid for uid, data in present.items())

    def _covers(self, uid: int) -> bool:
        """Whether UIDs 1..uid all exist (then sequence uid is UID uid)."""
        if self._dense is None:
            k = max(self._hint, uid) if self._hint else 0
            if k and self._probe(k):
                self._dense, self._exact = k, False
            else:
                self._learn_exactly()
        elif uid > self._dense and not self._exact:
            self._learn_exactly()
        assert self._dense is not None
        return uid <= self._dense

    def _probe(self, k: int) -> bool:
        """One round trip, a few bytes back: is the message at sequence k UID k?"""
        try:
            return k in self.client.search([str(k), "UID", str(k)])
        except IMAPClientError:  # fewer than k messages now (a BAD sequence set)
            return False

    def _learn_exactly(self) -> None:
        self._dense = dense_prefix(sorted(self.client.search("ALL")))
        self._exact = True
        self._hint = self._dense
