"""Addresses and identity: the inputs of the safety rule that `/clean` never
proposes mail addressed to the person or naming them. A parsing slip here is
a safety bug, so the property tests check that no address is ever lost."""

from __future__ import annotations

import base64
import unicodedata
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import formataddr

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.mail.addresses import (
    _simple_mailboxes,
    _tokenized_mailboxes,
    normalize_email,
    parse_address_list,
)
from app.mail.clean import assess_for_clean
from app.mail.identity import Identity
from app.mail.mime import parse_message

# ---------------------------------------------------------------------- addresses


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ('"Roy, Alex" <AROY@netskope.com>', [("Roy, Alex", "aroy@netskope.com")]),
        ("Alex Roy <Alex.Roy@Example.COM>", [("Alex Roy", "alex.roy@example.com")]),
        ("alex.roy@example.com", [("", "alex.roy@example.com")]),
        ("  <bare@example.com>  ", [("", "bare@example.com")]),
        (
            'a@x.example, "Last, First" <b@y.example>,C <c@z.example>',
            [("", "a@x.example"), ("Last, First", "b@y.example"), ("C", "c@z.example")],
        ),
        # groups
        ("undisclosed-recipients:;", []),
        ("Undisclosed recipients: ;", []),
        (
            "team: a@x.example, B <b@x.example>;, c@y.example",
            [("", "a@x.example"), ("B", "b@x.example"), ("", "c@y.example")],
        ),
        ('"Team: Ops" <ops@x.example>', [("Team: Ops", "ops@x.example")]),
        # comments
        ("a@x.example (Alex Roy)", [("Alex Roy", "a@x.example")]),
        ("Alex (work) <a@x.example>", [("Alex", "a@x.example")]),
        # RFC 2047 names, also inside quotes, which real mailers produce
        ("=?utf-8?q?J=C3=B6rg?= <j@x.de>", [("Jörg", "j@x.de")]),
        ('"=?utf-8?q?Roy=2C_Alex?=" <a@x.example>', [("Roy, Alex", "a@x.example")]),
        ("=?ISO-8859-1?Q?Ren=E9?= <r@x.fr>", [("René", "r@x.fr")]),
        ("=?utf-8?b?5bGx55Sw?= <y@x.jp>", [("山田", "y@x.jp")]),
        # quoting
        (r'"Quote \"Q\" Person" <q@x.example>', [('Quote "Q" Person', "q@x.example")]),
        ("'Single Quoted' <s@x.example>", [("Single Quoted", "s@x.example")]),
        # duplicates keep the first position and the first non-empty name
        ("j@x.de, Jörg <J@X.DE>", [("Jörg", "j@x.de")]),
        ("Jörg <j@x.de>, Other <j@x.de>", [("Jörg", "j@x.de")]),
        # real-world junk
        ("a@x.example; b@x.example", [("", "a@x.example"), ("", "b@x.example")]),
        ("Alex Roy alex@x.example", [("Alex Roy", "alex@x.example")]),
        ("a@x.example b@x.example", [("", "a@x.example"), ("", "b@x.example")]),
        # Python's SMTP policy can fold a list separator into an encoded word
        (
            "A <a@x.example>\r\n =?utf-8?q?=2C?= b@x.example",
            [("A", "a@x.example"), (",", "b@x.example")],
        ),
        (
            "a@x.example\r\n =?utf-8?q?=2C?= B <b@x.example>",
            [("", "a@x.example"), (", B", "b@x.example")],
        ),
        ("Name <a@x.example> <b@x.example>", [("Name", "a@x.example"), ("", "b@x.example")]),
        ("<mailto:M@X.example>", [("", "m@x.example")]),
        ("<@relay.example:user@x.example>", [("", "user@x.example")]),
        ('"unterminated <u@x.example>', [("unterminated", "u@x.example")]),
        ("(unterminated <u@x.example>", [("unterminated", "u@x.example")]),
        ("Unterminated <u@x.example", [("Unterminated", "u@x.example")]),
        ("not an address, @nolocal, nodomain@, <>", []),
        # an address hidden in a name, a comment or broken brackets still counts,
        # after the mailbox's own address (a name never becomes the From address)
        ("<a b@c>", [("", "b@c")]),
        (
            '"bob@x.example" <alice@y.example>',
            [("bob@x.example", "alice@y.example"), ("", "bob@x.example")],
        ),
        (
            "Al (al@home.example) <al@work.example>",
            [("Al", "al@work.example"), ("", "al@home.example")],
        ),
        (
            "=?utf-8?q?bob=40x.example?= <a@y.example>",
            [("bob@x.example", "a@y.example"), ("", "bob@x.example")],
        ),
        (
            "=?utf-8?q?'bob=40x.example'_via_T?= <t@y.example>",
            [("'bob@x.example' via T", "t@y.example"), ("", "bob@x.example")],
        ),
        ('"only@name.example"', [("", "only@name.example")]),
        ("grp@name.example: a@y.example;", [("", "grp@name.example"), ("", "a@y.example")]),
        # Python's SMTP policy folded `<a@aaaaaaaa.example>,` into an encoded word
        # (the saved hypothesis example of test_mime's stdlib round trip)
        (
            "=?utf-8?b?QcKgwqDCoMKg4KCA8JCAgA==?= <a@aaaa.example>, =?utf-8?q?AA?=\r\n"
            " =?utf-8?b?wqDCoMKgwqDCoMKgwqDCoMKg4KCA4KCA8JCAgPCQgIAgPGFAYWFhYWFhYWEuZXhh?=\r\n"
            " =?utf-8?q?mple=3E=2C?= a@a.com",
            [
                ("A \u0800\U00010000", "a@aaaa.example"),
                ("AA \u0800\u0800\U00010000\U00010000", "a@aaaaaaaa.example"),
                ("", "a@a.com"),
            ],
        ),
        ("a@x.example,,, ,b@x.example,", [("", "a@x.example"), ("", "b@x.example")]),
        ("", []),
        (None, []),
    ],
)
def test_parse_address_list(header: str | None, expected: list[tuple[str, str]]) -> None:
    assert parse_address_list(header) == expected


def test_unknown_charset_in_a_name_is_reported_when_asked() -> None:
    problems: list[str] = []
    assert parse_address_list("=?x-foo?q?Ren=E9?= <r@x.fr>", problems=problems) == [
        ("Ren\ufffd", "r@x.fr")
    ]
    assert problems == ["header: unknown charset 'x-foo'; decoded best effort"]


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("  <Alex.Roy@Example.COM> ", "alex.roy@example.com"),
        ("a.b+tag@gmail.com", "a.b+tag@gmail.com"),  # no provider-specific folding
        ("plain@x.example", "plain@x.example"),
    ],
)
def test_normalize_email(raw: str, normalized: str) -> None:
    assert normalize_email(raw) == normalized


LOCAL = st.from_regex(r"[a-zA-Z0-9][a-zA-Z0-9._+-]{0,15}", fullmatch=True)
DOMAIN = st.from_regex(r"[a-zA-Z0-9]{1,10}(\.[a-zA-Z]{2,6}){1,2}", fullmatch=True)
NAMES = st.text(
    st.characters(blacklist_categories=("Cs", "Cc")) | st.sampled_from(',;:"()<>@\\'), max_size=20
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(NAMES, LOCAL, DOMAIN), min_size=1, max_size=6))
def test_no_address_is_ever_lost(mailboxes: list[tuple[str, str, str]]) -> None:
    """Whatever the display names hold, every address written by a standard
    mailer comes back, lower-cased, once, in order; anything extra is an
    address-like part of a display name (erring towards inclusion)."""
    header = ", ".join(
        formataddr((name, f"{local}@{domain}"), charset="utf-8")
        for name, local, domain in mailboxes
    )
    expected = list(dict.fromkeys(f"{local}@{domain}".lower() for _, local, domain in mailboxes))
    parsed = [addr for _, addr in parse_address_list(header)]
    assert len(parsed) == len(set(parsed))
    assert set(expected) <= set(parsed)
    names = " ".join(name.lower() for name, _, _ in mailboxes)
    assert all(addr in names for addr in set(parsed) - set(expected))
    if "@" not in names:
        assert parsed == expected


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(NAMES, LOCAL, DOMAIN), min_size=1, max_size=4))
def test_display_names_survive_the_round_trip(mailboxes: list[tuple[str, str, str]]) -> None:
    for name, local, domain in mailboxes:
        header = str(Address(display_name=name, username=local, domain=domain))
        parsed = parse_address_list(header)
        # the mailbox's own address comes first; a name can only add addresses
        assert parsed[0][1] == f"{local}@{domain}".lower()
        assert all(addr in name.lower() for _, addr in parsed[1:])
        expected = " ".join(name.split())
        if len(expected) >= 2 and expected[0] == expected[-1] and expected[0] in "\"'":
            expected = expected[1:-1].strip()  # surrounding quotes are dropped on purpose
        if "(" not in name and ")" not in name:  # a parenthesis starts a comment
            assert parsed[0][0] == expected


# Addresses as the stdlib writes them without quoting the local part.
PLAIN_ADDRESS = st.from_regex(
    r"[a-z][a-z0-9]{0,5}(\.[a-z0-9]{1,4})?@[a-z]{1,8}\.(com|org|example)", fullmatch=True
)
FOLDED_NAME = st.text(
    st.characters(categories=("L", "N", "Zs")) | st.sampled_from(',.;:"()<>@'), max_size=25
)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(FOLDED_NAME, st.none() | PLAIN_ADDRESS, PLAIN_ADDRESS), min_size=1, max_size=5
    )
)
def test_no_address_is_lost_however_python_folds_the_header(
    mailboxes: list[tuple[str, str | None, str]],
) -> None:
    """Python's SMTP policy folds a long list by RFC 2047-encoding whole runs of
    it, `<addr>,` included; every recipient must survive that, and so must an
    address the sender wrote into a display name. (The default line length
    only: CPython 3.11's folder can loop forever with short ones.)"""
    msg = EmailMessage(policy=SMTP)
    msg["To"] = [
        Address(name + (f" {inner}" if inner else ""), addr_spec=addr)
        for name, inner, addr in mailboxes
    ]
    header = msg.as_bytes().decode("utf-8").split("\r\n\r\n", 1)[0].removeprefix("To:")
    parsed = {addr for _, addr in parse_address_list(header)}
    assert {addr for _, _, addr in mailboxes} <= parsed
    # The stdlib itself loses the space before an address in a name when it
    # folds there (RFC 2047 drops whitespace between encoded words); then a
    # longer address that ends with it counts as erring towards inclusion.
    for inner in {inner for _, inner, _ in mailboxes if inner}:
        assert any(addr.endswith(inner) for addr in parsed), inner


def _encoded_words(text: str, cut: int) -> str:
    """`text` as two adjacent encoded words split at byte `cut` (possibly inside
    a character), one B and one Q, as folding mailers write them."""
    data = text.encode("utf-8")
    cut %= len(data) + 1
    head, tail = data[:cut], data[cut:]
    q = "".join(chr(b) if chr(b).isalnum() and b < 128 else f"={b:02X}" for b in tail)
    return f"=?utf-8?b?{base64.b64encode(head).decode()}?=\r\n =?UTF-8?Q?{q}?="


HIDING_STYLES = ["bare", "angle", "comment", "quoted", "encoded", "folded", "group", "mailto"]
WORDS = st.text(st.characters(categories=("L", "N")) | st.just(" "), max_size=10)


@settings(max_examples=400, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(HIDING_STYLES), WORDS, PLAIN_ADDRESS, st.integers(0, 60)),
        min_size=1,
        max_size=6,
    ),
    st.lists(st.sampled_from([", ", "; ", " ", ",\r\n "]), min_size=6, max_size=6),
)
def test_an_address_anywhere_in_the_header_is_never_lost(
    items: list[tuple[str, str, str, int]], separators: list[str]
) -> None:
    """Any `local@domain` in the raw value counts, even inside a comment, a
    quoted name or an encoded word, with or without the separators around it:
    an extra address only makes `/clean` more careful, a lost one could be the
    person's."""
    parts = []
    for style, word, addr, cut in items:
        parts.append(
            {
                "bare": addr,
                "angle": f"{word} <{addr}>",
                "comment": f"({word} {addr}) x@other.example",
                "quoted": f'"{word} {addr}" <y@other.example>',
                "encoded": f"{_encoded_words(f'{word} {addr}', cut)} <z@other.example>",
                "folded": _encoded_words(f"{word} <{addr}>,", cut),
                "group": f"{word or 'g'}: {addr};",
                "mailto": f"{word} <mailto:{addr}?subject=hi>",
            }[style]
        )
    header = "".join(part + sep for part, sep in zip(parts, separators, strict=False))
    parsed = {addr for _, addr in parse_address_list(header)}
    assert {addr for _, _, addr, _ in items} <= parsed


SIMPLE_NAME = st.from_regex(r"[A-Za-z][A-Za-z .'-]{0,15}", fullmatch=True)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["bare", "name", "quoted"]), SIMPLE_NAME, LOCAL, DOMAIN),
        min_size=1,
        max_size=5,
    )
)
def test_fast_path_agrees_with_the_tokenizer(items: list[tuple[str, str, str, str]]) -> None:
    """The regex fast path is an optimisation only: where it answers, the
    general tokenizer must give exactly the same mailboxes."""
    parts = []
    for style, name, local, domain in items:
        addr = f"{local}@{domain}"
        parts.append(
            addr
            if style == "bare"
            else f"{name} <{addr}>"
            if style == "name"
            else f'"{name}, x" <{addr}>'
        )
    header = ", ".join(parts)
    fast = _simple_mailboxes(header)
    assert fast is not None
    slow = _tokenized_mailboxes(header)
    assert [(" ".join(w).split(), a) for w, _, a in fast] == [
        (" ".join(w).split(), a) for w, _, a in slow
    ]


# Addresses written the way RFC 5322 allows but plain mailers do not: a quoted
# local part, comments and folding whitespace inside the addr-spec. Dovecot
# (ENVELOPE, SEARCH TO) reads the person in each; so must the parser, or a
# message addressed to them becomes a /clean candidate.
ADDR_SPEC_FORMS = [
    # T1: a quoted local part
    ('"alex.roy"@example.com', [("", "alex.roy@example.com")]),
    ('Alex <"alex.roy"@example.com>', [("Alex", "alex.roy@example.com")]),
    ('"alex"."roy"@example.com', [("", "alex.roy@example.com")]),
    ('"Alex.Roy"@Example.COM, b@x.example', [("", "alex.roy@example.com"), ("", "b@x.example")]),
    ('"alex.roy" @ example.com', [("", "alex.roy@example.com")]),
    # T2: comments inside the addr-spec
    ("alex.roy(work)@example.com", [("work", "alex.roy@example.com")]),
    ("alex.roy@(comment)example.com", [("comment", "alex.roy@example.com")]),
    ("alex.roy@example.com(comment)", [("comment", "alex.roy@example.com")]),
    ("Alex <alex.roy(work)@example.com>", [("Alex", "alex.roy@example.com")]),
    ("Alex <alex.roy@(x)example.com (y)>", [("Alex", "alex.roy@example.com")]),
    # T3: whitespace around "@" and the dots
    ("Alex <alex.roy @ example.com>", [("Alex", "alex.roy@example.com")]),
    ("<alex . roy @ example . com>", [("", "alex.roy@example.com")]),
    ("alex.roy @ example.com", [("", "alex.roy@example.com")]),
    ("alex.roy@ example.com, b@x.example", [("", "alex.roy@example.com"), ("", "b@x.example")]),
    # `roy@example` is what the words say on their own: kept, erring towards inclusion
    ("alex . roy@example . com", [("", "alex.roy@example.com"), ("", "roy@example")]),
    # T4: folded inside the address (CRLF kept, or removed by the header unfolding)
    ("Partners <aroy@\r\n example.com>", [("Partners", "aroy@example.com")]),
    ("Partners <aroy@ example.com>", [("Partners", "aroy@example.com")]),
    ("Partners <aroy\r\n\t@example.com>", [("Partners", "aroy@example.com")]),
    ("aroy@\r\n example.com", [("", "aroy@example.com")]),
    ('"Roy, Alex" <aroy\r\n @ example.com>', [("Roy, Alex", "aroy@example.com")]),
    ("team: alex.roy @\r\n example.com;", [("", "alex.roy@example.com")]),
    # a quoted local part that needs its quotes keeps them (it must not vanish)
    ('"alex roy"@example.com', [("", '"alex roy"@example.com')]),
    ('<"alex roy"@example.com>', [("", '"alex roy"@example.com')]),
    (r'"al\"ex"@example.com', [("", r'"al\"ex"@example.com')]),
]


@pytest.mark.parametrize(("header", "expected"), ADDR_SPEC_FORMS)
def test_addr_specs_with_quotes_comments_and_folding(
    header: str, expected: list[tuple[str, str]]
) -> None:
    assert parse_address_list(header) == expected


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        # a dot in an unquoted display name does not join it to anything
        ("John Q. Public <jqp@x.example>", [("John Q. Public", "jqp@x.example")]),
        ("J. Random Hacker <j@x.example>", [("J. Random Hacker", "j@x.example")]),
        # beside `<...>` a name keeps its words; an address they spell comes after
        ("Alex @ Work <a@x.example>", [("Alex Work", "a@x.example"), ("", "alex@work")]),
        # the RFC reading first; the word's own address still counts
        (
            "Dr. alex.roy@example.com",
            [("", "dr.alex.roy@example.com"), ("", "alex.roy@example.com")],
        ),
        # two addresses are never joined into one
        ("a@x.example. b @ y.example", [("", "b@y.example"), ("", "a@x.example.")]),
        ("a@x.example @ y.example", [("y.example", "a@x.example")]),
        # an address inside a quoted local part still counts
        (
            '"alex.roy@example.com"@evil.example',
            [
                ("alex.roy@example.com", '"alex.roy@example.com"@evil.example'),
                ("", "alex.roy@example.com"),
            ],
        ),
        ("<a b@c>", [("", "b@c")]),
        # an address read from `<...>` with its comments and spaces, and what its
        # words or comments hold besides
        ("<a@x.example (b@y.example)>", [("", "a@x.example"), ("", "b@y.example")]),
        ("<. a@x.example>", [("", ".a@x.example"), ("", "a@x.example")]),
        # an encoded word beside a joined address is still decoded and searched
        # (its mailbox's words all stay in the name, as they were)
        (
            "=?utf-8?q?bob=40x.example?= alex.roy @ example.com",
            [
                ("bob@x.example alex.roy example.com", "alex.roy@example.com"),
                ("", "bob@x.example"),
            ],
        ),
        ('"" @x.example', [("", '""@x.example')]),
        ("@ x.example, a @, @", []),
    ],
)
def test_joining_addr_spec_words_keeps_names_and_other_addresses(
    header: str, expected: list[tuple[str, str]]
) -> None:
    assert parse_address_list(header) == expected


DOT_ATOM_LOCAL = st.from_regex(r"[a-zA-Z0-9+_-]{1,8}(\.[a-zA-Z0-9+_-]{1,8}){0,2}", fullmatch=True)
CFWS = st.sampled_from(["", " ", "\t", "\r\n ", "\r\n\t", "(c)", " (a b) ", "\r\n (x)\r\n "])


@settings(max_examples=400, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["bare", "angle", "quoted", "angle_quoted"]),
            DOT_ATOM_LOCAL,
            DOMAIN,
            st.lists(CFWS, min_size=12, max_size=12),
        ),
        min_size=1,
        max_size=4,
    ),
    st.sampled_from([", ", ",", " , ", ";", ",\r\n "]),
)
def test_comments_and_folding_inside_an_address_never_lose_it(
    items: list[tuple[str, str, str, list[str]]], separator: str
) -> None:
    """RFC 5322 allows CFWS around every "@" and dot of an addr-spec (obs-local-
    part, obs-domain) and a quoted local part; however an address is written
    so, it comes back as itself."""
    parts = []
    for style, local, domain, spaces in items:
        gaps = iter(spaces)
        pieces = local.split(".") if "quoted" not in style else [f'"{local}"']
        spec = f"{next(gaps)}.{next(gaps)}".join(pieces)
        spec += f"{next(gaps)}@{next(gaps)}"
        spec += f"{next(gaps)}.{next(gaps)}".join(domain.split("."))
        parts.append(f"Name <{spec}>" if style.startswith("angle") else spec)
    header = separator.join(parts)
    parsed = {addr for _, addr in parse_address_list(header)}
    assert {f"{local}@{domain}".lower() for _, local, domain, _ in items} <= parsed


# ----------------------------------------------------------------------- identity

ME = Identity("Alex.Roy@Example.com", "Alex Roy", ("aroy@netskope.com", " AROY@example.com "))


def test_addresses_are_normalized_email_and_aliases() -> None:
    assert ME.addresses == frozenset(
        {"alex.roy@example.com", "aroy@netskope.com", "aroy@example.com"}
    )
    assert Identity("x@y.example", aliases=("", "  ")).addresses == frozenset({"x@y.example"})


@pytest.mark.parametrize(
    ("to", "cc", "expected"),
    [
        (["alex.roy@example.com"], [], True),
        (["ALEX.ROY@EXAMPLE.COM"], [], True),
        ([], ["aroy@netskope.com"], True),
        (["<aroy@example.com>"], [], True),
        # whole header values are parsed, not trusted
        (['"Roy, Alex" <AROY@netskope.com>'], [], True),
        (["Bob <bob@x.example>, Alex <alex.roy@example.com>"], [], True),
        (["team: bob@x.example, alex.roy@example.com;"], [], True),
        (["alexander@example.com", "roy@example.com"], ["aroy@netskope.co"], False),
        (["Alex Roy <other@example.com>"], [], False),  # the name is not the address
        ([], [], False),
        (["", ""], [""], False),
    ],
)
def test_is_recipient(to: list[str], cc: list[str], expected: bool) -> None:
    assert ME.is_recipient(to, cc) is expected


@pytest.mark.parametrize(("header", "expected"), ADDR_SPEC_FORMS)
def test_the_person_is_a_recipient_however_their_address_is_written(
    header: str, expected: list[tuple[str, str]]
) -> None:
    addrs = [addr for _, addr in expected]
    # Every form above is alex.roy@ or aroy@example.com, except the local parts
    # that keep their quotes (`"alex roy"@example.com` is another mailbox).
    mine = not any(a.startswith('"') for a in addrs)
    assert bool(ME.addresses & set(addrs)) is mine
    # as the mirror stores it (parsed addresses) and as a raw header value
    assert ME.is_recipient(addrs, []) is mine
    assert ME.is_recipient([], addrs) is mine
    assert ME.is_recipient([header], []) is mine
    assert ME.is_recipient([], [header]) is mine


@pytest.mark.parametrize(
    "to",
    [
        b'"alex.roy"@example.com',
        b"alex.roy(work)@example.com",
        b"alex.roy@(comment)example.com",
        b"alex.roy@example.com(comment)",
        b"Alex <alex.roy @ example.com>",
        b"alex . roy@example . com",
        b"Partners <aroy@\r\n example.com>",
        b"Partners <aroy@\r\n\texample.com>",
        b"J\xc3\xb6rg <alex.roy @\r\n example.com>",
    ],
)
def test_a_parsed_message_addressed_that_way_is_never_a_clean_candidate(to: bytes) -> None:
    raw = b"From: news@x.example\r\nTo: " + to + b"\r\nSubject: hi\r\n\r\nbody\r\n"
    parsed = parse_message(raw, identity=ME)
    assert ME.is_recipient(parsed.to_addrs, parsed.cc_addrs)
    assert ME.is_recipient((), parsed.to_addrs)  # the same in CC
    row = _Row(parsed.to_addrs, ME.fingerprint)
    verdict = assess_for_clean(row, ME)
    assert not verdict.candidate and verdict.reason == "addressed to you (To/CC)"
    assert assess_for_clean(_Row((), ME.fingerprint), ME).candidate  # what the bug let through


class _Row:
    """A bulk-looking mirror row, checked and found not to mention the person."""

    def __init__(self, to_addrs: tuple[str, ...], fingerprint: str) -> None:
        self.from_addr = "news@x.example"
        self.to_addrs = list(to_addrs)
        self.cc_addrs: list[str] = []
        self.subject = "Weekly digest"
        self.body_excerpt = "unsubscribe"
        self.flags: list[str] = []
        self.list_unsubscribe = "<mailto:u@x.example>"
        self.list_id = "news.x.example"
        self.precedence = "bulk"
        self.auto_submitted = None
        self.mentions_you = False
        self.mention_identity = fingerprint


def test_is_recipient_accepts_any_iterable() -> None:
    assert ME.is_recipient(iter(["x@y.example"]), (a for a in ["aroy@netskope.com"]))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Hi Alex,", True),
        ("ROY", True),
        ("thanks roy!", True),
        ("Alex's idea", True),
        ("alex.roy@example.com wrote", True),
        ("Alex\nRoy", True),
        ("(Roy)", True),
        ("Alexander", False),
        ("alexa", False),
        ("royalty and Alexandria", False),
        ("alex_roy", False),  # underscore is a word character
        ("Alex2", False),
        ("", False),
    ],
)
def test_name_mentioned(text: str, expected: bool) -> None:
    assert ME.name_mentioned(text) is expected


def test_short_name_parts_are_ignored_but_the_full_name_counts() -> None:
    al = Identity("al@x.example", "Al Wu")
    assert not al.name_mentioned("Al said hi") and not al.name_mentioned("Wu")
    assert al.name_mentioned("Thanks, al  wu.")
    assert Identity("j@x.example", "J. Random Hacker").name_mentioned("ask random")
    assert not Identity("n@x.example", "").name_mentioned("anything at all")
    assert not Identity("n@x.example", "Bo").name_mentioned("Bo")


def test_name_matching_is_unicode_aware() -> None:
    zoe = Identity("z@x.example", "Zoë Ørsted")
    assert zoe.name_mentioned("Danke, ZOË!") and zoe.name_mentioned("ørsted")
    assert not zoe.name_mentioned("Zoëlle") and not zoe.name_mentioned("Ørstedé")
    decomposed = unicodedata.normalize("NFD", "Hallo Zoë")
    assert zoe.name_mentioned(decomposed)
    assert Identity("z@x.example", unicodedata.normalize("NFD", "Zoë")).name_mentioned("Zoë")


def test_names_in_scripts_without_spaces_match_inside_text() -> None:
    taro = Identity("t@x.jp", "山田 太郎")
    assert taro.name_mentioned("山田さん、お疲れ様です") and taro.name_mentioned("太郎くん")
    assert not taro.name_mentioned("田太")


def test_directly_involved_is_recipient_or_named() -> None:
    assert ME.directly_involved(["aroy@netskope.com"], [], "")
    assert ME.directly_involved(["news@x.example"], [], "Congratulations to Alex!")
    assert not ME.directly_involved(["news@x.example"], ["bob@x.example"], "Dear subscriber")


WORD_CHARS = st.characters(categories=("L", "N"))
NON_WORD = st.text(st.sampled_from(" \n\t,.;:!?()[]\"'-—/"), min_size=1, max_size=3)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(["Alex", "Roy", "alex roy", "ALEX"]),
    NON_WORD,
    NON_WORD,
    st.text(max_size=30),
    st.text(max_size=30),
)
def test_a_name_between_non_word_characters_is_always_found(
    name: str, left: str, right: str, before: str, after: str
) -> None:
    assert ME.name_mentioned(before + left + name + right + after)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["Alex", "Roy"]), WORD_CHARS, WORD_CHARS, st.booleans())
def test_a_name_inside_a_longer_word_is_not(name: str, pre: str, post: str, both: bool) -> None:
    text = (pre if both else "") + name + post
    assert not ME.name_mentioned(text)
