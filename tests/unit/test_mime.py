"""MIME decoding for the mirror: real-world mess in, clean columns out, never an exception."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from app.mail.addresses import parse_address_list
from app.mail.identity import Identity
from app.mail.mime import html_to_text, parse_message

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "mime"


def load(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def test_quoted_printable_latin1_with_encoded_words_and_groups() -> None:
    p = parse_message(load("qp_latin1.eml"))
    assert p.from_name == "René François" and p.from_addr == "rene@example.fr"
    assert p.subject == "Réunion demain"
    assert p.to_addrs == ("aroy@example.com", "bob@example.org", "carol@example.org")
    assert p.cc_addrs == ()
    assert p.body_excerpt == "Bonjour Alex, la réunion est déplacée à demain."
    assert p.date is not None and p.date.utcoffset() is not None
    assert p.message_id == "qp@example.fr" and p.problems == ()


def test_html_only_base64_drops_script_and_style_and_notes_a_bad_date() -> None:
    p = parse_message(load("html_only_b64.eml"))
    assert p.subject == "🎉 Big news"
    assert "alert" not in p.body_excerpt and "color" not in p.body_excerpt
    assert "Hello & welcome" in p.body_excerpt and "See you" in p.body_excerpt
    assert p.date is None and any("Date" in x for x in p.problems)
    assert p.list_unsubscribe == "<https://list.example/u>"


def test_unknown_charset_is_best_effort_and_attachments_are_noticed() -> None:
    p = parse_message(load("unknown_charset.eml"))
    assert p.body_excerpt.startswith("Caf") and p.has_attachments
    assert "JVBER" not in p.body_excerpt
    assert any("charset" in x for x in p.problems)
    assert p.message_id == "no-brackets@example.org" and p.date is None


def test_truncated_multipart_still_yields_the_text() -> None:
    p = parse_message(load("truncated.eml"))
    assert p.body_excerpt.startswith("Hello world, this is a truncated")
    assert p.problems


def test_nul_bytes_never_reach_postgres() -> None:
    raw = b"From: a@b.c\r\nSubject: x\x00y\r\n\r\nbody\x00text\r\n"
    p = parse_message(raw)
    assert "\x00" not in p.subject and "\x00" not in p.body_excerpt


def test_missing_everything() -> None:
    p = parse_message(b"")
    assert p.from_addr is None and p.subject == "" and p.date is None and p.body_excerpt == ""


def test_html_to_text_keeps_line_breaks_and_entities() -> None:
    assert html_to_text("<p>a&nbsp;&lt;b&gt;</p><br><div>c</div>") == "a <b>\n\nc"


def test_address_lists_with_quoted_commas_case_and_encoded_names() -> None:
    assert parse_address_list('"Roy, Alex" <AROY@netskope.com>') == [
        ("Roy, Alex", "aroy@netskope.com")
    ]
    assert parse_address_list("=?utf-8?q?J=C3=B6rg?= <j@x.de>, j@x.de") == [("Jörg", "j@x.de")]
    assert parse_address_list("undisclosed-recipients:;") == []
    assert parse_address_list("not an address") == []


def test_identity_matches_whole_names_and_every_alias() -> None:
    me = Identity("alex.roy@example.com", "Alex Roy", ("aroy@netskope.com",))
    assert me.is_recipient(['"Roy, Alex" <AROY@NETSKOPE.COM>'], [])
    assert me.is_recipient([], ["Alex.Roy@Example.com"])
    assert not me.is_recipient(["alexander@example.com"], [])
    assert me.name_mentioned("Hi Alex,") and me.name_mentioned("thanks ROY!")
    assert not me.name_mentioned("Alexander and royalty") and not me.name_mentioned("alexa")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=3000))
def test_parse_never_raises_on_arbitrary_bytes(raw: bytes) -> None:
    parse_message(raw)


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(sorted(p.name for p in FIXTURES.glob("*.eml"))),
    st.integers(0, 2000),
    st.binary(max_size=40),
)
def test_parse_never_raises_on_cut_or_spliced_fixtures(name: str, cut: int, junk: bytes) -> None:
    raw = load(name)
    parse_message(raw[:cut] + junk + raw[cut:])
    parse_message(raw[: cut % max(1, len(raw))])
