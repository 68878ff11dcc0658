"""A message's identity: the one home for what names a message exactly.

On the server a message is (folder, UIDVALIDITY, UID) — what approvals list
and what the executor acts on; when it moved and its UID is unknown, its
Message-ID (normalised the one way below) is the only other exact handle. The
mirror, the approval cards, the executor and undo all use these two.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

_MSGID = re.compile(r"<([^<>]*)>")
_FOLDING = re.compile(r"\r?\n[ \t]+")


@dataclass(frozen=True, order=True)
class MessageRef:
    """A message's exact identity on the server: what approvals name."""

    folder: str
    uidvalidity: int
    uid: int

    @property
    def id(self) -> str:
        """The id the tools and the page use: `folder:uidvalidity:uid`."""
        return f"{self.folder}:{self.uidvalidity}:{self.uid}"

    @property
    def key(self) -> tuple[str, int, int]:
        return (self.folder, self.uidvalidity, self.uid)

    @classmethod
    def parse(cls, value: str | dict[str, Any]) -> MessageRef:
        """From an id string or a {folder, uidvalidity, uid} mapping; ValueError/KeyError
        /TypeError when it is neither."""
        if isinstance(value, dict):
            folder, validity, uid = value["folder"], value["uidvalidity"], value["uid"]
            if not isinstance(folder, str) or isinstance(validity, bool) or isinstance(uid, bool):
                raise ValueError(f"bad message identity {value!r}")
            return cls(folder, int(validity), int(uid))
        folder, validity, uid = str(value).rsplit(":", 2)
        if not folder:
            raise ValueError(f"bad message id {value!r}")
        return cls(folder, int(validity), int(uid))


def normalise_message_id(value: str | bytes | None) -> str | None:
    """A Message-ID as the mirror keeps it: unfolded, the text inside the first
    <...>, stripped; a raw `Message-ID:` header line is accepted too. Compared
    exactly (a substring match could find another message)."""
    if value is None:
        return None
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    if "\n" in text:  # folded (a header value from a parse is unfolded already)
        text = _FOLDING.sub(" ", text)
    text = text.strip()
    if text[:11].lower() == "message-id:":
        text = text[11:].strip()
    if not text:
        return None
    match = _MSGID.search(text)
    if match:
        return match[1].strip() or None
    words = text.split()
    return (words[0].strip("<>") or None) if words else None
