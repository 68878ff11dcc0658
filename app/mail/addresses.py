"""Address parsing that survives real headers: display names with commas,
quoting, groups, comments, RFC 2047 names and odd case."""

from __future__ import annotations

from email.utils import getaddresses

from app.mail.headers import decode_header_text


def normalize_email(addr: str) -> str:
    return addr.strip().strip("<>").strip().lower()


def parse_address_list(value: str | None) -> list[tuple[str, str]]:
    """(decoded display name, lower-cased email) for every mailbox in the header."""
    if not value:
        return []
    out: list[tuple[str, str]] = []
    seen: set[str] = set()
    # getaddresses understands groups ("team: a@x, b@y;") and quoted commas.
    for name, addr in getaddresses([str(value).replace("\r", " ").replace("\n", " ")]):
        email = normalize_email(addr)
        if "@" not in email or " " in email or email in seen:
            continue
        seen.add(email)
        out.append((decode_header_text(name).strip(), email))
    return out
