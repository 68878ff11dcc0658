"""Turn raw (possibly truncated, possibly broken) message bytes into mirror columns.

Never raises: anything that cannot be decoded becomes a note in `problems`, so
one bad message never fails a sync. The compat32 policy is used because it is
several times faster than `policy.default`; headers are decoded here instead.
"""

from __future__ import annotations

import email
import email.policy
import html
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import Message
from email.utils import parsedate_to_datetime

from app.mail.addresses import parse_address_list
from app.mail.headers import decode_bytes, decode_header_text

_WS = re.compile(r"[ \t\r\f\v]+")
_BLANK_LINES = re.compile(r"\n\s*\n+")
_DROP_BLOCKS = re.compile(r"<(script|style|head|title)\b.*?(</\1\s*>|$)", re.IGNORECASE | re.DOTALL)
_BREAKS = re.compile(r"<\s*(br|/p|/div|/tr|/li|/h\d|p|div|tr|li|h\d)\b[^>]*>", re.IGNORECASE)
_TAGS = re.compile(r"<[^>]*>")
_COMMENTS = re.compile(r"<!--.*?(-->|$)", re.DOTALL)
_MSGID = re.compile(r"<([^<>\s]+)>")


@dataclass(frozen=True)
class ParsedMessage:
    message_id: str | None = None
    in_reply_to: str | None = None
    references: tuple[str, ...] = ()
    from_addr: str | None = None
    from_name: str | None = None
    to_addrs: tuple[str, ...] = ()
    cc_addrs: tuple[str, ...] = ()
    to_display: str = ""
    cc_display: str = ""
    reply_to: str | None = None
    subject: str = ""
    date: datetime | None = None
    body_excerpt: str = ""
    list_unsubscribe: str | None = None
    list_id: str | None = None
    precedence: str | None = None
    auto_submitted: str | None = None
    has_attachments: bool = False
    problems: tuple[str, ...] = field(default_factory=tuple)


def html_to_text(markup: str) -> str:
    text = _COMMENTS.sub(" ", markup)
    text = _DROP_BLOCKS.sub(" ", text)
    text = _BREAKS.sub("\n", text)
    text = _TAGS.sub(" ", text)
    return _tidy(html.unescape(text))


def _tidy(text: str) -> str:
    text = text.replace("\x00", "").replace("\r\n", "\n").replace("\r", "\n").replace("\xa0", " ")
    lines = [_WS.sub(" ", line).strip() for line in text.split("\n")]
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()


def _msgid(value: object) -> str | None:
    text = decode_header_text(value)
    if not text:
        return None
    match = _MSGID.search(text)
    return (match.group(1) if match else text.strip("<> ")) or None


def _date(value: object, problems: list[str]) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = parsedate_to_datetime(str(value))
    except (TypeError, ValueError, IndexError, OverflowError):
        problems.append(f"unparseable Date header {str(value)[:60]!r}")
        return None
    if parsed is None:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _part_text(part: Message, problems: list[str]) -> str:
    try:
        payload = part.get_payload(decode=True)
    except Exception as exc:  # broken transfer encoding
        problems.append(f"undecodable body part: {exc}")
        return ""
    if payload is None:
        raw = part.get_payload()
        return raw if isinstance(raw, str) else ""
    if not isinstance(payload, bytes):
        return str(payload)
    charset = part.get_content_charset()
    text, clean = decode_bytes(payload, charset)
    if not clean and charset:
        problems.append(f"unknown or wrong charset {charset!r}: decoded best effort")
    return text


def _body(msg: Message, problems: list[str]) -> tuple[str, bool]:
    plain: list[str] = []
    rich: list[str] = []
    calendar: list[str] = []
    attachments = False
    for part in msg.walk():
        if part.is_multipart():
            continue
        ctype = part.get_content_type()
        disposition = (part.get("Content-Disposition") or "").lower()
        if disposition.startswith("attachment") or not ctype.startswith("text/"):
            attachments = True  # its content never goes into the excerpt
            continue
        if ctype == "text/plain":
            plain.append(_part_text(part, problems))
        elif ctype == "text/html":
            rich.append(_part_text(part, problems))
        elif ctype == "text/calendar":
            calendar.append(_part_text(part, problems))
    if any(p.strip() for p in plain):
        return _tidy("\n".join(plain)), attachments
    if rich:
        return html_to_text("\n".join(rich)), attachments
    return _tidy("\n".join(calendar)), attachments


class _Headers:
    """Top-level headers, looked up once: `Message.get` rescans every header
    on every call, which made it the parser's hottest function."""

    def __init__(self, msg: Message) -> None:
        self.all: dict[str, list[str]] = {}
        for name, value in msg.items():
            self.all.setdefault(name.lower(), []).append(value)

    def get(self, name: str) -> str | None:
        values = self.all.get(name.lower())
        return values[0] if values else None

    def joined(self, name: str) -> str:
        return ", ".join(str(v) for v in self.all.get(name.lower(), ()))

    def text(self, name: str) -> str | None:
        value = self.get(name)
        return (decode_header_text(value) if value is not None else "") or None


def parse_message(raw: bytes, *, excerpt_chars: int = 2000) -> ParsedMessage:
    problems: list[str] = []
    try:
        msg = email.message_from_bytes(raw or b"", policy=email.policy.compat32)
    except Exception as exc:  # pragma: no cover - the parser is lenient
        return ParsedMessage(problems=(f"unparseable message: {exc}",))
    if msg.defects:
        problems.append("; ".join(sorted({type(d).__name__ for d in msg.defects})))
    try:
        h = _Headers(msg)
        senders = parse_address_list(h.get("From"))
        to_raw, cc_raw = h.joined("To"), h.joined("Cc")
        to = parse_address_list(to_raw)
        cc = parse_address_list(cc_raw)
        reply_to = parse_address_list(h.get("Reply-To"))
        body, attachments = _body(msg, problems)
        refs = tuple(m.group(1) for m in _MSGID.finditer(decode_header_text(h.get("References"))))
        return ParsedMessage(
            message_id=_msgid(h.get("Message-ID")),
            in_reply_to=_msgid(h.get("In-Reply-To")),
            references=refs,
            from_addr=senders[0][1] if senders else None,
            from_name=(senders[0][0] or None) if senders else h.text("From"),
            to_addrs=tuple(e for _, e in to),
            cc_addrs=tuple(e for _, e in cc),
            to_display=decode_header_text(to_raw),
            cc_display=decode_header_text(cc_raw),
            reply_to=reply_to[0][1] if reply_to else None,
            subject=decode_header_text(h.get("Subject")),
            date=_date(h.get("Date"), problems),
            body_excerpt=body[:excerpt_chars],
            list_unsubscribe=h.text("List-Unsubscribe"),
            list_id=h.text("List-Id"),
            precedence=(h.text("Precedence") or "").lower() or None,
            auto_submitted=(h.text("Auto-Submitted") or "").lower() or None,
            has_attachments=attachments,
            problems=tuple(problems),
        )
    except Exception as exc:  # one bad message never fails a sync
        return ParsedMessage(
            subject=decode_header_text(msg.get("Subject")),
            problems=(*problems, f"could not parse: {type(exc).__name__}: {exc}"),
        )
