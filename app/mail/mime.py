"""Turn raw (possibly truncated, possibly broken) message bytes into mirror columns.

Never raises: anything that cannot be decoded becomes a note in `problems`, so
one bad message never fails a sync.

The MIME structure is walked here on bytes instead of with
`email.message_from_bytes`: even with the fast compat32 policy the stdlib
parser alone costs ~0.2 ms for a typical 3-10 KB message (it works line by
line in Python), about twice what this whole function takes; finding headers
with one regex and boundaries with `bytes.find` copes just as well with the
64 KiB partial fetch cutting a message anywhere. Only the headers the mirror
needs are decoded, and only as much body as the excerpt needs.
"""

from __future__ import annotations

import binascii
import html
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from app.mail.addresses import (
    decode_base64,
    decode_header_text,
    decode_text_bytes,
    parse_address_list,
)

__all__ = ["ParsedMessage", "decode_header_text", "html_to_text", "parse_message"]

MAX_DEPTH = 12  # nested multiparts deeper than this are junk or an attack
MAX_PARTS = 200

# Headers: a blank line ends them; a line that is neither a field nor a
# continuation means the blank line is missing and the body starts there.
_BLANK_LINE = re.compile(rb"\n\r?\n")
_FIELD = re.compile(rb"^([!-9;-~]+)[ \t]*:(.*(?:\n[ \t].*)*)", re.MULTILINE)
_FIELD_START = re.compile(rb"[!-9;-~]+[ \t]*:")
_NOT_A_FIELD = re.compile(rb"\n(?![!-9;-~]+[ \t]*:|[ \t]|\r?\Z)")  # a literal first: fast
_PARAM = re.compile(r';\s*([^\s=;]+)\s*=\s*("(?:[^"\\]|\\.)*"?|[^;]*)')
_MSGID = re.compile(r"<([^<>]*)>")

# HTML to text.
_HTML_COMMENT = re.compile(r"<!--.*?(?:-->|\Z)", re.DOTALL)
_HTML_DROP = re.compile(
    r"<(script|style)\b.*?(?:</\1\s*>|\Z)|<(head|title)\b.*?</\2\s*>", re.IGNORECASE | re.DOTALL
)


def _any_case(*tags: str) -> str:
    """`br` -> `[bB][rR]`: several times faster than re.IGNORECASE on long HTML."""
    return "|".join(
        "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else c for c in t) for t in tags
    )


_BLOCK_TAGS = _any_case(
    "br", "p", "div", "tr", "li", "h[1-6]", "table", "blockquote", "hr", "pre", "ul", "ol",
    "dl", "dt", "dd", "section", "article", "header", "footer", "center", "address",
)  # fmt: skip
_HTML_BLOCK = re.compile(rf"</?(?:{_BLOCK_TAGS})\b[^>]*>")
_HTML_CELL = re.compile(rf"</?(?:{_any_case('td', 'th', 'img')})\b[^>]*>")
_HTML_TAG = re.compile(r"<[a-zA-Z/!?][^>]*>")

# Plain-text tidying. Python's regex engine costs ~25 ns per character for a
# character class even where nothing matches, so whitespace is normalised with
# `in` and str.replace (C speed, and usually nothing to do) instead.
_INVISIBLE = ("\u00ad", "\u034f", "\u200b", "\u2060", "\ufeff")  # newsletter padding
_ODD_SPACES = ("\xa0", "\u1680", *map(chr, range(0x2000, 0x200B)), "\u202f", "\u205f", "\u3000")
_ODD_BREAKS = ("\x85", "\u2028", "\u2029")
_JOINER_BY_SPACE = re.compile(r"[\u200c\u200d]+(?=\s)|(?<=\s)[\u200c\u200d]+")
# An excerpt is cut from a prefix of the text (grown until it is long enough):
# tidying or converting all of a 60 KB body for 2,000 characters is the
# slowest thing a parse could do. The margin keeps a tag or entity cut at the
# prefix's end out of the excerpt.
_PREFIX_MARGIN = 64

_ICS_FIELDS = re.compile(r"^(SUMMARY|LOCATION|DESCRIPTION)(?:;[^:\n]*)?:(.*)$", re.MULTILINE)
_REPORTS = frozenset({"message/delivery-status", "message/disposition-notification"})
_SIGNATURES = frozenset(
    {
        "application/pkcs7-signature",
        "application/x-pkcs7-signature",
        "application/pgp-signature",
        "application/pgp-encrypted",
    }
)


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
    problems: tuple[str, ...] = ()


# --------------------------------------------------------------------------- text


def _pg_text(text: str) -> str:
    """Postgres text holds neither NUL nor lone surrogates (which a declared
    charset such as UTF-7 can decode to); one such value would fail the batch."""
    if "\x00" in text:
        text = text.replace("\x00", "")
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            text = text.encode("utf-8", "replace").decode("utf-8")
    return text


def _tidy(text: str) -> str:
    """Collapse whitespace but keep lines, with at most one blank line in a row."""
    if "\x00" in text:
        text = text.replace("\x00", "")
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    for char in "\t\x0b\x0c":
        if char in text:
            text = text.replace(char, " ")
    if not text.isascii():
        for char in _INVISIBLE:
            if char in text:
                text = text.replace(char, "")
        for char in _ODD_SPACES:
            if char in text:
                text = text.replace(char, " ")
        for char in _ODD_BREAKS:
            if char in text:
                text = text.replace(char, "\n")
        if "\u200c" in text or "\u200d" in text:
            text = _JOINER_BY_SPACE.sub("", text)
    while "  " in text:
        text = text.replace("  ", " ")
    text = text.replace(" \n", "\n").replace("\n ", "\n")
    while "\n\n\n" in text:
        text = text.replace("\n\n\n", "\n\n")
    return text.strip()


def _prefix_text(source: str, convert: Callable[[str], str], limit: int, ratio: int = 1) -> str:
    """`convert` applied to a prefix of `source` long enough to yield `limit` chars;
    `ratio` is a first guess at how many source chars make one output char."""
    size = ratio * (limit + limit // 4) + 256
    while True:
        text = convert(source[:size])
        if size >= len(source) or len(text) >= limit + _PREFIX_MARGIN:
            return text[:limit]
        size *= 4


def html_to_text(html_text: str) -> str:
    """Readable text from an HTML body: scripts, styles and comments dropped,
    entities unescaped, block elements as line breaks.

    Source line breaks mean nothing in HTML, so they become spaces before
    block tags put the real breaks in. An unclosed <head>
    or <title> is kept rather than dropped to the end, so a broken page can
    never hide the body (and a name in it) from the safety check.
    """
    text = _HTML_COMMENT.sub(" ", html_text)
    text = _HTML_DROP.sub(" ", text)
    last = text.rfind("<")
    if last >= 0 and ">" not in text[last:]:  # a tag cut off by truncation
        text = text[:last]
    for char in "\r\n\t\x0c":  # source line breaks are just spaces in HTML
        if char in text:
            text = text.replace(char, " ")
    text = _HTML_BLOCK.sub("\n", text)
    text = _HTML_CELL.sub(" ", text)
    text = _HTML_TAG.sub("", text)
    return _tidy(html.unescape(text))


def _calendar_text(ics: str) -> str:
    """An invitation's summary, place and description, not its raw iCalendar lines."""
    unfolded = ics.replace("\r\n", "\n").replace("\n ", "").replace("\n\t", "")
    fields = [
        m[2].replace("\\n", "\n").replace("\\N", "\n").replace("\\,", ",").replace("\\;", ";")
        for m in _ICS_FIELDS.finditer(unfolded)
    ]
    return _tidy("\n".join(fields) if fields else unfolded)


# ------------------------------------------------------------------------ headers


class _Headers:
    """Header fields of one entity, kept as raw bytes and decoded on demand."""

    __slots__ = ("fields",)

    def __init__(self, head: bytes) -> None:
        self.fields: dict[bytes, list[bytes]] = {}
        for name, value in _FIELD.findall(head):
            self.fields.setdefault(name.lower(), []).append(value)

    def raw(self, name: bytes) -> str | None:
        values = self.fields.get(name)
        return _field_text(values[0]) if values else None

    def joined(self, name: bytes) -> str | None:
        values = self.fields.get(name)
        if not values:
            return None
        return ", ".join(_field_text(v) for v in values)

    def text(self, name: bytes, problems: list[str]) -> str | None:
        value = self.raw(name)
        if not value:
            return None
        return decode_header_text(value, problems=problems) or None


def _field_text(value: bytes) -> str:
    """Unfolded field value; 8-bit header bytes are UTF-8 or else Windows-1252."""
    value = value.replace(b"\r", b"").replace(b"\n", b"").strip()
    if value.isascii():
        return value.decode("ascii")
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value.decode("cp1252", "replace")


def _split_entity(data: bytes, problems: list[str]) -> tuple[_Headers, bytes]:
    """Headers and body of a message or body part."""
    if data.startswith(b"From ") and not _FIELD_START.match(data):  # an mbox separator line
        newline = data.find(b"\n")
        data = data[newline + 1 :] if newline >= 0 else b""
    if data[:1] == b"\n" or data[:2] == b"\r\n":
        return _Headers(b""), data[data.find(b"\n") + 1 :]
    blank = _BLANK_LINE.search(data)
    head, body = (data[: blank.start()], data[blank.end() :]) if blank else (data, b"")
    if head and not _FIELD_START.match(head):
        problems.append("no header fields; read it all as body")
        return _Headers(b""), data
    junk = _NOT_A_FIELD.search(head)
    if junk is not None:
        problems.append("no blank line between header and body")
        head, body = head[: junk.start()], data[junk.start() + 1 :]
    return _Headers(head), body


def _content_type(value: str | None, default: str) -> tuple[str, dict[str, str]]:
    if not value:
        return default, {}
    kind, _, rest = value.partition(";")
    kind = "".join(kind.split()).lower()
    if kind.count("/") != 1 or kind.startswith("/") or kind.endswith("/"):
        kind = "text/plain"  # RFC 2045: an invalid Content-Type means text/plain
    return kind, _params(";" + rest)


def _params(text: str) -> dict[str, str]:
    params: dict[str, str] = {}
    for name, value in _PARAM.findall(text):
        value = value.strip()
        if value.startswith('"'):
            value = value[1:-1] if len(value) > 1 and value.endswith('"') else value[1:]
            value = value.replace('\\"', '"').replace("\\\\", "\\")
        key = name.lower()
        if key.endswith("*"):  # RFC 2231 charset'lang'value; only names need it here
            key = key[:-1]
            value = value.split("'", 2)[-1]
        params.setdefault(key, value)
    return params


def _msgid(value: str | None) -> str | None:
    if not value:
        return None
    match = _MSGID.search(value)
    if match:
        return match[1].strip() or None
    words = value.split()
    return words[0].strip("<>") or None if words else None


def _date(value: str | None, problems: list[str]) -> datetime | None:
    if not value or not value.strip():
        return None
    try:
        parsed = parsedate_to_datetime(value)
    except Exception:  # ValueError, OverflowError, and whatever odd input finds next
        problems.append(f"unparseable Date header {value[:60]!r}")
        return None
    if parsed is None:  # pragma: no cover - older Pythons returned None
        problems.append(f"unparseable Date header {value[:60]!r}")
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


# ------------------------------------------------------------------------- bodies


@dataclass(slots=True)
class _Leaf:
    kind: str
    charset: str | None
    encoding: str
    body: bytes


@dataclass(slots=True)
class _Walk:
    """What a walk over the MIME tree found; bodies are decoded later, and only
    as many as the excerpt needs."""

    plain: list[_Leaf]
    rich: list[_Leaf]
    calendar: list[_Leaf]
    attachments: bool = False
    truncated: bool = False
    parts: int = 0


def _split_multipart(body: bytes, boundary: bytes) -> tuple[list[bytes], bool]:
    """Body parts between `--boundary` lines, and whether the closing line was seen."""
    delimiter = b"--" + boundary
    size = len(delimiter)
    parts: list[bytes] = []
    start = -1  # where the current part's content begins
    pos = 0
    while len(parts) < MAX_PARTS:
        i = body.find(delimiter, pos)
        if i < 0:
            break
        pos = i + 1
        if i and body[i - 1] != 0x0A:  # not at the start of a line
            continue
        after = i + size
        closing = body.startswith(b"--", after)
        eol = body.find(b"\n", after)
        line_end = len(body) if eol < 0 else eol
        if body[after + 2 * closing : line_end].strip():
            continue  # a longer boundary that merely starts the same way
        if start >= 0:
            end = i - 1 if i else 0
            if end > start and body[end - 1] == 0x0D:
                end -= 1
            parts.append(body[start:end])
        if closing:
            return parts, True
        start = line_end + 1
    if start >= 0 and start <= len(body):
        parts.append(body[start:])
    return parts, False


def _walk(
    headers: _Headers,
    body: bytes,
    walk: _Walk,
    problems: list[str],
    *,
    depth: int = 0,
    default: str = "text/plain",
    related: bool = False,
) -> None:
    walk.parts += 1
    kind, params = _content_type(headers.raw(b"content-type"), default)
    if walk.parts > MAX_PARTS or depth > MAX_DEPTH:
        if walk.parts == MAX_PARTS + 1 or depth == MAX_DEPTH + 1:
            problems.append("too many or too deeply nested MIME parts; the rest is skipped")
        return
    if kind.startswith("multipart/"):
        boundary = params.get("boundary", "")
        if not boundary:
            problems.append(f"{kind} without a boundary; read as plain text")
            kind = "text/plain"
        else:
            parts, closed = _split_multipart(body, boundary.encode("utf-8", "replace"))
            if not parts:
                problems.append(f"{kind} has no body parts; read as plain text")
                kind = "text/plain"
            else:
                walk.truncated = walk.truncated or not closed
                child_default = "message/rfc822" if kind == "multipart/digest" else "text/plain"
                for part in parts:
                    child_headers, child_body = _split_entity(part, problems)
                    _walk(
                        child_headers,
                        child_body,
                        walk,
                        problems,
                        depth=depth + 1,
                        default=child_default,
                        related=kind == "multipart/related",
                    )
                return
    if kind in _SIGNATURES:  # S/MIME and PGP plumbing, not something the person attached
        return
    disposition, _, rest = (headers.raw(b"content-disposition") or "").partition(";")
    disposition = disposition.strip().lower()
    if disposition == "attachment":
        walk.attachments = True
        return
    if not kind.startswith("text/"):
        # Images inside multipart/related are the HTML's pictures, not attachments.
        if not related and kind not in _REPORTS:
            walk.attachments = True
        return
    if disposition != "inline" and ("name" in params or "filename" in _params(";" + rest)):
        walk.attachments = True  # a named text file, e.g. Apple Mail's attached .txt
        return
    encoding = (headers.raw(b"content-transfer-encoding") or "").strip().lower()
    leaf = _Leaf(kind, params.get("charset"), encoding, body)
    if kind == "text/plain":
        walk.plain.append(leaf)
    elif kind == "text/html":
        walk.rich.append(leaf)
    elif kind == "text/calendar":
        walk.calendar.append(leaf)


def _leaf_text(leaf: _Leaf, problems: list[str]) -> str:
    data = leaf.body
    if leaf.encoding == "base64":
        decoded = decode_base64(data)
        if decoded is None:
            problems.append("undecodable base64 body")
            return ""
        data = decoded
    elif leaf.encoding == "quoted-printable":
        data = binascii.a2b_qp(data)
    text, problem = decode_text_bytes(data, leaf.charset)
    if problem:
        problems.append(f"body: {problem}")
    return text


def _excerpt(walk: _Walk, excerpt_chars: int, problems: list[str]) -> str:
    """text/plain if it says anything, else HTML as text, else the invitation."""
    limit = excerpt_chars
    if limit <= 0:
        return ""
    texts: list[str] = []
    for leaf in walk.plain:
        text = _prefix_text(_leaf_text(leaf, problems), _tidy, limit)
        if text:
            texts.append(text)
            limit -= len(text) + 2
            if limit <= 0:
                break
    if not texts:
        for leaf in walk.rich:
            text = _prefix_text(_leaf_text(leaf, problems), html_to_text, limit, ratio=4)
            if text:
                texts.append(text)
                limit -= len(text) + 2
                if limit <= 0:
                    break
    if not texts:
        texts = [_calendar_text(_leaf_text(leaf, problems)) for leaf in walk.calendar]
    if not any(texts) and walk.truncated:
        problems.append("no readable text before the message was cut off (partial fetch?)")
    return "\n\n".join(t for t in texts if t)[:excerpt_chars].rstrip()


# ------------------------------------------------------------------------- public


def _pg_optional(value: str | None) -> str | None:
    return _pg_text(value) if value else None


def parse_message(raw: bytes, *, excerpt_chars: int = 2000) -> ParsedMessage:
    """The mirror's columns for one fetched message; never raises."""
    problems: list[str] = []
    try:
        return _parse(raw if isinstance(raw, bytes) else bytes(raw or b""), excerpt_chars, problems)
    except Exception as exc:  # a bug here must cost one message's columns, not a sync
        problems.append(f"could not parse: {type(exc).__name__}: {exc}"[:200])
        return ParsedMessage(problems=tuple(dict.fromkeys(_pg_text(p) for p in problems)))


def _parse(raw: bytes, excerpt_chars: int, problems: list[str]) -> ParsedMessage:
    headers, body = _split_entity(raw, problems)
    from_raw = headers.raw(b"from")
    senders = parse_address_list(from_raw, problems=problems)
    to_raw = headers.joined(b"to")
    cc_raw = headers.joined(b"cc")
    to = parse_address_list(to_raw, problems=problems)
    cc = parse_address_list(cc_raw, problems=problems)
    reply_to = parse_address_list(headers.raw(b"reply-to"))
    if senders:
        from_addr, from_name = senders[0][1], senders[0][0] or None
    else:
        from_addr, from_name = None, decode_header_text(from_raw) or None
    references = tuple(
        dict.fromkeys(
            ref.strip() for ref in _MSGID.findall(headers.raw(b"references") or "") if ref.strip()
        )
    )
    walk = _Walk([], [], [])
    _walk(headers, body, walk, problems)
    excerpt = _excerpt(walk, excerpt_chars, problems)
    precedence = headers.text(b"precedence", problems)
    auto_submitted = headers.text(b"auto-submitted", problems)
    opt = _pg_optional
    return ParsedMessage(
        message_id=opt(_msgid(headers.raw(b"message-id"))),
        in_reply_to=opt(_msgid(headers.raw(b"in-reply-to"))),
        references=tuple(_pg_text(r) for r in references),
        from_addr=opt(from_addr),
        from_name=opt(from_name),
        to_addrs=tuple(_pg_text(e) for _, e in to),
        cc_addrs=tuple(_pg_text(e) for _, e in cc),
        to_display=_pg_text(decode_header_text(to_raw)),
        cc_display=_pg_text(decode_header_text(cc_raw)),
        reply_to=opt(reply_to[0][1] if reply_to else None),
        subject=_pg_text(decode_header_text(headers.raw(b"subject"), problems=problems)),
        date=_date(headers.raw(b"date"), problems),
        body_excerpt=_pg_text(excerpt),
        list_unsubscribe=opt(headers.text(b"list-unsubscribe", problems)),
        list_id=opt(headers.text(b"list-id", problems)),
        precedence=opt(precedence.lower() if precedence else None),
        auto_submitted=opt(auto_submitted.lower() if auto_submitted else None),
        has_attachments=walk.attachments,
        problems=tuple(dict.fromkeys(_pg_text(p) for p in problems)),
    )
