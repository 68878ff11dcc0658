"""The parse's caches of recurring header values (app/mail/mime.py) give what
reading the value afresh gives, hostile values included, however often a
value comes back and whatever came before it."""

from __future__ import annotations

from hypothesis import example, given, settings
from hypothesis import strategies as st

from app.mail import mime
from app.mail.addresses import decode_header_text, parse_address_list

ADDRESS_PIECES = [
    "a@x.example",
    "Alex Roy",
    '"Roy, Alex"',
    "<aroy@example.com>",
    "=?utf-8?q?Zo=C3=AB?=",
    "=?utf-8?b?QWxleA==?=",
    "=?x-unknown?q?a?=",
    "=?utf-8?b?!!?=",
    ", ",
    ";",
    ":",
    "(comment a@y)",
    "\x00",
    "\ud800",
    " ",
    "@",
    "<",
    '"',
]
TYPE_PIECES = [
    "text/plain",
    "multipart/alternative",
    "TEXT/HTML",
    "/",
    "; charset=utf-8",
    '; boundary="=_x"',
    "; name*0*=utf-8''%C3%A9",
    "; name*1=b",
    '; filename="a\\"b"',
    ";",
    " ",
    "=",
    '"',
]


def _fresh_address_field(value: str) -> tuple[object, ...]:
    problems: list[str] = []
    mailboxes = parse_address_list(value, problems=problems)
    return (
        tuple(mailboxes),
        tuple(mime._pg_text(addr) for _, addr in mailboxes),
        decode_header_text(value),
        tuple(problems),
    )


@settings(max_examples=1500, deadline=None)
@given(st.lists(st.sampled_from(ADDRESS_PIECES) | st.text(max_size=4), max_size=8).map("".join))
@example("")
@example("a@x.example, " * 200)  # longer than what is cached
def test_an_address_header_reads_the_same_cached_or_not(value: str) -> None:
    for _ in range(2):  # the second time from the cache
        problems: list[str] = ["before"]
        field = mime._address_field(value, problems)
        expected = _fresh_address_field(value)
        assert (field.mailboxes, field.addrs, field.display, field.problems) == expected
        assert problems == ["before", *expected[3]]


@settings(max_examples=1500, deadline=None)
@given(st.lists(st.sampled_from(TYPE_PIECES) | st.text(max_size=4), max_size=8).map("".join))
@example("")
@example("text/plain; charset=" + "x" * 2000)
def test_a_content_type_reads_the_same_cached_or_not(value: str) -> None:
    for default in ("text/plain", "message/rfc822", "text/plain"):
        assert mime._content_type(value, default) == (
            mime._read_content_type(value, default) if value else (default, {})
        )


def test_a_cached_field_is_shared_not_recomputed() -> None:
    value = "Alex Roy <aroy@example.com>, b@x.example"
    assert mime._address_field(value, []) is mime._address_field(value, [])
    assert mime._address_field("x" * 2000, []) is not mime._address_field("x" * 2000, [])
