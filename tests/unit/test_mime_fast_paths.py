"""The parse's fast paths give what the general path gives (app/mail/mime.py).
The oracle is the slow path itself: the standard library for dates, the
former code for header values and Message-IDs."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from hypothesis import example, given, settings
from hypothesis import strategies as st

from app.mail.message_ref import normalise_message_id
from app.mail.mime import _date, _fast_date, _field_text, _Headers

DAYS = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun", "mon", "Foo", ""]
MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
MONTHS += ["nov", "NOV", "Xyz"]
ZONES = ["+0000", "-0000", "+0530", "-0800", "+2359", "+2400", "-9999", "+0099", "GMT", "EST", "Z"]


def _digits(draw: st.DrawFn, low: int, high: int, widths: list[int]) -> str:
    value = draw(st.integers(low, high))
    return str(value).zfill(draw(st.sampled_from(widths)))


@st.composite
def date_headers(draw: st.DrawFn) -> str:
    day_name = draw(st.sampled_from(DAYS))
    day = _digits(draw, 0, 39, [1, 2])
    month = draw(st.sampled_from(MONTHS))
    year = _digits(draw, 0, 9999, [2, 3, 4])
    clock = ":".join(_digits(draw, 0, 61, [1, 2]) for _ in range(draw(st.sampled_from([2, 3]))))
    zone = draw(st.sampled_from(ZONES) | st.from_regex(r"[+-][0-9]{4}", fullmatch=True))
    tail = draw(st.sampled_from(["", " (UTC)", "  ", "\t(CET)", "\xa0(x)", "x"]))
    sep = draw(st.sampled_from([" ", "  ", "\t"]))
    head = f"{day_name}, " if day_name else ""
    return f"{head}{day}{sep}{month} {year} {clock} {zone}{tail}"


def _slow(value: str) -> tuple[datetime | None, list[str]]:
    """What `_date` did before its fast path."""
    try:
        parsed = parsedate_to_datetime(value)
    except Exception:
        return None, [f"unparseable Date header {value[:60]!r}"]
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)), []


@settings(max_examples=3000, deadline=None)
@given(date_headers())
@example("Tue, 17 Nov 2026 12:00:00 +0000")
@example("Tue, 17 Nov 2026 12:00:00 -0000")
@example("Tue, 17 Nov 0050 12:00:00 +0000")  # two-digit years are 19xx/20xx to the stdlib
@example("Tue, 31 Feb 2026 12:00:00 +0100")
@example("Tue, 17 Nov 2026 23:59:60 +0100")
@example("Tue, 17 Nov 2026 12:00:00 +2400")
def test_the_date_fast_path_agrees_with_the_standard_library(value: str) -> None:
    expected, expected_problems = _slow(value)
    fast = _fast_date(value)
    if fast is not None:
        assert expected is not None
        assert fast.isoformat() == expected.isoformat()
        assert fast.utcoffset() == expected.utcoffset()
    problems: list[str] = []
    got = _date(value, problems)
    assert (got.isoformat() if got else None) == (expected.isoformat() if expected else None)
    assert problems == expected_problems


def test_the_fast_path_takes_the_usual_form() -> None:
    assert _fast_date("Tue, 17 Nov 2026 12:00:00 +0100") is not None
    assert _fast_date("17 Nov 2026 12:00:00 -0000") == datetime(2026, 11, 17, 12, tzinfo=UTC)
    assert _fast_date("Tue, 17 Nov 2026 12:00:00 +0000 (UTC)") is not None


def _old_field_text(value: bytes) -> str:
    value = value.replace(b"\r", b"").replace(b"\n", b"").strip()
    if value.isascii():
        return value.decode("ascii")
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value.decode("cp1252", "replace")


FIELD_BYTES = [
    b"a",
    b"b c",
    b" ",
    b"\t",
    b"\r",
    b"\n",
    b"\r\n ",
    b"\x0b",
    b"\x0c",
    b"\xc3\xa9",
    b"\xe9",
]


@settings(max_examples=2000, deadline=None)
@given(st.lists(st.sampled_from(FIELD_BYTES) | st.binary(max_size=3), max_size=10).map(b"".join))
def test_field_values_are_unfolded_as_before(value: bytes) -> None:
    assert _field_text(value) == _old_field_text(value)


def _old_normalise_message_id(text: str) -> str | None:
    text = re.sub(r"\r?\n[ \t]+", " ", text).strip()
    if text[:11].lower() == "message-id:":
        text = text[11:].strip()
    if not text:
        return None
    match = re.search(r"<([^<>]*)>", text)
    if match:
        return match[1].strip() or None
    words = text.split()
    return (words[0].strip("<>") or None) if words else None


MSGID_PIECES = ["<a@b>", " ", "\r\n ", "\n\t", "\n", "x", "Message-ID:", "<", ">"]


@settings(max_examples=1000, deadline=None)
@given(st.lists(st.sampled_from(MSGID_PIECES), max_size=8).map("".join))
def test_message_ids_are_normalised_as_before(value: str) -> None:
    assert normalise_message_id(value) == _old_normalise_message_id(value)


_OLD_FIELD = re.compile(rb"^([!-9;-~]+)[ \t]*:(.*(?:\n[ \t].*)*)", re.MULTILINE)


def _old_headers(head: bytes) -> dict[str, list[str]]:
    """The header fields as found in the bytes, each value through `_field_text`."""
    fields: dict[str, list[str]] = {}
    for name, value in _OLD_FIELD.findall(head):
        fields.setdefault(name.lower().decode("ascii"), []).append(_field_text(value))
    return fields


HEAD_PIECES = [b"From: a@x", b"To:", b"to :", b"Subject: caf\xc3\xa9", b"Subject: caf\xe9"]
HEAD_PIECES += [b"\r\n", b"\n", b"\r\n\t", b"\n ", b" ", b"\t", b"\x0b", b"\x0c", b"\x1c", b":"]
HEAD_PIECES += [b"X-A: 1", b"x-a: 2", b"\x85", b"\xa0", b"=?utf-8?q?x?="]


@settings(max_examples=2000, deadline=None)
@given(st.lists(st.sampled_from(HEAD_PIECES) | st.binary(max_size=3), max_size=12).map(b"".join))
def test_header_fields_are_found_and_unfolded_as_in_the_bytes(head: bytes) -> None:
    headers = _Headers(head)
    expected = _old_headers(head)
    assert set(headers.fields) == set(expected)
    for name, values in expected.items():
        assert headers.raw(name) == values[0]
        assert headers.joined(name) == ", ".join(values)
