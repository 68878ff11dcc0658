"""Gmail over IMAP (the X-GM-EXT-1 extension): labels, message ids, mirrored folders.

On Gmail a folder is a view of a label: INBOX shows the messages labelled
``\\Inbox``, every user label shows as a folder of its name, and
``[Gmail]/All Mail`` (special-use ``\\All``) holds every message but Spam and
Trash. A message has one X-GM-MSGID and one label list (X-GM-LABELS) whichever
folder shows it, and its UIDs differ per folder. Hence, in Gmail mode:

* sync mirrors INBOX and the ``\\Sent`` folder (for "already replied") plus
  the folders named in ``SECRETARY_SYNC_FOLDERS``; never All Mail, Spam or
  Trash, so a message is not stored once per label;
* label changes (clean, move, label) are STOREs of X-GM-LABELS made in All
  Mail, where a message stays whatever its labels. Removing ``\\Inbox`` takes
  it out of INBOX on Gmail (its INBOX UID is gone for good), so nothing after
  the change may rely on that UID;
* undo finds each message by its X-GM-MSGID (UID SEARCH X-GM-MSGID in All Mail).

Whether a connection speaks Gmail is decided in one place: the capability,
`ImapSession.is_gmail`. The functions here are blocking (run through
`ctx.imap.call`) and act on the selected folder unless they say otherwise.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import imapclient
from imapclient.imap_utf7 import decode as decode_utf7

from app.mail.clean import CLEAN_FOLDER
from app.mail.folders import is_gmail_archive
from app.mail.message_ref import normalise_message_id
from executor.imap_fetch import UidFetcher

GM_ITEMS = ["X-GM-MSGID", "X-GM-THRID", "X-GM-LABELS"]
INBOX_LABEL = "\\Inbox"
SEEN = "\\Seen"
MESSAGE_ID_FIELD = "BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]"
# Special-use folders never mirrored on Gmail (every message again, or mail on its way out).
NOT_MIRRORED = frozenset({"\\all", "\\junk", "\\trash", "\\noselect", "\\nonexistent"})
# How many X-GM-MSGIDs one UID SEARCH asks for (an OR chain of that depth).
SEARCH_CHUNK = 25


def _s(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def decode_labels(raw: Iterable[Any] | None) -> tuple[str, ...]:
    """X-GM-LABELS as names: modified UTF-7 decoded (`&AOk-t&AOk-` → `été`); a
    label made of digits that the parser read as a number becomes text again."""
    out: dict[str, None] = {}
    for item in raw or ():
        name = decode_utf7(item) if isinstance(item, bytes | str) else str(item)
        if name:
            out.setdefault(name, None)
    return tuple(out)


def as_msgid(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, tuple | list):
        value = value[0] if value else None
    try:
        return int(_s(value)) if value is not None else None
    except ValueError:
        return None


@dataclass(frozen=True)
class Folders:
    """The account's folders with their LIST attributes (lower-cased)."""

    attrs: dict[str, frozenset[str]]

    @classmethod
    def listed(cls, client: imapclient.IMAPClient) -> Folders:
        return cls(
            {
                name: frozenset(_s(a).lower() for a in flags)
                for flags, _delim, name in client.list_folders()
            }
        )

    def special(self, use: str) -> str | None:
        """The folder flagged with special-use `use` (`\\All`, `\\Sent`...)."""
        wanted = use.lower()
        return next((n for n, a in self.attrs.items() if wanted in a), None)

    @property
    def all_mail(self) -> str | None:
        return self.special("\\All") or next(
            (n for n in self.attrs if is_gmail_archive(n) and n.lower() != "archive"), None
        )

    def mirrorable(self, name: str) -> bool:
        attrs = self.attrs.get(name)
        return attrs is not None and not (attrs & NOT_MIRRORED)

    def mirrored(self, extra: Iterable[str] = ()) -> list[str]:
        """INBOX, the Sent folder and the extra folders that exist and may be mirrored."""
        names = ["INBOX"]
        sent = self.special("\\Sent")
        if sent:
            names.append(sent)
        names += [f for f in extra if self.mirrorable(f)]
        return [n for n in dict.fromkeys(names) if n in self.attrs or n == "INBOX"]

    def label_of(self, folder: str) -> str | None:
        """The label whose removal takes a message out of `folder`: `\\Inbox` for
        INBOX, the name of a user label's folder, None for Gmail's own folders
        (Sent, Starred, Important... are not labels one files mail under)."""
        if folder.upper() == "INBOX":
            return INBOX_LABEL
        attrs = self.attrs.get(folder, frozenset())
        if any(a.startswith("\\") and a not in {"\\haschildren", "\\hasnochildren"} for a in attrs):
            return None
        if folder.lower().startswith(("[gmail]/", "[google mail]/")):
            return None
        return folder


def folder_of_label(label: str) -> str:
    """The folder a label shows as (for the mirror rows a label change removes)."""
    return "INBOX" if label == INBOX_LABEL else label


def is_archive(target: str, all_mail: str | None) -> bool:
    """A move to "archive" or to All Mail: on Gmail, take it out of the Inbox."""
    return is_gmail_archive(target) or (all_mail is not None and target == all_mail)


@dataclass(frozen=True)
class LabelPlan:
    """What a Gmail job does to each message: labels and flags to add and remove."""

    add_labels: tuple[str, ...] = ()
    remove_labels: tuple[str, ...] = ()
    add_flags: tuple[str, ...] = ()
    remove_flags: tuple[str, ...] = ()


def clean_plan(target: str | None) -> LabelPlan:
    """SPEC §5: clean on Gmail = +`Secretary/Auto-Cleaned`, -`\\Inbox`, +`\\Seen`."""
    return LabelPlan((target or CLEAN_FOLDER,), (INBOX_LABEL,), (SEEN,))


def move_plan(target: str, source_label: str | None, all_mail: str | None) -> LabelPlan:
    """A move is a label change: to a label, +label and -the source's label;
    to "archive" (All Mail), only -the source's label; to INBOX, +`\\Inbox`."""
    remove = (source_label,) if source_label else ()
    if is_archive(target, all_mail):
        return LabelPlan((), remove)
    label = INBOX_LABEL if target.upper() == "INBOX" else target
    return LabelPlan((label,), tuple(r for r in remove if r != label))


@dataclass(frozen=True)
class GmState:
    """One message as Gmail shows it: X-GM-MSGID, flags, labels, Message-ID."""

    msgid: int
    flags: tuple[str, ...]
    labels: tuple[str, ...]
    message_id: str | None = None


def fetch_gm_state(
    client: imapclient.IMAPClient, uids: Sequence[int], *, with_message_id: bool = False
) -> dict[int, GmState]:
    """uid → GmState in the selected folder (read-only: BODY.PEEK)."""
    if not uids:
        return {}
    items = ["FLAGS", "X-GM-MSGID", "X-GM-LABELS"] + ([MESSAGE_ID_FIELD] if with_message_id else [])
    resp = UidFetcher(client).fetch(uids, items, required=(b"X-GM-MSGID",))
    out: dict[int, GmState] = {}
    for uid, data in resp.items():
        msgid = as_msgid(data.get(b"X-GM-MSGID"))
        if msgid is None:
            continue
        header = next(
            (v for k, v in data.items() if _s(k).upper().startswith("BODY[HEADER.FIELDS")), None
        )
        out[int(uid)] = GmState(
            msgid=msgid,
            flags=tuple(_s(f) for f in data.get(b"FLAGS", ()) if _s(f) != "\\Recent"),
            labels=decode_labels(data.get(b"X-GM-LABELS")),
            message_id=normalise_message_id(header) if header is not None else None,
        )
    return out


def locate(client: imapclient.IMAPClient, msgids: Iterable[int]) -> dict[int, int]:
    """X-GM-MSGID → UID in the selected folder, for those it holds (exactly: each
    hit's X-GM-MSGID is fetched back, so a server answering loosely is caught)."""
    wanted = sorted(set(msgids))
    found: dict[int, int] = {}
    for start in range(0, len(wanted), SEARCH_CHUNK):
        chunk = wanted[start : start + SEARCH_CHUNK]
        criteria: list[str] = []
        for m in chunk[:-1]:
            criteria += ["OR", "X-GM-MSGID", str(m)]
        criteria += ["X-GM-MSGID", str(chunk[-1])]
        hits = [int(u) for u in client.search(criteria)]
        if not hits:
            continue
        resp = UidFetcher(client).fetch(hits, ["X-GM-MSGID"], required=(b"X-GM-MSGID",))
        for uid, data in resp.items():
            msgid = as_msgid(data.get(b"X-GM-MSGID"))
            if msgid in chunk:
                found.setdefault(msgid, int(uid))
    return found


def store(
    client: imapclient.IMAPClient, uids: Sequence[int], plan: LabelPlan
) -> dict[int, GmState]:
    """Change labels and flags of these UIDs (in All Mail), then read them back.

    Flags first, labels added before labels removed: a message is never left
    with fewer labels than both its old and new set while the batch runs, and
    nothing here can delete mail (no label is `\\Trash` or `\\Spam`: the
    handlers refuse those before they get here).
    """
    ids = list(uids)
    if ids:
        if plan.add_flags:
            client.add_flags(ids, list(plan.add_flags), silent=True)
        if plan.remove_flags:
            client.remove_flags(ids, list(plan.remove_flags), silent=True)
        if plan.add_labels:
            client.add_gmail_labels(ids, list(plan.add_labels), silent=True)
        if plan.remove_labels:
            client.remove_gmail_labels(ids, list(plan.remove_labels), silent=True)
    return fetch_gm_state(client, ids)


def select_rw(client: imapclient.IMAPClient, folder: str) -> int:
    return int(client.select_folder(folder, readonly=False)[b"UIDVALIDITY"])


def examine(client: imapclient.IMAPClient, folder: str) -> int:
    return int(client.select_folder(folder, readonly=True)[b"UIDVALIDITY"])
