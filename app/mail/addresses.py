"""Header text and address lists, decoded the way real mail needs.

Address parsing is safety-critical: `/clean` must never propose a message
whose To or CC holds the person, so a display name with a comma, a group, a
comment or an RFC 2047 name must not hide an address. The parser below is
deliberately forgiving (Outlook-style `;` separators, stray angle addresses,
`mailto:` inside brackets) and never raises. An address written with a
quoted local part, comments or folding whitespace inside it (`"a.b"@x`,
`a(c)@x`, `a . b @ x`), which RFC 5322 allows and IMAP servers read, is read
as the address it is.

Charset and RFC 2047 decoding live here rather than in `mime.py` because
address parsing needs them and `mime.py` needs address parsing; `mime.py`
re-exports `decode_header_text`.
"""

from __future__ import annotations

import binascii
import codecs
import re
from collections.abc import Sequence
from collections.abc import Set as AbstractSet
from functools import lru_cache

# Labels that mail uses but Python does not know, or knows as a narrower
# charset than senders actually use (mail labelled Latin-1 or GB2312 is
# routinely written in the Windows/GBK supersets).
_CHARSET_ALIASES = {
    "us-ascii": "utf-8",
    "ascii": "utf-8",
    "iso-8859-1": "cp1252",
    "iso8859-1": "cp1252",
    "latin1": "cp1252",
    "latin-1": "cp1252",
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "ks_c_5601-1987": "cp949",
    "euc-kr": "cp949",
    "shift_jis": "cp932",
    "x-sjis": "cp932",
    "iso-8859-8-i": "iso-8859-8",
    "x-mac-roman": "mac-roman",
    "utf8": "utf-8",
    # Microsoft's names for UTF-16 (browsers and Thunderbird take them too).
    "unicode": "utf-16",
    "ucs-2": "utf-16",
    "ucs2": "utf-16",
    "unicodefffe": "utf-16-be",
}
# Codecs that decode to lone surrogates or are not charsets at all; their
# output could not be stored in Postgres, so they count as unknown.
_REFUSED_CODECS = frozenset(
    {"undefined", "idna", "punycode", "unicode-escape", "raw-unicode-escape", "mbcs", "oem"}
)
# Charsets whose text is ASCII bytes that do not mean ASCII (ISO-2022-JP is
# common in Japanese mail), so the all-ASCII shortcut must not apply to them.
_SEVEN_BIT_CODECS = frozenset(
    {"utf-7", "hz", "iso2022_kr", "utf-16", "utf-16-le", "utf-16-be", "utf-32"}
    | {"utf-32-le", "utf-32-be", "iso2022_jp", "iso2022_jp_1", "iso2022_jp_2"}
    | {"iso2022_jp_2004", "iso2022_jp_3", "iso2022_jp_ext"}
)
_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([bBqQ])\?([^?]*)\?=")
_NOT_BASE64 = re.compile(rb"[^A-Za-z0-9+/]")

_ADDRESS_TOKEN = re.compile(
    r"""
    (?P<quoted>"(?:[^"\\]|\\.)*")
    |(?P<comment>\((?:[^()\\]|\\.)*\))
    |(?P<angle><[^<>]*>?)
    |(?P<special>[,;:])
    |(?P<word>[^"(<,;:\s]+)
    |["(]  # unbalanced: skipped, so it cannot hide the addresses after it
    |\s+
    """,
    re.VERBOSE | re.DOTALL,
)
_QUOTED_PAIR = re.compile(r"\\(.)", re.DOTALL)
_SPACE = re.compile(r"\s")


@lru_cache(maxsize=256)
def _codec(label: str) -> str | None:
    """The Python codec for a MIME charset label, or None when it is unusable."""
    name = label.strip().strip("\"'").lower()
    name = _CHARSET_ALIASES.get(name, name)
    try:
        codec = codecs.lookup(name).name
    except (LookupError, ValueError, TypeError):
        return None
    return None if codec in _REFUSED_CODECS else codec


def decode_text_bytes(data: bytes, charset: str | None) -> tuple[str, str | None]:
    """Decode bytes that claim `charset`; never raises.

    Returns (text, problem). A missing or US-ASCII label is read as UTF-8 and
    then Windows-1252, since that is what unlabelled 8-bit mail nearly always
    is; a label that is wrong for the bytes falls back the same way; an
    unknown label gives UTF-8 with replacement characters.
    """
    label = (charset or "").strip()
    codec = _codec(label) if label else "utf-8"
    if data.isascii() and codec not in _SEVEN_BIT_CODECS:
        return data.decode("ascii"), None
    shown = label[:40]
    if codec is None:
        text = _strict(data, "utf-8")
        if text is None:
            text = data.decode("utf-8", "replace")
        return text, f"unknown charset {shown!r}; decoded best effort"
    text = _strict(data, codec)
    if text is not None:
        return text, None
    if codec != "utf-8":
        text = _strict(data, "utf-8")
        if text is not None:
            return text, f"text is not {shown!r} as declared; decoded as UTF-8"
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):  # a UTF-16 byte order mark, whatever the label
        text = _strict(data, "utf-16")
        if text is not None:
            if label:
                return text, f"text is not {shown!r} as declared; decoded as UTF-16"
            return text, "text without a charset; decoded as UTF-16 (byte order mark)"
    text = data.decode("cp1252", "replace")
    if label:
        return text, f"text is not {shown!r} as declared; decoded as Windows-1252"
    return text, "8-bit text without a charset; decoded as Windows-1252"


def _strict(data: bytes, codec: str) -> str | None:
    """Strict decode, except that a character cut off at the very end is dropped.

    The 64 KiB partial fetch cuts bodies anywhere. The cut is only forgiven
    when the text before it already holds non-ASCII in this codec: a lone
    high byte after plain ASCII (`caf\\xe9`) is more likely Latin-1 than a cut.
    """
    try:
        return data.decode(codec)
    except UnicodeDecodeError as exc:
        if exc.end < len(data):
            return None
        head = data[: exc.start]
    except Exception:  # a codec that misbehaves on odd input must not stop a sync
        return None
    if head.isascii():
        return None
    try:
        return head.decode(codec)
    except Exception:
        return None


def decode_base64(data: bytes) -> bytes | None:
    """Base64 that survives missing padding, junk characters and truncation
    (what is left of a cut-off body is still worth reading); None if hopeless."""
    try:
        return binascii.a2b_base64(data)
    except (binascii.Error, ValueError):
        pass
    clean = _NOT_BASE64.sub(b"", data.split(b"=", 1)[0])
    clean = clean[: len(clean) - (len(clean) % 4 == 1)]
    try:
        return binascii.a2b_base64(clean + b"=" * (-len(clean) % 4))
    except (binascii.Error, ValueError):
        return None


def _word_base64(data: bytes) -> bytes | None:
    """Strict base64 for an encoded word (only missing padding forgiven): a word
    that is not base64 is better shown as written than as decoded garbage."""
    data = data.strip()
    try:
        return binascii.a2b_base64(data + b"=" * (-len(data) % 4), strict_mode=True)
    except (binascii.Error, ValueError):
        return None


def _fold(text: str) -> str:
    if "\x00" in text:
        text = text.replace("\x00", "")
    return " ".join(text.split())


def decode_header_text(value: str | None, *, problems: list[str] | None = None) -> str:
    """RFC 2047-decoded, whitespace-folded header text; never raises.

    Whitespace between adjacent encoded words is dropped (RFC 2047 6.2) and
    adjacent words in the same charset are joined before decoding, because
    some mailers split one multibyte character across two words. Unknown
    charsets give replacement characters and, if `problems` is given, a note.
    """
    if not value:
        return ""
    text = str(value)
    if "=?" not in text:
        return _fold(text)
    out: list[str] = []
    pending_charset: str | None = None
    pending = bytearray()

    def flush() -> None:
        nonlocal pending_charset
        if pending_charset is not None:
            decoded, problem = decode_text_bytes(bytes(pending), pending_charset)
            out.append(decoded)
            if problem and problems is not None:
                problems.append(f"header: {problem}")
        pending_charset = None
        pending.clear()

    pos = 0
    for match in _ENCODED_WORD.finditer(text):
        between = text[pos : match.start()]
        if between and not (pending_charset is not None and between.isspace()):
            flush()
            out.append(between)
        charset = match[1].split("*", 1)[0]
        encoded = match[3].encode("utf-8", "surrogateescape")
        if match[2] in "qQ":
            raw: bytes | None = binascii.a2b_qp(encoded, header=True)
        else:
            raw = _word_base64(encoded)
        if raw is None:
            flush()
            out.append(match[0])
            if problems is not None:
                problems.append("header: undecodable base64 encoded word")
        else:
            if pending_charset is not None and pending_charset.lower() != charset.lower():
                flush()
            pending_charset = charset
            pending.extend(raw)
        pos = match.end()
    flush()
    out.append(text[pos:])
    return _fold("".join(out))


def normalize_email(addr: str) -> str:
    """Compare addresses case-insensitively and without brackets; nothing cleverer,
    because dot or plus folding is provider-specific and could merge two people."""
    return addr.strip().strip("<>").strip().lower()


def _address(candidate: str) -> str | None:
    addr = normalize_email(candidate)
    if addr.startswith("mailto:"):
        addr = addr[7:].split("?", 1)[0]
    if addr.startswith("@") and ":" in addr:  # obsolete source route: <@relay:user@host>
        addr = addr.split(":", 1)[1]
    local, at, domain = addr.rpartition("@")
    if not at or not local or not domain or _SPACE.search(addr):
        return None
    return addr


def _display_name(words: list[str], comments: list[str], problems: list[str] | None) -> str:
    return _unquoted(
        decode_header_text(" ".join(words) if words else " ".join(comments), problems=problems)
    )


def _unquoted(name: str) -> str:
    if len(name) >= 2 and name[0] == name[-1] and name[0] in "\"'":
        name = name[1:-1].strip()
    return name


def parse_address_list(
    value: str | None, *, problems: list[str] | None = None
) -> list[tuple[str, str]]:
    """(decoded display name, lower-cased email) for every mailbox in the header.

    Groups are expanded ("team: a@x, b@y;") and empty ones ("undisclosed-
    recipients:;") give nothing; duplicates keep their first position (and the
    first non-empty name); entries without a usable address are skipped.
    Tokenising happens before RFC 2047 decoding so a decoded comma or quote
    cannot split a name. An address that only shows inside a display name, a
    comment or an encoded word still counts (see `_hidden_mailboxes`).
    """
    if not value:
        return []
    text = str(value)
    mailboxes = _simple_mailboxes(text)
    if mailboxes is None:
        mailboxes = _tokenized_mailboxes(text)
    found: dict[str, str] = {}
    for words, comments, addr in mailboxes:
        if _may_hide(" ".join(words)) or _may_hide(" ".join(comments)):
            for name, hidden in _hidden_mailboxes(words, comments, addr, problems):
                if hidden not in found or (name and not found[hidden]):
                    found[hidden] = name
        elif addr not in found or (not found[addr] and (words or comments)):
            name = _display_name(words, comments, problems)
            if addr not in found or name:
                found[addr] = name
    return [(name, addr) for addr, name in found.items()]


def _may_hide(text: str) -> bool:
    """An "@" or an encoded word (which may decode to one) in a name or comment."""
    return "@" in text or "=?" in text


# An ASCII dot-atom address, found inside non-ASCII text it was glued to.
_ASCII_ADDRESS = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@[A-Za-z0-9.-]+")
# What counts as `local@domain` inside free text: the widest run of characters
# that are not delimiters; a quote after the domain ends it (`'bob@x.example'`).
_HIDDEN_ADDRESS = re.compile(r"""[^<>\s"(),;:\\@\[\]]+@[^<>\s"'`(),;:\\@\[\]]+""")


def _hidden_mailboxes(
    words: list[str], comments: list[str], addr: str, problems: list[str] | None
) -> list[tuple[str, str]]:
    """The mailbox itself plus every address its name or comments hold, in order.

    Python's SMTP policy folds long lists by RFC 2047-encoding whole runs of
    the header, separators and `<addr>` included (`=?utf-8?q?mple=3E=2C?=`),
    so a recipient can exist only inside an encoded word. Where the decoded
    name has such a recipient followed by a separator, the part up to the
    last separator is read as the mailboxes it was, before this one. Any other
    address in the text (`"bob@x" <alice@y>`, `Alex (alex@home) <a@work>`)
    comes after this mailbox's own address, so a name cannot become the From
    address; it is kept because an extra address only makes `/clean` more
    careful, while a lost one could be the person's.
    """
    raw_name = " ".join(words)
    raw_comments = " ".join(comments)
    decoded = decode_header_text(raw_name, problems=problems) if words else ""
    decoded_comments = decode_header_text(raw_comments, problems=problems) if comments else ""
    name = decoded if words else decoded_comments
    before: list[tuple[str, str]] = []
    if "=?" in raw_name and "@" in decoded:
        cut = max(decoded.rfind(","), decoded.rfind(";"))
        if cut >= 0:
            before = [
                (_unquoted(_fold(" ".join(w) if w else " ".join(c))), a)
                for w, c, a in _tokenized_mailboxes(decoded[: cut + 1])
                if a
            ]
            if before:
                name = decoded[cut + 1 :].strip() or (decoded_comments if not words else "")
    out = [*before, (_unquoted(name), addr)] if addr else before
    text = f"{decoded} {decoded_comments}"
    if "@" not in text:
        return out
    for match in _HIDDEN_ADDRESS.finditer(text):
        candidate = match[0].rstrip(".")
        if candidate.startswith("'") and match.end() < len(match.string):
            candidate = candidate[1:] if match.string[match.end()] == "'" else candidate
        hidden = _address(candidate)
        if hidden is not None:
            out.append(("", hidden))
    # RFC 2047 drops the space between encoded words, and Python folds
    # `Jörg bob@x` exactly there (`Jörgbob@x`): every ASCII address inside counts too.
    if not text.isascii():
        for match in _ASCII_ADDRESS.finditer(text):
            hidden = _address(match[0].rstrip("."))
            if hidden is not None:
                out.append(("", hidden))
    return out


Mailbox = tuple[list[str], list[str], str]  # name words, comments, address

_ADDR_SPEC = r"[^<>\s\"(),;:\\@\[\]]+@[^<>\s\"(),;:\\@\[\]]+"
_SIMPLE_MAILBOX = re.compile(
    rf"""\s*(?:
        "(?P<quoted>[^"\\]*)"\s*<\s*(?P<quoted_addr>{_ADDR_SPEC})\s*>
        |(?P<name>[^"\\<>()\[\],;:@]*?)\s*<\s*(?P<name_addr>{_ADDR_SPEC})\s*>
        |(?P<bare>{_ADDR_SPEC})
    )\s*(?:,|\Z)""",
    re.VERBOSE,
)


def _simple_mailboxes(text: str) -> list[Mailbox] | None:
    """Most headers are plain `a@x, Name <b@y>, "Last, First" <c@z>` lists; one
    regex per mailbox reads those several times faster than the tokenizer.
    None means "not that simple": the tokenizer decides."""
    out: list[Mailbox] = []
    pos = 0
    end = len(text)
    while pos < end:
        match = _SIMPLE_MAILBOX.match(text, pos)
        if match is None:
            return None if text[pos:].strip() else out
        pos = match.end()
        quoted, quoted_addr, name, name_addr, bare = match.groups()
        addr = _address(quoted_addr or name_addr or bare)
        if addr is None:
            return None
        if quoted_addr:
            out.append(([quoted], [], addr))
        else:
            out.append(([name] if name else [], [], addr))
    return out


# A quoted local part that needs no quotes (`"alex.roy"@x` is `alex.roy@x`).
# (RFC 6532 allows non-ASCII atext too.)
_ATEXT = r'[^\s"(),.:;<>@\[\]\\\x00-\x1f\x7f]'
_DOT_ATOM = re.compile(rf"{_ATEXT}+(?:\.{_ATEXT}+)*")
_QUOTE_SPECIALS = re.compile(r'["\\]')
_ANGLE_CFWS = re.compile(r'[\s"(]')

Word = tuple[str, bool]  # (text, quoted)


def _edge(left: Word, right: Word, char: str) -> bool:
    """`char` between two words (ending an unquoted left word or starting an
    unquoted right one): they may be parts of one addr-spec."""
    return (not left[1] and left[0].endswith(char)) or (not right[1] and right[0].startswith(char))


def _ats(words: list[Word], run: list[int]) -> int:
    return sum(words[i][0].count("@") for i in run if not words[i][1])


def _addr_spec_runs(words: list[Word]) -> list[list[int]]:
    """The words grouped into what could each be one addr-spec: RFC 5322 allows
    comments and folding whitespace around the "@" and the dots of an address
    (`alex.roy (work) @ example . com`), and a quoted local part
    (`"alex.roy"@example.com`). Words meeting at an "@" are joined first, then
    runs meeting at a dot, as long as the result holds at most one "@" (so
    `a@x. b @ y` stays two)."""
    groups: list[list[int]] = []
    for i in range(len(words)):
        if i and _edge(words[i - 1], words[i], "@"):
            groups[-1].append(i)
        else:
            groups.append([i])
    runs: list[list[int]] = []
    for group in groups:
        if (
            runs
            and _edge(words[runs[-1][-1]], words[group[0]], ".")
            and _ats(words, runs[-1]) + _ats(words, group) <= 1
        ):
            runs[-1] += group
        else:
            runs.append(group)
    return runs


def _spec_address(parts: list[Word]) -> str | None:
    """The address the parts of one addr-spec spell, or None. A quoted local part
    loses its quotes when it needs none; otherwise it stays quoted."""
    local: list[str] = []
    domain: list[str] | None = None
    for text, quoted in parts:
        if quoted:
            if domain is not None:
                return None
            if _DOT_ATOM.fullmatch(text):
                local.append(text)
            else:
                local.append('"' + _QUOTE_SPECIALS.sub(r"\\\g<0>", text) + '"')
        elif domain is None:
            head, at, tail = text.partition("@")
            local.append(head)
            if at:
                domain = [tail]
        else:
            domain.append(text)
    if domain is None:
        return None
    local_part, domain_part = "".join(local), "".join(domain)
    if not local_part or not domain_part or "@" in domain_part:
        return None
    if '"' not in local_part:
        return _address(f"{local_part}@{domain_part}")
    return f"{local_part}@{domain_part}".lower()


_NOTHING_JOINED: tuple[Sequence[str], AbstractSet[int]] = ((), frozenset())


def _joined_addr_specs(words: list[Word]) -> tuple[Sequence[str], AbstractSet[int]]:
    """Addresses written across several words, and which words they used."""
    if not any(not quoted and "@" in w for w, quoted in words) or not any(
        not quoted and (w[0] in ".@" or w[-1] in ".@") for w, quoted in words
    ):
        return _NOTHING_JOINED  # the usual case (a name's words): no run can form
    joined: list[str] = []
    used: set[int] = set()
    for run in _addr_spec_runs(words):
        if len(run) > 1 and (addr := _spec_address([words[i] for i in run])) is not None:
            joined.append(addr)
            used.update(run)
    return joined, used


def _angle_addr_spec(angle: str) -> str | None:
    """The address inside `<...>` written with comments, folding whitespace or
    a quoted local part (`<alex.roy @ example.com>`, `<"a.b"@x>`), or None."""
    parts: list[Word] = []
    for match in _ADDRESS_TOKEN.finditer(angle):
        kind = match.lastgroup
        if kind == "word":
            parts.append((match[0], False))
        elif kind == "quoted":
            parts.append((_QUOTED_PAIR.sub(r"\1", match[0][1:-1]), True))
        elif kind != "comment" and not match[0].isspace():
            return None  # a separator or a stray bracket or quote: not one addr-spec
    if not parts:
        return None
    if len(parts) > 1 and len(_addr_spec_runs(parts)) > 1:
        return None
    return _spec_address(parts)


def _angle_address(angle: str) -> str | None:
    """The address inside `<...>`, also when written with comments, spaces or
    quotes; None when there is none (the caller then looks for one itself)."""
    if _ANGLE_CFWS.search(angle) and (addr := _angle_addr_spec(angle)) is not None:
        return addr
    return _address(angle)


def _angle_extras(angle: str) -> list[str]:
    """The addresses `<...>` holds word by word, besides the one it was read as
    with its comments and spaces: none is lost to that reading."""
    return [
        a for m in _HIDDEN_ADDRESS.finditer(angle) if (a := _address(m[0].rstrip("."))) is not None
    ]


def _tokenized_mailboxes(text: str) -> list[Mailbox]:
    """The general case: quoting, comments, groups and the junk real mail holds.

    Wherever a separator is missing (`a@x b@y`, `a@x Name <b@y>`, or a comma
    that Python's folding encoded as `=?utf-8?q?=2C?=`), every unquoted word
    with an @ still counts as an address: losing one could let `/clean` at the
    person's mail, while an extra one only makes it more careful.
    """
    out: list[Mailbox] = []
    words: list[tuple[str, bool]] = []  # (text, quoted)
    comments: list[str] = []
    angle: str | None = None
    in_group = False

    def finish() -> None:
        nonlocal words, comments, angle
        if not words and angle is None and not comments:
            return  # `a@x,, b@y`: nothing between the separators
        addr = None if angle is None else _angle_address(angle)
        # `"a.b"@x`, `a(c)@x`, `a . b @ x`: one address written in several words.
        joined, used = _joined_addr_specs(words) if len(words) > 1 else _NOTHING_JOINED
        names = [w for w, quoted in words if quoted or "@" not in w]
        # The joined words are no name; but a name beside `<...>`, or one that may
        # hide an address (`"bob@x"@y`, an encoded word), keeps all its words.
        if used and addr is None and not any(_may_hide(w) for w in names):
            names = [
                w
                for i, (w, quoted) in enumerate(words)
                if i not in used and (quoted or "@" not in w)
            ]
        bare = [a for w, quoted in words if not quoted and "@" in w and (a := _address(w))]
        start = len(out)
        if addr is not None:
            out.extend(([], [], a) for a in bare)  # before `<...>`: a lost separator
            out.append((names, comments, addr))
            out.extend(([], [], a) for a in joined)
            if _ANGLE_CFWS.search(angle):  # what it also holds (`<. a@x>`, `<a@x (b@y)>`)
                out.extend(([], [], a) for a in _angle_extras(angle) if a != addr)
            bare = []
        else:
            # The joined reading first (it is what RFC 5322 and the server read);
            # the words' own addresses still count.
            bare = [*joined, *bare]
        if angle is not None and addr is None:
            # `<a b@c>`: what looks like an address still counts
            bare += [a for w in angle.split() if "@" in w and (a := _address(w))]
        if bare:
            out.append((names, comments, bare[0]))
            out.extend(([], [], a) for a in bare[1:])
        elif len(out) == start and any(_may_hide(t) for t in (*names, *comments)):
            # No address of its own, but `"bob@x"` or an encoded word may hold one;
            # "" tells parse_address_list to look inside and keep only what it finds.
            out.append((names, comments, ""))
        words, comments, angle = [], [], None

    for match in _ADDRESS_TOKEN.finditer(text):
        kind = match.lastgroup
        token = match[0]
        if kind in ("word", "quoted") and angle is not None:
            finish()  # `<a@x> b@y`: a separator is missing
        if kind == "word":
            words.append((token, False))
        elif kind == "quoted":
            words.append((_QUOTED_PAIR.sub(r"\1", token[1:-1]), True))
        elif kind == "angle":
            if angle is not None:  # `Name <a@x> <b@y>`: keep both rather than lose one
                finish()
            angle = token[1:].removesuffix(">")
        elif kind == "comment":
            comments.append(token[1:-1].strip())
        elif token == ":" and not in_group and angle is None:
            in_group = True  # the words so far were the group's name,
            finish()  # which may itself hold an address
        elif token == ":":
            words.append((token, False))
        elif kind == "special":  # "," or ";" (Outlook separates with ";" too)
            finish()
            if token == ";":
                in_group = False
    finish()
    return out
