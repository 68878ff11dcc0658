"""Folder rules shared by the approval card and the executor (pure, no I/O).

Moving mail into a Trash or Junk folder deletes it by another name: servers
empty those folders on their own (Gmail after 30 days). So no move, clean or
label-as-folder may target one: the approval refuses it by name, and the
executor refuses it again by name and by the server's special-use flags.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

# RFC 6154 special-use attributes of folders whose content the server discards.
DISCARDING_SPECIAL_USE = frozenset({"\\trash", "\\junk"})

# Names such folders go by when the server does not flag them (compared
# case-insensitively, on the whole name and on its last path component).
DISCARDING_NAMES = frozenset(
    {
        "trash",
        "deleted",
        "deleted items",
        "deleted messages",
        "bin",
        "junk",
        "junk e-mail",
        "junk email",
        "junk mail",
        "spam",
        "bulk mail",
        "[gmail]/trash",
        "[gmail]/bin",
        "[gmail]/spam",
        "[google mail]/trash",
        "[google mail]/bin",
        "[google mail]/spam",
    }
)

_INBOX_CHILD = re.compile(r"inbox[/.](.+)")
_ATOM_SPECIALS = re.compile(r'[(){ %*"\\\]\x00-\x1f\x7f]')


def discarding_folder_reason(folder: str, special_use: Iterable[str] = ()) -> str | None:
    """Why `folder` must not receive moved mail, or None when it may."""
    flags = {str(f).lower() for f in special_use}
    hit = flags & DISCARDING_SPECIAL_USE
    if hit:
        return (
            f"{folder!r} is the server's {sorted(hit)[0][1:].title()} folder: mail moved "
            "there is deleted later, so Piper never moves mail into it"
        )
    name = " ".join(folder.strip().split()).lower()
    # Courier-style servers keep them under the inbox: INBOX.Trash, INBOX/Spam.
    under_inbox = _INBOX_CHILD.fullmatch(name)
    if name in DISCARDING_NAMES or (under_inbox and under_inbox[1] in DISCARDING_NAMES):
        return (
            f"{folder!r} looks like a Trash or Spam folder: mail moved there is deleted "
            "later, so Piper never moves mail into it"
        )
    return None


def is_keyword(label: str) -> bool:
    """Whether a label can be an IMAP keyword (flag); otherwise it is a folder."""
    return bool(label) and not label.startswith("\\") and not _ATOM_SPECIALS.search(label)


# Gmail's system labels that put a message in Trash or Spam (deleted after 30 days).
DISCARDING_LABELS = frozenset({"\\trash", "\\spam", "\\junk"})


def discarding_label_reason(label: str) -> str | None:
    """Why a Gmail label must not be added (`\\Trash`, `\\Spam`, or a label named
    like a Trash/Spam folder), or None when it may: adding it deletes by another name."""
    if label.strip().lower() in DISCARDING_LABELS:
        return (
            f"the label {label!r} sends mail to Gmail's Trash or Spam, where it is deleted "
            "later, so Piper never applies it"
        )
    return discarding_folder_reason(label)


# What "archive" is called on Gmail, where it means "take it out of the Inbox".
GMAIL_ARCHIVE_NAMES = frozenset({"archive", "[gmail]/all mail", "[google mail]/all mail"})


def is_gmail_archive(target: str) -> bool:
    """A move on Gmail to "archive" or to All Mail only removes the Inbox label."""
    return " ".join(target.split()).lower() in GMAIL_ARCHIVE_NAMES
