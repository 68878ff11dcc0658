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
from imapclient.exceptions import IMAPClientError

_COPYUID = re.compile(rb"\[COPYUID (\d+) ([\d:,]+) ([\d:,]+)\]", re.IGNORECASE)
_ATOM_SPECIALS = re.compile(r'[(){ %*"\\\]\x00-\x1f\x7f]')


def expand_uid_set(text: bytes) -> list[int]:
    out: list[int] = []
    for part in text.split(b","):
        if b":" in part:
            lo, hi = (int(x) for x in part.split(b":"))
            step = 1 if hi >= lo else -1
            out.extend(range(lo, hi + step, step))
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
    resp = client.fetch(list(uids), ["FLAGS"])
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
    untagged = client._imap.untagged_responses  # imaplib keeps COPYUID here
    untagged.pop("OK", None)
    if "MOVE" in caps:
        client.move(list(uids), target)
        return parse_copyuid(untagged.pop("OK", []) or [])
    response = client.copy(list(uids), target)
    validity, mapping = parse_copyuid([response] if response else [])
    client.add_flags(list(uids), [imapclient.DELETED])
    # Without UIDPLUS a plain EXPUNGE would also remove other \Deleted mail:
    # the originals then stay, flagged, rather than risk that.
    if "UIDPLUS" in caps:
        client.uid_expunge(list(uids))
    return validity, mapping


def find_by_message_id(client: imapclient.IMAPClient, message_id: str) -> list[int]:
    if not message_id:
        return []
    return sorted(client.search(["HEADER", "Message-ID", message_id]))


def is_keyword(label: str) -> bool:
    return bool(label) and not label.startswith("\\") and not _ATOM_SPECIALS.search(label)


def _s(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
