"""Header decoding that never raises: RFC 2047 words in any charset, with
unknown charsets replaced rather than fatal."""

from __future__ import annotations

import codecs
import re
from email.header import decode_header

_WS = re.compile(r"\s+")


def _charset(name: str | None) -> str:
    if not name:
        return "utf-8"
    name = name.strip().lower()
    if name in ("unknown-8bit", "x-unknown", "unknown"):
        return "utf-8"
    try:
        codecs.lookup(name)
    except LookupError:
        return ""
    return name


def decode_bytes(raw: bytes, charset: str | None) -> tuple[str, bool]:
    """Decode with the declared charset; fall back to UTF-8 then Latin-1. Returns (text, clean)."""
    cs = _charset(charset)
    for candidate in ([cs] if cs else []) + ["utf-8"]:
        try:
            return raw.decode(candidate), bool(cs) and candidate == cs
        except (UnicodeDecodeError, LookupError):
            continue
    return raw.decode("windows-1252", "replace"), False


def decode_header_text(value: object) -> str:
    """RFC 2047-decoded, whitespace-folded text of a header value."""
    if value is None:
        return ""
    text = str(value)
    if "=?" not in text:
        return _WS.sub(" ", text).strip().replace("\x00", "")
    try:
        parts = decode_header(text)
    except Exception:  # malformed encoded words: show them raw
        return _WS.sub(" ", text).strip().replace("\x00", "")
    out = []
    for chunk, charset in parts:
        if isinstance(chunk, bytes):
            out.append(decode_bytes(chunk, charset)[0])
        else:
            out.append(chunk)
    return _WS.sub(" ", "".join(out)).strip().replace("\x00", "")
