""" "Mentions you": the person's name or any of their addresses, as whole words,
case- and accent-insensitive; and the fingerprint a stored verdict is tied to."""

from __future__ import annotations

import pickle
import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.mail.identity import (
    _INVISIBLE,
    MATCHER_VERSION,
    Identity,
    _casefold,
    _drop_accents,
    _Matcher,
    fold,
)

ME = Identity("alex.roy@example.com", "Alex Roy", ("aroy@example.com", "aroy@netskope.com"))
JOSE = Identity("jn@x.example", "José Ñúñez")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Hi ALEX,", True),
        ("thanks roy!", True),
        ("Alex\r\n  Roy", True),
        ("ＡＬＥＸ", False),  # fullwidth: a compatibility form, deliberately not folded
        ("mail alex.roy@example.com today", True),
        ("<AROY@NETSKOPE.COM>.", True),
        ("mailto:aroy@example.com?subject=hi", True),
        ("@aroy mentioned you", True),  # a handle-like local part
        ("aroy wrote:", True),
        ("aroy@other.example", True),  # the same handle elsewhere: errs safe
        ("xaroy@example.com", False),  # another address
        ("Al\u00adex", True),  # soft hyphen inside the name
        ("Alex\u200bRoy", True),  # zero-width space between the parts
        ("Alexander, Alexa and royalty", False),
        ("alex_roy", False),
        ("", False),
    ],
)
def test_mentioned_in(text: str, expected: bool) -> None:
    assert ME.mentioned_in(text) is expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Gracias, jose", True),
        ("JOSÉ", True),
        (unicodedata.normalize("NFD", "josé ñúñez"), True),
        ("Sr. Nunez", True),
        ("Josefina", False),
        ("nuñezes", False),
    ],
)
def test_accents_and_case_do_not_matter(text: str, expected: bool) -> None:
    assert JOSE.mentioned_in(text) is expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<J.K@corp.example>.", True),
        ("from j.k@corp.example:", True),
        ("xj.k@corp.example", False),
        ("j.k@corp.example.au", False),
        ("j.k@corp.example-mail.com", False),
        ("j.k", False),  # too short to be a handle on its own
    ],
)
def test_an_address_counts_only_as_itself(text: str, expected: bool) -> None:
    assert Identity("j.k@corp.example").mentioned_in(text) is expected


def test_role_mailboxes_do_not_count_as_a_handle() -> None:
    team = Identity("team@corp.example", "Kim Lee", ("info@corp.example", "kim@corp.example"))
    assert team.local_parts == ()  # team, info: roles; kim: shorter than a handle
    assert not team.mentioned_in("Dear team, more info below")
    assert team.mentioned_in("write to info@corp.example")


def test_an_identity_without_a_name_still_matches_its_addresses() -> None:
    bare = Identity("ops-lead@corp.example")
    assert bare.mentioned_in("cc ops-lead@corp.example")
    assert bare.mentioned_in("ping ops-lead please")
    assert not bare.name_mentioned("ops-lead")


def test_fingerprint_is_stable_normalised_and_versioned() -> None:
    assert (
        ME.fingerprint
        == Identity(
            " Alex.Roy@Example.com ", "alex   ROY", ("AROY@netskope.com", "aroy@example.com", "")
        ).fingerprint
    )
    assert len(ME.fingerprint) == 16
    assert ME.fingerprint != Identity(ME.email, "Alex Royce", ME.aliases).fingerprint
    assert ME.fingerprint != Identity(ME.email, ME.name, ME.aliases[:1]).fingerprint
    assert MATCHER_VERSION >= 2  # bumping it re-decides every stored verdict


def test_from_settings_matches_the_graph_s_identity() -> None:
    from app.config import Settings

    s = Settings()
    graph_identity = Identity(s.identity_email, s.identity_name, tuple(s.identity_aliases))
    assert Identity.from_settings(s).fingerprint == graph_identity.fingerprint


def test_search_terms_for_the_server() -> None:
    # Substring search: "roy" finds every address and handle holding it.
    assert ME.search_terms() == ["Alex", "Roy"]
    # "Ana" covers "Ana Li"; the handle "a.li.work" covers its own address.
    assert Identity("kim@corp.example", "Ana Li", ("a.li.work@corp.example",)).search_terms() == [
        "Ana",
        "kim@corp.example",
        "a.li.work",
    ]
    # Accented terms also bare and as HTML writes them (a server searches an
    # HTML part's source, where "Jos&eacute;" is not "José").
    assert JOSE.search_terms() == [
        "José",
        "Jose",
        "Jos&#233;",
        "Jos&#xe9;",
        "Jos&eacute;",
        "Ñúñez",
        "Nunez",
        "&#209;&#250;&#241;ez",
        "&#xd1;&#xfa;&#xf1;ez",
        "&Ntilde;&uacute;&ntilde;ez",
        "jn@x.example",
    ]
    assert "Al Wu" in Identity("w@x.example", "Al Wu").search_terms()


def test_search_terms_keep_a_name_that_is_also_the_handle() -> None:
    # "Alex" and the handle "alex" each hold the other, case aside: one stays.
    # (They used to knock each other out, so past the fetched prefix the
    # server was never asked for the person's first name.)
    terms = Identity("alex@example.com", "Alex Roy", ("aroy@example.com",)).search_terms()
    assert [t.casefold() for t in terms] == ["alex", "roy"]
    jose = Identity("jose@example.com", "José Álvarez").search_terms()
    assert "Jose" in jose and "José" in jose and "&Aacute;lvarez" in jose


@pytest.mark.parametrize(
    "text",
    [
        "Thanks, Al\u200eex",  # left-to-right mark
        "Thanks, Al\u200fex",  # right-to-left mark
        "Thanks, A\u2066lex\u2069",  # an isolate
        "Thanks, Al\u202aex",  # an embedding
        "Thanks, Ale\u2063x",  # invisible separator
        "Thanks, Ale\ufe0fx",  # a variation selector
        "Thanks, Alex\u2062Roy",  # invisible times between the two names
        "Thanks, A\x00l\x00e\x00x",  # UTF-16 read as 8-bit text
        "Thanks, A\x00l\x00e\x00x \u2014 caf\u00e9",  # the same beside non-ASCII text
        "Thanks\x00Alex",  # NUL as the only separator
    ],
)
def test_invisible_characters_do_not_hide_the_name(text: str) -> None:
    assert ME.name_mentioned(text)
    assert ME.could_be_mentioned_in(text)  # the HTML shortcut must not skip it either


def test_an_identity_travels_to_the_parser_processes() -> None:
    assert ME.mentioned_in("hi alex")  # compile the matchers first
    copy = pickle.loads(pickle.dumps(ME))
    assert copy == ME and copy.fingerprint == ME.fingerprint and copy.mentioned_in("ROY!")


ACCENTS = st.sampled_from(["\u0301", "\u0300", "\u0308", "\u0302", "\u0327", ""])


@settings(max_examples=300, deadline=None)
@given(st.lists(ACCENTS, min_size=4, max_size=4), st.booleans(), st.text(max_size=20))
def test_any_accents_on_the_name_still_match(marks: list[str], upper: bool, around: str) -> None:
    name = "".join(c + m for c, m in zip("alex", marks, strict=True))
    name = name.upper() if upper else name
    text = f"{around} {name}, {around}"
    assert ME.mentioned_in(unicodedata.normalize("NFC", text))
    assert ME.mentioned_in(unicodedata.normalize("NFD", text))


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_fold_is_idempotent_and_matching_never_raises(text: str) -> None:
    assert fold(fold(text)) == fold(text)
    ME.mentioned_in(text)
    JOSE.mentioned_in(text)


def test_only_three_characters_fold_to_ascii_from_outside_it() -> None:
    """`_Matcher.search` rules a non-ASCII text out on its ASCII characters,
    lower-cased, before folding the rest: sound only if no other character
    of an NFD text gains an ASCII letter by `_casefold`."""
    gains = set()
    for code in range(0x110000):
        if 0xD800 <= code < 0xE000:
            continue
        for char in unicodedata.normalize("NFD", chr(code)):
            if not char.isascii() and any(c.isascii() for c in _casefold(char)):
                gains.add(char)
    assert gains == {"\xdf", "\u017f", "\u1e9e"}


def _old_search(matcher: _Matcher, text: str) -> bool:
    """`_Matcher.search` before its non-ASCII sieve lower-cased only ASCII."""
    if not text or matcher.pattern is None:
        return False
    if text.isascii():
        return matcher._scan(text.lower())
    decomposed = _casefold(unicodedata.normalize("NFD", text))
    folded = _drop_accents(decomposed)
    if not _INVISIBLE.search(folded):
        return matcher._scan(folded)
    return matcher._scan(_INVISIBLE.sub("", folded)) or matcher._scan(_INVISIBLE.sub(" ", folded))


MENTION_PIECES = ["Alex", "ALEX", "Ale\u0301x", "ROY", "aroy@example.com", "AROY", "Jos\xe9"]
MENTION_PIECES += ["jose\u0301", "\xdf", "\u017f", "\u1e9e", "\u212a", "\u0130", "\u00ad", "\u200b"]
MENTION_PIECES += ["\u2014", " ", "x", "@", ".", "\u3042", "\u0308"]


@settings(max_examples=2000, deadline=None)
@given(st.lists(st.sampled_from(MENTION_PIECES) | st.text(max_size=3), max_size=8).map("".join))
def test_the_non_ascii_sieve_answers_as_the_full_fold(text: str) -> None:
    for identity in (ME, JOSE, Identity("ssa@x.example", "Stra\xdfe Kai")):
        matcher = identity._mention_matcher
        assert matcher.search(text) is _old_search(matcher, text)
