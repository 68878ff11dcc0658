"""Turn raw (possibly truncated, possibly broken) message bytes into mirror columns.

Never raises: anything that cannot be decoded becomes a note in `problems`, so
one bad message never fails a sync.

The MIME structure is walked here on bytes instead of with
`email.message_from_bytes`: even with the fast compat32 policy the stdlib
parser alone costs ~0.2 ms for a typical 3-10 KB message (it works line by
line in Python), about twice what this whole function takes; finding headers
with one regex and boundaries with `bytes.find` copes just as well with the
64 KiB partial fetch cutting a message anywhere. Only the headers the mirror
needs are decoded, and only as much body as the excerpt needs, unless an
identity is given: then every text the message carries (subject, each text/*
part including attachments and forwarded messages, HTML both as rendered text
and as unescaped source) is read to decide whether it mentions the person.

HTML becomes text through lexbor (selectolax), an HTML5 parser; the one
hand-written step left is `_close_runaway_raw_text`, because an HTML5 parser
reads everything after an unclosed <style> or <title> as CSS or title text.
"""

from __future__ import annotations

import binascii
import html
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from functools import lru_cache
from typing import TYPE_CHECKING
from urllib.parse import unquote_to_bytes

from selectolax.lexbor import LexborHTMLParser

from app.mail.addresses import (
    decode_base64,
    decode_header_text,
    decode_text_bytes,
    parse_address_list,
)
from app.mail.message_ref import normalise_message_id
from app.quick_init import quick_init

if TYPE_CHECKING:
    from app.mail.identity import Identity

__all__ = ["ParsedMessage", "decode_header_text", "html_to_text", "parse_message"]

MAX_DEPTH = 12  # nested multiparts deeper than this are junk or an attack
MAX_PARTS = 200

# Headers: a blank line ends them; a line that is neither a field nor a
# continuation means the blank line is missing and the body starts there.
_BLANK_LINE = re.compile(rb"\n\r?\n")
_FIELD = re.compile(r"^([!-9;-~]+)[ \t]*:(.*(?:\n[ \t].*)*)", re.MULTILINE)
_FIELD_START = re.compile(rb"[!-9;-~]+[ \t]*:")
_NOT_A_FIELD = re.compile(rb"\n(?![!-9;-~]+[ \t]*:|[ \t]|\r?\Z)")  # a literal first: fast
_PARAM = re.compile(r';\s*([^\s=;]+)\s*=\s*("(?:[^"\\]|\\.)*"?|[^;]*)')
_MSGID = re.compile(r"<([^<>]*)>")

# HTML to text (lexbor). Block elements become line breaks, cells and images
# spaces; a private-use character stands for a break while the source's own
# line breaks (mere spaces in HTML) are flattened.
_BLOCK_ELEMENTS = frozenset(
    {"p", "div", "tr", "li", "h1", "h2", "h3", "h4", "h5", "h6", "table", "blockquote", "pre"}
    | {"ul", "ol", "dl", "dt", "dd", "section", "article", "header", "footer", "center"}
    | {"address", "form", "fieldset", "figure", "figcaption", "main", "nav", "aside"}
)
_BREAK_ELEMENTS = frozenset({"br", "hr"})
_CELL_ELEMENTS = frozenset({"td", "th", "img"})
_NOT_SHOWN = ["head", "script", "style", "title", "template"]
_BREAK = "\ue000"
# Raw-text elements whose missing end tag makes a parser swallow the document.
_RAW_TEXT_OPEN = re.compile(r"<(style|title)\b[^>]*>", re.IGNORECASE)
_TAG_LIKE = re.compile(r"<[a-zA-Z/]")

# Plain-text tidying. Python's regex engine costs ~25 ns per character for a
# character class even where nothing matches, so whitespace is normalised with
# `in` and str.replace (C speed, and usually nothing to do) instead.
# The top-level header fields the parser reads (`_parse`), and so all a sync
# fetches of a message's header (executor/handlers/sync.py). Received, DKIM,
# ARC and the provider's own fields often come to several KB and are read by
# nothing here: fetched whole, they pushed a first sync of real Gmail mail past
# 16 KB per message (SPEC §9). A field added to `_parse` goes here too
# (tests/unit/test_header_fields.py checks it).
HEADER_FIELDS = (
    "From",
    "To",
    "Cc",
    "Reply-To",
    "Subject",
    "Date",
    "Message-ID",
    "In-Reply-To",
    "References",
    "List-Id",
    "List-Unsubscribe",
    "Precedence",
    "Auto-Submitted",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
    "Content-Disposition",
)
_INVISIBLE = ("\u00ad", "\u034f", "\u200b", "\u2060", "\ufeff")  # newsletter padding
_ODD_SPACES = ("\xa0", "\u1680", *map(chr, range(0x2000, 0x200B)), "\u202f", "\u205f", "\u3000")
_ODD_BREAKS = ("\x85", "\u2028", "\u2029")
_COMMENT = re.compile(r"\([^()]*\)")  # an RFC 822 comment (unnested) in a structured field
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


@quick_init
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
    # Whether the subject or any text of the message mentions the person (see
    # `Identity.mentioned_in`); None when not checked or not fully readable.
    mentions_you: bool | None = None
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


def _close_runaway_raw_text(source: str) -> str:
    """End each <style>/<title> before the first tag inside it.

    CSS and titles never contain tags, so a tag there means the end tag is
    missing; an HTML5 parser would take the rest of the document for CSS (the
    bug where a name after an unclosed <style> went unseen). Cheap: only the
    characters between such an element's start and its first `<` are read.
    """
    out: list[str] = []
    copied = 0
    search_from = 0
    while True:
        start = _RAW_TEXT_OPEN.search(source, search_from)
        if start is None:
            break
        tag = start[1].lower()
        first = _TAG_LIKE.search(source, start.end())
        if first is None:
            break  # raw text to the end, e.g. a cut-off message: nothing to recover
        at = first.start()
        if source[at : at + 2 + len(tag)].lower() == f"</{tag}":
            search_from = at + 2
            continue
        out += (source[copied:at], f"</{tag}>")
        copied = search_from = at
    if not out:
        return source
    out.append(source[copied:])
    return "".join(out)


def html_to_text(html_text: str) -> str:
    """Readable text from an HTML body: what the page shows, with block
    elements as line breaks and entities unescaped; scripts, styles, the head
    and comments dropped.

    Source line breaks mean nothing in HTML, so they become spaces. A style or
    title left open is closed before the next tag, so a broken page cannot
    hide the body (and a name in it) from the safety check.
    """
    return _tidy(_render_html(html_text))


def _render_html(html_text: str) -> str:
    """`html_to_text` before whitespace is tidied: what the mention check reads
    (tidying a long text costs as much as reading it)."""
    page = _html_page(html_text)
    return _render_page(page) if page is not None else ""


def _html_page(html_text: str) -> LexborHTMLParser | None:
    """The page parsed, without what it does not show; None when it is empty."""
    if not html_text:
        return None
    source = html_text
    if _RAW_TEXT_OPEN.search(source):
        source = _close_runaway_raw_text(source)
    tree = LexborHTMLParser(source)
    tree.strip_tags(_NOT_SHOWN)
    return tree if tree.root is not None else None


def _page_words(page: LexborHTMLParser) -> str:
    """The page's text without the line breaks `_render_page` adds: its text
    nodes joined (cheap: no node is added)."""
    root = page.root
    return root.text(separator="") if root is not None else ""


def _render_page(page: LexborHTMLParser) -> str:
    root = page.root
    if root is None:
        return ""
    # One walk over the elements (a CSS query per kind costs more: each
    # selector is compiled anew).
    for node in root.traverse():
        tag = node.tag
        if tag in _BLOCK_ELEMENTS:
            node.insert_before(_BREAK)
            node.insert_after(_BREAK)
        elif tag in _BREAK_ELEMENTS:
            node.insert_after(_BREAK)
        elif tag in _CELL_ELEMENTS:
            node.insert_before(" ")
    text = root.text(separator="")
    for char in "\r\n\t\x0c":  # source line breaks are just spaces in HTML
        if char in text:
            text = text.replace(char, " ")
    return text.replace(_BREAK, "\n")


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
    """Header fields of one entity, found in the raw bytes and decoded on demand.

    The fields are found in the head read as Latin-1 (one character per byte,
    so the field regex sees what it would in the bytes): an all-ASCII head,
    nearly every one, is then already text, and a value needs no decoding of
    its own (~3 us less per message than decoding each value's bytes). A
    value of a head with 8-bit bytes goes back to its bytes for
    `_field_text`'s UTF-8 or Windows-1252."""

    __slots__ = ("ascii", "fields")

    def __init__(self, head: bytes) -> None:
        fields: dict[str, list[str]] = {}
        self.ascii = head.isascii()
        for name, value in _FIELD.findall(head.decode("latin-1")):
            key = name.lower()
            if key in fields:
                fields[key].append(value)
            else:
                fields[key] = [value]
        self.fields = fields

    def _text(self, value: str) -> str:
        if not self.ascii:
            return _field_text(value.encode("latin-1"))
        text = value.strip(_HEADER_SPACE)
        if "\n" in text or "\r" in text:
            text = value.replace("\r", "").replace("\n", "").strip(_HEADER_SPACE)
        return text

    def raw(self, name: str) -> str | None:
        values = self.fields.get(name)
        return self._text(values[0]) if values else None

    def joined(self, name: str) -> str | None:
        values = self.fields.get(name)
        if not values:
            return None
        return ", ".join(self._text(v) for v in values)

    def text(self, name: str, problems: list[str]) -> str | None:
        value = self.raw(name)
        if not value:
            return None
        return decode_header_text(value, problems=problems) or None


# What `bytes.strip()` strips: the ASCII whitespace (`str.strip()` strips more).
_HEADER_SPACE = " \t\n\r\x0b\x0c"


def _field_text(value: bytes) -> str:
    """Unfolded field value; 8-bit header bytes are UTF-8 or else Windows-1252."""
    text = value.strip()
    # Line breaks inside the value are dropped (around it, strip drops them).
    if b"\n" in text or b"\r" in text:
        text = value.replace(b"\r", b"").replace(b"\n", b"").strip()
    if text.isascii():
        return text.decode("ascii")
    try:
        return text.decode("utf-8")
    except UnicodeDecodeError:
        return text.decode("cp1252", "replace")


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


# Header values recur from message to message: a mailbox comes mostly from a
# few dozen senders to the same recipients, and its parts say `text/plain;
# charset="utf-8"` over and over (the bench mailbox: 51 distinct From values,
# 33 To and ~400 Content-Type in 4,000 messages). What is worked out from such
# a value alone is kept, per parse process, for the 1,024 most recent values
# of each kind (a few MB at most); long values (rare, and a hostile header
# could be megabytes) are never kept.
_CACHE_ENTRIES = 1024
_CACHED_VALUE_CHARS = 1000


def _content_type(value: str | None, default: str) -> tuple[str, Mapping[str, str]]:
    """Media type (lower-cased) and parameters. The parameters may be a cached
    dict shared with other calls, hence read-only (`Mapping`)."""
    if not value:
        return default, {}
    if len(value) <= _CACHED_VALUE_CHARS:
        return _cached_content_type(value, default)
    return _read_content_type(value, default)


def _read_content_type(value: str, default: str) -> tuple[str, dict[str, str]]:
    kind, _, rest = value.partition(";")
    kind = "".join(kind.split()).lower()
    if kind.count("/") != 1 or kind.startswith("/") or kind.endswith("/"):
        kind = "text/plain"  # RFC 2045: an invalid Content-Type means text/plain
    return kind, _params(";" + rest)


_cached_content_type = lru_cache(maxsize=_CACHE_ENTRIES)(_read_content_type)


def _params(text: str) -> dict[str, str]:
    """Content-Type / Content-Disposition parameters, names lower-cased.

    RFC 2231 is decoded: `name*=charset'lang'%XX..` and continuations
    `name*0*=`, `name*1=` .. joined in order and decoded from their charset.
    An extended value wins over a plain one of the same name (senders add the
    plain one as an ASCII fallback).
    """
    params: dict[str, str] = {}
    pieces: dict[str, dict[int, tuple[str, bool]]] = {}
    for name, value in _PARAM.findall(text):
        value = value.strip()
        quoted = value.startswith('"')
        if quoted:
            value = value[1:-1] if len(value) > 1 and value.endswith('"') else value[1:]
            value = value.replace('\\"', '"').replace("\\\\", "\\")
        key = name.lower()
        if "*" not in key:
            params.setdefault(key, value)
            continue
        base, _, rest = key.partition("*")
        extended = rest.endswith("*") or rest == ""
        index = rest.rstrip("*")
        if not base or (index and not index.isdigit()):
            continue
        pieces.setdefault(base, {}).setdefault(int(index or 0), (value, extended and not quoted))
    for base, numbered in pieces.items():
        params[base] = _rfc2231_value([numbered[i] for i in sorted(numbered)])
    return params


def _rfc2231_value(pieces: list[tuple[str, bool]]) -> str:
    """Join RFC 2231 pieces (value, percent-encoded?) and decode their charset."""
    charset: str | None = None
    data = bytearray()
    for n, (value, encoded) in enumerate(pieces):
        if n == 0 and encoded and value.count("'") >= 2:
            charset, _lang, value = value.split("'", 2)
        if encoded:
            data += unquote_to_bytes(value)
        else:
            data += value.encode("utf-8", "replace")
    text, _problem = decode_text_bytes(bytes(data), charset or None)
    return text


# The Date header as nearly every mailer writes it (RFC 5322 3.3, numeric
# zone), read by one regex; anything else goes to the standard library.
_MONTH_NAMES = ("Jan", "Feb", "Mar", "Apr", "May", "Jun")
_MONTH_NAMES += ("Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_MONTHS = {name: f"{number:02d}" for number, name in enumerate(_MONTH_NAMES, 1)}
_RFC5322_DATE = re.compile(
    r"(?:(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), )?(\d{1,2}) "
    rf"({'|'.join(_MONTH_NAMES)}) (\d{{4}}) "
    r"(\d\d):(\d\d):(\d\d) ([+-])(\d\d)(\d\d)(?=\s|\Z)",
    re.ASCII,
)


def _fast_date(value: str) -> datetime | None:
    """`parsedate_to_datetime(value)` (UTC when the zone is -0000) for the common
    form, ~10x faster; None when the value is not in it or is not a real date,
    so the standard library decides (and words the problem) exactly as before.
    The fields are handed to `datetime.fromisoformat` (C; ~1.5 us less than
    converting each field in Python). tests/unit/test_mime_fast_paths.py
    checks the two agree."""
    m = _RFC5322_DATE.match(value)
    if m is None:
        return None
    day, month, year, hour, minute, second, sign, zone_h, zone_m = m.groups()
    if year.startswith("00"):  # the standard library reads years below 100 as 19xx/20xx
        return None
    try:
        return datetime.fromisoformat(
            f"{year}-{_MONTHS[month]}-{day:0>2}T{hour}:{minute}:{second}{sign}{zone_h}:{zone_m}"
        )
    except ValueError:  # no such day, hour, second or zone
        return None


def _date(value: str | None, problems: list[str]) -> datetime | None:
    if not value or not value.strip():
        return None
    fast = _fast_date(value)
    if fast is not None:
        return fast
    try:
        parsed = parsedate_to_datetime(value)
    except Exception:  # ValueError, OverflowError, and whatever odd input finds next
        problems.append(f"unparseable Date header {value[:60]!r}")
        return None
    if parsed is None:  # pragma: no cover - older Pythons returned None
        problems.append(f"unparseable Date header {value[:60]!r}")
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


class _AddressField:
    """What the mirror keeps of an address header (From, To, Cc, Reply-To):
    its mailboxes as `parse_address_list` gives them, the addresses ready for
    Postgres, the decoded text for display, and the problems met reading it."""

    __slots__ = ("addrs", "display", "mailboxes", "problems")

    def __init__(self, value: str) -> None:
        problems: list[str] = []
        self.mailboxes = tuple(parse_address_list(value, problems=problems))
        self.addrs = tuple(_pg_text(addr) for _, addr in self.mailboxes)
        self.display = decode_header_text(value)
        self.problems = tuple(problems)


_NO_ADDRESSES = _AddressField("")
_cached_address_field = lru_cache(maxsize=_CACHE_ENTRIES)(_AddressField)


def _address_field(value: str | None, problems: list[str]) -> _AddressField:
    """The header's `_AddressField` (cached for recurring values); its
    problems are added to `problems`."""
    if not value:
        return _NO_ADDRESSES
    field = (
        _cached_address_field(value) if len(value) <= _CACHED_VALUE_CHARS else _AddressField(value)
    )
    if field.problems:
        problems += field.problems
    return field


# ------------------------------------------------------------------------- bodies


@dataclass(slots=True)
class _Leaf:
    kind: str
    charset: str | None
    encoding: str
    body: bytes
    text: str | None = None  # decoded once, for the excerpt and the mention check
    html_text: str | None = None  # the whole HTML rendered (untidied), once needed
    unreadable: bool = False


@dataclass(slots=True)
class _Walk:
    """What a walk over the MIME tree found; bodies are decoded later, and only
    as many as the excerpt (or the mention check) needs."""

    plain: list[_Leaf]
    rich: list[_Leaf]
    calendar: list[_Leaf]
    # Text that is not the message's own body but still "the message" for the
    # mention check: text attachments, other text/* parts, forwarded messages.
    extra: list[_Leaf] = field(default_factory=list)
    # Header-ish text of parts: attachment names, forwarded messages' headers.
    names: list[str] = field(default_factory=list)
    attachments: bool = False
    truncated: bool = False
    skipped: bool = False  # parts left unread (too many, too deep)
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
    own_body: bool = True,
) -> None:
    """Sort one entity's leaves into the walk. `own_body` is False inside a
    forwarded message: its text is read for mentions, never for the excerpt."""
    walk.parts += 1
    kind, params = _content_type(headers.raw("content-type"), default)
    if walk.parts > MAX_PARTS or depth > MAX_DEPTH:
        walk.skipped = True
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
            if (
                not parts and "(" in boundary
            ):  # `boundary=XYZ (mime)`: the comment is not part of it
                bare = _COMMENT.sub(" ", boundary).strip()
                if bare:
                    parts, closed = _split_multipart(body, bare.encode("utf-8", "replace"))
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
                        own_body=own_body,
                    )
                return
    if kind in _SIGNATURES:  # S/MIME and PGP plumbing, not something the person attached
        return
    disposition, _, rest = (headers.raw("content-disposition") or "").partition(";")
    disposition = disposition.strip().lower()
    filename = _params(";" + rest).get("filename") if rest else None
    if filename or params.get("name"):
        walk.names.append(decode_header_text(filename or params.get("name")))
    encoding = _transfer_encoding(headers.raw("content-transfer-encoding"))
    if kind in ("message/rfc822", "message/global", "message/news"):
        if disposition == "attachment" or not related:
            walk.attachments = True
        _walk_forwarded(_Leaf(kind, None, encoding, body), walk, depth)
        return
    if not kind.startswith("text/"):
        # Images inside multipart/related are the HTML's pictures, not attachments.
        if disposition == "attachment" or (not related and kind not in _REPORTS):
            walk.attachments = True
        if kind in _REPORTS:  # a bounce's per-recipient fields: plain text
            walk.extra.append(_Leaf("text/plain", params.get("charset"), encoding, body))
        return
    leaf = _Leaf(kind, params.get("charset"), encoding, body)
    if disposition == "attachment" or (
        disposition != "inline" and ("name" in params or filename is not None)
    ):
        walk.attachments = True  # e.g. Apple Mail's attached .txt
        walk.extra.append(leaf)
        return
    if not own_body:
        walk.extra.append(leaf)
    elif kind == "text/plain":
        walk.plain.append(leaf)
    elif kind == "text/html":
        walk.rich.append(leaf)
    elif kind == "text/calendar":
        walk.calendar.append(leaf)
    else:
        walk.extra.append(leaf)


def _walk_forwarded(leaf: _Leaf, walk: _Walk, depth: int) -> None:
    """A message inside the message (a forward, a digest entry): its headers and
    every text part count as the outer message's text. Its own oddities are not
    the outer message's problems, so they are not reported."""
    data = leaf.body
    if leaf.encoding == "base64":  # not allowed for message/rfc822, but seen
        data = decode_base64(data) or b""
    elif leaf.encoding == "quoted-printable":
        data = _decode_qp(data)
    scratch: list[str] = []
    inner_headers, inner_body = _split_entity(data, scratch)
    for name in ("subject", "from", "to", "cc", "reply-to"):
        value = inner_headers.joined(name)
        if value:
            walk.names.append(decode_header_text(value))
    _walk(inner_headers, inner_body, walk, scratch, depth=depth + 1, own_body=False)


# RFC 2045 6.7: a decoder deletes the white space transport added at line
# ends, so "Al= " + CRLF + "ex" is a soft break ("Alex"); binascii keeps it a
# literal "=" followed by a break.
_PADDED_SOFT_BREAK = re.compile(rb"=[ \t]+(?=\r?\n)")


def _decode_qp(data: bytes) -> bytes:
    if b"= " in data or b"=\t" in data:
        data = _PADDED_SOFT_BREAK.sub(b"=", data)
    return binascii.a2b_qp(data)


def _transfer_encoding(value: str | None) -> str:
    """`base64`, `quoted-printable`, ...: lower-cased, without the comments
    RFC 2045 allows around it (`base64 (standard)`) or quotes some mailers add."""
    if not value:
        return ""
    if "(" in value:
        value = _COMMENT.sub(" ", value)
    return value.strip().strip('"').strip().lower()


def _leaf_text(leaf: _Leaf, problems: list[str]) -> str:
    if leaf.text is not None:
        return leaf.text
    data = leaf.body
    if leaf.encoding == "base64":
        decoded = decode_base64(data)
        if decoded is None:
            problems.append("undecodable base64 body")
            leaf.unreadable = True
            leaf.text = ""
            return ""
        data = decoded
    elif leaf.encoding == "quoted-printable":
        data = _decode_qp(data)
    text, problem = decode_text_bytes(data, leaf.charset)
    if problem:
        problems.append(f"body: {problem}")
    leaf.text = text
    return text


def _leaf_html_text(leaf: _Leaf, problems: list[str]) -> str:
    if leaf.html_text is None:
        leaf.html_text = _render_html(_leaf_text(leaf, problems))
    return leaf.html_text


def _excerpt(walk: _Walk, excerpt_chars: int, problems: list[str], *, whole: bool) -> str:
    """text/plain if it says anything, else HTML as text, else the invitation.
    `whole`: the HTML is converted in full anyway (for the mention check)."""
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
            if whole:
                text = _prefix_text(_leaf_html_text(leaf, problems), _tidy, limit)
            else:
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


def _unfold_ics(ics: str) -> str:
    return ics.replace("\r\n ", "").replace("\r\n\t", "").replace("\n ", "").replace("\n\t", "")


def _leaf_rendered_for(identity: Identity, leaf: _Leaf, problems: list[str]) -> str:
    """`_leaf_html_text` as far as the mention check needs it: "" when the
    page's words cannot mention the person however lines break them.

    Rendering adds only line breaks and spaces between the page's text nodes,
    and every literal a match starts with holds none, so one missing from
    the nodes joined is missing from the rendered text too
    (`Identity.could_be_mentioned_in`). Adding the breaks is then skipped: it
    is ~40% of a render (a text node per block element), and most pages
    rendered only for the check (their text/plain alternative gave the
    excerpt) do not name the person. tests/unit/test_mention_fast_paths.py compares
    the verdicts with full renders."""
    if leaf.html_text is not None:
        return leaf.html_text
    page = _html_page(_leaf_text(leaf, problems))
    if page is None:
        leaf.html_text = ""
    elif not identity.could_be_mentioned_in(_page_words(page)):
        return ""
    else:
        leaf.html_text = _render_page(page)
    return leaf.html_text


def _mention_texts(
    identity: Identity, subject: str, walk: _Walk, problems: list[str]
) -> Iterator[str]:
    """Everything the message says. HTML is read twice:
    as the text it renders to, and as unescaped source, which also holds what a
    parser hides (comments, hidden or swallowed elements, attribute values);
    reading too much errs towards "mentions you", the safe side."""
    yield subject
    for leaf in walk.plain:
        yield _leaf_text(leaf, problems)
    for leaf in walk.rich:
        yield _leaf_rendered_for(identity, leaf, problems)
        yield html.unescape(_leaf_text(leaf, problems))
    for leaf in walk.calendar:
        yield _unfold_ics(_leaf_text(leaf, problems))
    yield from walk.names
    for leaf in walk.extra:
        text = _leaf_text(leaf, problems)
        if leaf.kind == "text/html":
            yield _leaf_rendered_for(identity, leaf, problems)
            yield html.unescape(text)
        elif leaf.kind == "text/calendar":
            yield _unfold_ics(text)
        else:
            yield text


def _mentions(identity: Identity, subject: str, walk: _Walk) -> bool | None:
    """True if anything the message holds mentions the person; None when part of
    it could not be read (so "no" cannot be said), else False."""
    scratch: list[str] = []  # decoding trouble here is not the excerpt's problem
    # Text by text, not joined: an all-ASCII text takes the fast path, and
    # one non-ASCII character must not send all the others down the slow one.
    if identity.mentioned_in_any(_mention_texts(identity, subject, walk, scratch)):
        return True
    leaves = (*walk.plain, *walk.rich, *walk.calendar, *walk.extra)
    if walk.skipped or any(leaf.unreadable for leaf in leaves):
        return None
    return False


# ------------------------------------------------------------------------- public


def _pg_optional(value: str | None) -> str | None:
    if not value:
        return None
    return value if value.isascii() and "\x00" not in value else _pg_text(value)


def parse_message(
    raw: bytes, *, excerpt_chars: int = 2000, identity: Identity | None = None
) -> ParsedMessage:
    """The mirror's columns for one fetched message; never raises.

    With an `identity`, `mentions_you` says whether the subject or any text the
    message holds mentions the person (None: not checked, or not readable)."""
    problems: list[str] = []
    try:
        data = raw if isinstance(raw, bytes) else bytes(raw or b"")
        return _parse(data, excerpt_chars, problems, identity)
    except Exception as exc:  # a bug here must cost one message's columns, not a sync
        problems.append(f"could not parse: {type(exc).__name__}: {exc}"[:200])
        return ParsedMessage(problems=tuple(dict.fromkeys(_pg_text(p) for p in problems)))


def _parse(
    raw: bytes, excerpt_chars: int, problems: list[str], identity: Identity | None
) -> ParsedMessage:
    if b"\n" not in raw and b"\r" in raw:  # old Mac line ends: else it is one long From line
        raw = raw.replace(b"\r", b"\n")
    headers, body = _split_entity(raw, problems)
    sender = _address_field(headers.raw("from"), problems)
    to = _address_field(headers.joined("to"), problems)
    cc = _address_field(headers.joined("cc"), problems)
    reply_to = _address_field(headers.raw("reply-to"), []).mailboxes
    if sender.mailboxes:
        from_addr, from_name = sender.mailboxes[0][1], sender.mailboxes[0][0] or None
    else:
        from_addr, from_name = None, sender.display or None
    references = tuple(
        dict.fromkeys(
            ref.strip() for ref in _MSGID.findall(headers.raw("references") or "") if ref.strip()
        )
    )
    walk = _Walk([], [], [])
    _walk(headers, body, walk, problems)
    excerpt = _excerpt(walk, excerpt_chars, problems, whole=identity is not None)
    subject = decode_header_text(headers.raw("subject"), problems=problems)
    mentions = None
    if identity is not None:
        raw_subject = headers.raw("subject") or ""
        # Also the field as sent: "Hi=?utf-8?Q?Alex?=" decodes to "HiAlex",
        # where the name is no longer a word of its own.
        said = f"{subject}\n{raw_subject}" if "=?" in raw_subject else subject
        mentions = _mentions(identity, said, walk)
    precedence = headers.text("precedence", problems)
    auto_submitted = headers.text("auto-submitted", problems)
    opt = _pg_optional
    return ParsedMessage(
        message_id=opt(normalise_message_id(headers.raw("message-id"))),
        in_reply_to=opt(normalise_message_id(headers.raw("in-reply-to"))),
        references=tuple(_pg_text(r) for r in references),
        from_addr=opt(from_addr),
        from_name=opt(from_name),
        to_addrs=to.addrs,
        cc_addrs=cc.addrs,
        to_display=_pg_text(to.display),
        cc_display=_pg_text(cc.display),
        reply_to=opt(reply_to[0][1] if reply_to else None),
        subject=_pg_text(subject),
        date=_date(headers.raw("date"), problems),
        body_excerpt=_pg_text(excerpt),
        list_unsubscribe=opt(headers.text("list-unsubscribe", problems)),
        list_id=opt(headers.text("list-id", problems)),
        precedence=opt(precedence.lower() if precedence else None),
        auto_submitted=opt(auto_submitted.lower() if auto_submitted else None),
        has_attachments=walk.attachments,
        mentions_you=mentions,
        problems=tuple(dict.fromkeys(_pg_text(p) for p in problems)),
    )
