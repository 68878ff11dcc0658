"""`Keywords` (app/mail/keywords.py) answers exactly what its regex answers:
the triage and /clean keyword rules keep their regexes as the definition and
only find them faster. The oracle is the regex itself."""

from __future__ import annotations

import re
import string

from hypothesis import given, settings
from hypothesis import strategies as st

from app.mail import clean, keywords, triage
from app.mail.keywords import Keywords, fold

PRODUCT_PATTERNS = [
    triage.QUESTION,
    triage.DEADLINE,
    triage.MEETING,
    triage.ZOOM,
    clean.NEWSLETTER_WORDS,
]
# Patterns with other shapes: a literal after a group, a class at the start,
# no literal start at all, case-sensitive, inline flags.
OTHER_PATTERNS = [
    re.compile(r"ab(c|d)e|\bxyz", re.IGNORECASE),
    re.compile(r"(?:foo|bar)baz|q", re.IGNORECASE),
    re.compile(r"[ab]c"),
    re.compile(r"\w+ing\b", re.IGNORECASE),
    re.compile(r"(?:x)?yz", re.IGNORECASE),
    re.compile(r"Kelvin|Straße|sun", re.IGNORECASE),
    re.compile(r"^(no-?reply|info)@", re.IGNORECASE | re.MULTILINE),
    re.compile(r"(?i)deal|(?-i:Sale)"),
    re.compile(r"MiXeD"),
]
# Every non-ASCII character (no surrogates), for the exhaustive checks.
ALL_CHARS = "".join(chr(c) for c in range(0x80, 0x110000) if not 0xD800 <= c <= 0xDFFF)


def test_every_character_a_case_insensitive_regex_reads_as_an_ascii_letter_is_folded_to_it() -> (
    None
):
    for letter in string.ascii_lowercase:
        for found in re.findall(letter, ALL_CHARS, re.IGNORECASE):
            assert fold(found) == letter, (hex(ord(found)), letter)


def test_folding_keeps_every_position() -> None:
    assert len(fold(ALL_CHARS)) == len(ALL_CHARS)
    assert len(fold(string.printable)) == len(string.printable)


def test_the_product_patterns_are_found_by_their_literals() -> None:
    """Otherwise they would silently fall back to the slow whole-regex search."""
    for pattern in PRODUCT_PATTERNS:
        assert Keywords(pattern)._cores, pattern.pattern


def test_patterns_without_a_literal_start_are_searched_whole() -> None:
    assert keywords._cores(re.compile(r"\w+ing\b")) is None
    assert keywords._cores(re.compile(r"(?:x)?yz")) is None


PIECES = [
    word
    for pattern in PRODUCT_PATTERNS + OTHER_PATTERNS
    for word in re.findall(r"[A-Za-z][A-Za-z' #%.:/-]*", pattern.pattern)
] + [
    " ",
    "\n",
    "?",
    "3",
    "-",
    "_",
    "é",
    "\u0301",
    "\u0130",
    "\u0131",
    "\u017f",
    "\u212a",
    "ß",
    "\u200d",
    "\xa0",
    "🚀",
    "日本",
]


@st.composite
def texts(draw: st.DrawFn) -> str:
    parts = draw(st.lists(st.sampled_from(PIECES) | st.text(max_size=3), max_size=12))
    cased = [
        draw(st.sampled_from([p, p.upper(), p.lower(), p.title(), p.swapcase()])) for p in parts
    ]
    return "".join(cased)


@settings(max_examples=1500, deadline=None)
@given(pattern=st.sampled_from(PRODUCT_PATTERNS + OTHER_PATTERNS), text=texts())
def test_keywords_agree_with_their_regex(pattern: re.Pattern[str], text: str) -> None:
    expected = pattern.search(text) is not None
    scanner = Keywords(pattern)
    assert scanner.search(text) is expected
    assert scanner.search(text, fold(text)) is expected


def test_triage_and_clean_use_the_fast_search_for_the_same_answers() -> None:
    assert triage._QUESTION.pattern is triage.QUESTION
    assert triage._ZOOM.search("Join on ZOOM today") is True
    assert triage._DEADLINE.search("due\u212a") is False  # "duek": no word end
    assert triage._QUESTION.search("PLEA\u017fE send") is True  # long s is an s to the regex


DOMAIN_PARTS = [*clean.NOTIFICATION_DOMAINS, "mail", "x", "notgithub", "com", "github"]


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from(DOMAIN_PARTS), min_size=1, max_size=4))
def test_notification_domains_are_looked_up_as_before(parts: list[str]) -> None:
    domain = ".".join(parts)
    expected = any(domain == d or domain.endswith("." + d) for d in clean.NOTIFICATION_DOMAINS)
    assert clean._notification_domain(domain) is expected
