"""Blocking IMAP mutations used by the mutation handlers (run in a worker thread).

Each function acts on exactly the UIDs it is given in the selected folder and
reports per-UID results, so a handler can tell success from failure message
by message.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable, Sequence

import imapclient
from imapclient.exceptions import IMAPClientAbortError, IMAPClientError

from app.mail.folders import is_keyword
from app.mail.message_ref import normalise_message_id
from executor.imap_fetch import UidFetcher

__all__ = ["is_keyword"]  # re-exported: the handlers decide label-as-flag here

_COPYUID = re.compile(rb"\[COPYUID (\d+) ([\d:,]+) ([\d:,]+)\]", re.IGNORECASE)
MESSAGE_ID_FIELD = "BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]"


def expand_uid_set(text: bytes) -> list[int]:
    out: list[int] = []
    for part in text.split(b","):
        if b":" in part:
            lo, hi = sorted(int(x) for x in part.split(b":"))  # 4:2 means 2:4 (RFC 3501)
            out.extend(range(lo, hi + 1))
        else:
            out.append(int(part))
    return out


def parse_copyuid(responses: Iterable[bytes | str]) -> tuple[int | None, dict[int, int]]:
    """UIDPLUS: map source UID → destination UID from COPYUID response codes."""
    validity: int | None = None
    mapping: dict[int, int] = {}
    for resp in responses:
        raw = resp.encode() if isinstance(resp, str) else resp
        for match in _COPYUID.finditer(raw):
            validity = int(match.group(1))
            mapping.update(
                zip(expand_uid_set(match.group(2)), expand_uid_set(match.group(3)), strict=False)
            )
    return validity, mapping


def take_copyuid(client: imapclient.IMAPClient) -> tuple[int | None, dict[int, int]]:
    """The COPYUID codes (UIDPLUS) of the last COPY/MOVE, and forget them.

    imapclient 4.1 has no public way to them: `move()` and `copy()` return
    None, MOVE's COPYUID comes in an untagged OK before the EXPUNGEs (RFC
    6851 §4.3) and COPY's in the tagged OK. imaplib files the code of either
    under "COPYUID"; `IMAP4.response()` (public in imaplib) takes it. The one
    private step is reaching imaplib through `client._imap`: kept here only,
    and tests/integration/test_imap_protocol.py fails if it stops working.
    """
    _code, data = client._imap.response("COPYUID")
    codes = [d for d in data or () if d]
    return parse_copyuid(
        [b"[COPYUID " + (c.encode() if isinstance(c, str) else c) + b"]" for c in codes]
    )


def select_rw(client: imapclient.IMAPClient, folder: str) -> tuple[int, frozenset[str]]:
    info = client.select_folder(folder, readonly=False)
    permanent = frozenset(
        f.decode() if isinstance(f, bytes) else str(f) for f in info.get(b"PERMANENTFLAGS", ())
    )
    return int(info[b"UIDVALIDITY"]), permanent


def present_uids(client: imapclient.IMAPClient, uids: Sequence[int]) -> set[int]:
    if not uids:
        return set()
    return set(client.search(["UID", ",".join(str(u) for u in uids)])) & set(uids)


def current_flags(client: imapclient.IMAPClient, uids: Sequence[int]) -> dict[int, tuple[str, ...]]:
    if not uids:
        return {}
    resp = UidFetcher(client).fetch(uids, ["FLAGS"], required=(b"FLAGS",))
    return {uid: tuple(_s(f) for f in data.get(b"FLAGS", ())) for uid, data in resp.items()}


def store_flags(
    client: imapclient.IMAPClient, uids: Sequence[int], flags: Sequence[str], *, add: bool
) -> dict[int, tuple[str, ...]]:
    """Add or remove flags; returns the new flags of the messages the server changed."""
    fn = client.add_flags if add else client.remove_flags
    fn(list(uids), list(flags))
    return current_flags(client, uids)


def ensure_folder(client: imapclient.IMAPClient, folder: str) -> bool:
    """Create the folder when missing; True when it was created."""
    if client.folder_exists(folder):
        return False
    client.create_folder(folder)
    with contextlib.suppress(IMAPClientError):
        client.subscribe_folder(folder)
    return True


def move_uids(
    client: imapclient.IMAPClient, uids: Sequence[int], target: str
) -> tuple[int | None, dict[int, int]]:
    """UID MOVE when offered, else COPY + \\Deleted + UID EXPUNGE of just these UIDs.

    Returns the target's UIDVALIDITY and source→target UIDs when the server
    says (UIDPLUS); a move is never a delete, so nothing is expunged unless the
    copy succeeded.
    """
    caps = {_s(c).upper() for c in client.capabilities()}
    take_copyuid(client)  # forget any code an earlier command left behind
    if "MOVE" in caps:
        client.move(list(uids), target)
        return take_copyuid(client)
    client.copy(list(uids), target)
    validity, mapping = take_copyuid(client)
    client.add_flags(list(uids), [imapclient.DELETED])
    # Without UIDPLUS a plain EXPUNGE would also remove other \Deleted mail:
    # the originals then stay, flagged, rather than risk that.
    if "UIDPLUS" in caps:
        client.uid_expunge(list(uids))
    return validity, mapping


def copy_uids(
    client: imapclient.IMAPClient, uids: Sequence[int], target: str
) -> tuple[int | None, dict[int, int]]:
    """COPY (label as a folder); the target's UIDVALIDITY and UIDs when UIDPLUS says."""
    take_copyuid(client)  # forget any code an earlier command left behind
    client.copy(list(uids), target)  # imapclient returns None: the code is read below
    return take_copyuid(client)


def has_move(client: imapclient.IMAPClient) -> bool:
    return "MOVE" in {_s(c).upper() for c in client.capabilities()}


def has_uidplus(client: imapclient.IMAPClient) -> bool:
    """UID EXPUNGE: the only way to expunge exactly some messages and no others."""
    return "UIDPLUS" in {_s(c).upper() for c in client.capabilities()}


def expunge_copied(client: imapclient.IMAPClient, uids: Sequence[int]) -> bool:
    """Finish a COPY + \\Deleted move whose copy is known to exist: expunge just
    these UIDs (UID EXPUNGE). Without UIDPLUS nothing is expunged (False)."""
    caps = {_s(c).upper() for c in client.capabilities()}
    client.add_flags(list(uids), [imapclient.DELETED])
    if "UIDPLUS" not in caps:
        return False
    client.uid_expunge(list(uids))
    return True


def folder_uidnext(client: imapclient.IMAPClient, folder: str) -> tuple[int, int]:
    """(UIDVALIDITY, UIDNEXT) of a folder: a message moved there after this has a
    UID of at least UIDNEXT, which narrows any later search for it."""
    status = client.folder_status(folder, [b"UIDVALIDITY", b"UIDNEXT"])
    return int(status[b"UIDVALIDITY"]), int(status[b"UIDNEXT"])


def special_use(client: imapclient.IMAPClient, folder: str) -> frozenset[str]:
    """The folder's LIST attributes (\\Trash, \\Junk... where the server says)."""
    flags: set[str] = set()
    for attrs, _delim, name in client.list_folders("", folder):
        if name == folder:
            flags.update(_s(a) for a in attrs)
    return frozenset(flags)


def fetch_state(
    client: imapclient.IMAPClient, uids: Sequence[int]
) -> dict[int, tuple[tuple[str, ...], str | None]]:
    """uid → (flags, normalised Message-ID) in the selected folder, read-only
    (BODY.PEEK never sets \\Seen). UIDs not in the answer are gone."""
    if not uids:
        return {}
    resp = UidFetcher(client).fetch(uids, ["FLAGS", MESSAGE_ID_FIELD], required=(b"FLAGS",))
    out: dict[int, tuple[tuple[str, ...], str | None]] = {}
    for uid, data in resp.items():
        header = next(
            (v for k, v in data.items() if _s(k).upper().startswith("BODY[HEADER.FIELDS")), None
        )
        flags = tuple(_s(f) for f in data.get(b"FLAGS", ()) if _s(f) != "\\Recent")
        out[int(uid)] = (flags, normalise_message_id(header))
    return out


def find_exact_message_id(
    client: imapclient.IMAPClient, message_id: str | None, *, floor: int | None = None
) -> list[int]:
    """UIDs in the selected folder whose Message-ID is exactly `message_id`
    (normalised), at or above `floor` when given. SEARCH HEADER is a substring
    match, so it only narrows; each hit's header is fetched and compared."""
    wanted = normalise_message_id(message_id)
    if not wanted:
        return []
    criteria: list[str | bytes] = []
    if floor is not None:
        criteria += ["UID", f"{max(1, int(floor))}:*"]
    criteria += ["HEADER", "Message-ID", wanted]
    charset = None if wanted.isascii() else "UTF-8"
    try:
        hits = client.search(criteria, charset=charset)
    except IMAPClientAbortError:
        raise
    except IMAPClientError:
        return []  # the server cannot search for it: not found, never guessed
    hits = [int(u) for u in hits if floor is None or int(u) >= int(floor)]
    if not hits:
        return []
    return sorted(uid for uid, (_f, mid) in fetch_state(client, hits).items() if mid == wanted)


def _s(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
