"""MIME decoding for the mirror: real-world mess in, clean columns out, never an exception.

Each fixture under tests/fixtures/mime is a small hand-written message for one
thing real mail gets wrong; the property tests at the end throw arbitrary and
mangled bytes at the parser, because one bad message must never fail a sync.
"""

from __future__ import annotations

import base64
import email
import email.policy
from datetime import UTC, datetime, timedelta, timezone
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from html import escape
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from app.mail.identity import Identity
from app.mail.mime import ParsedMessage, decode_header_text, html_to_text, parse_message

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "mime"
FIXTURE_NAMES = sorted(p.name for p in FIXTURES.glob("*.eml"))


def load(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def parse(name: str) -> ParsedMessage:
    return parse_message(load(name))


# ----------------------------------------------------------------- transfer encodings


def test_quoted_printable_latin1_with_encoded_words_and_groups() -> None:
    p = parse("qp_latin1.eml")
    assert p.from_name == "René François" and p.from_addr == "rene@example.fr"
    assert p.subject == "Réunion demain"
    assert p.to_addrs == ("aroy@example.com", "bob@example.org", "carol@example.org")
    assert (
        p.to_display == '"Roy, Alex" <AROY@Example.com>, team: bob@example.org, carol@example.org;'
    )
    assert p.cc_addrs == () and p.cc_display == "undisclosed-recipients:;"
    assert p.body_excerpt == "Bonjour Alex, la réunion est déplacée à demain."
    assert p.date == datetime(2026, 11, 17, 7, 0, tzinfo=UTC)
    assert p.message_id == "qp@example.fr" and p.problems == ()


def test_html_only_base64_drops_script_and_style_and_notes_a_bad_date() -> None:
    p = parse("html_only_b64.eml")
    assert p.subject == "🎉 Big news"
    assert p.body_excerpt == "Hello & welcome\n\nSee you"
    assert p.date is None and any("Date" in x for x in p.problems)
    assert p.list_unsubscribe == "<https://list.example/u>"


def test_html_body_keeps_line_breaks_and_unescapes_entities() -> None:
    p = parse("html_entities.eml")
    assert p.body_excerpt == (
        "Order #1234\n\nDear Alex,\n\nYour order has shipped & will arrive Friday.\nTrack it online."
    )
    assert "Ignored title" not in p.body_excerpt and "color" not in p.body_excerpt
    assert p.date == datetime(2026, 11, 18, 7, 0, tzinfo=timezone(timedelta(hours=-5)))


# ----------------------------------------------------------------------- structure


def test_nested_mixed_alternative_prefers_plain_text_and_flags_the_attachment() -> None:
    p = parse("nested_mixed.eml")
    assert p.body_excerpt == (
        "Dear Alex,\n\nYour order has shipped – it will arrive Friday. Café vouchers are attached."
    )
    assert p.has_attachments
    assert "ATTACHMENT-CONTENT" not in p.body_excerpt and "PDF" not in p.body_excerpt
    assert p.problems == ()


def test_folded_headers_and_every_mirror_column() -> None:
    p = parse("nested_mixed.eml")
    assert p.from_addr == "orders@shop.example" and p.from_name == "Shop Team"
    assert p.reply_to == "support@shop.example"
    assert p.to_addrs == ("alex.roy@example.com", "bob@example.org")
    assert p.to_display == '"Roy, Alex" <alex.roy@example.com>, Bob <bob@example.org>'
    # Duplicates are removed within a header, not across To and Cc.
    assert p.cc_addrs == ("carol@example.org", "bob@example.org", "ops@example.org")
    assert p.cc_display.startswith('"Carol, C." <carol@example.org>, bob@example.org')
    assert p.subject == "Your order – shipped ✅"  # windows-1252 then UTF-8, folded
    assert p.message_id == "order-1234@shop.example"
    assert p.in_reply_to == "question-1@example.com"
    assert p.references == ("start-0@example.com", "question-1@example.com")
    assert p.date == datetime(2026, 11, 17, 9, 15, tzinfo=UTC)
    assert p.list_id == "Shop notices <notices.shop.example>"
    assert p.list_unsubscribe == "<https://shop.example/u?id=1>, <mailto:unsub@shop.example>"
    assert p.precedence == "bulk" and p.auto_submitted == "auto-generated"


def test_inline_images_of_an_html_body_are_not_attachments() -> None:
    p = parse("related_inline_image.eml")
    assert p.body_excerpt == "See the logo — shiny."
    assert not p.has_attachments


def test_calendar_part_is_ignored_when_there_is_text() -> None:
    p = parse("calendar_with_text.eml")
    assert p.body_excerpt == "You have been invited to the quarterly review."
    assert p.has_attachments  # the invite.ics attachment


def test_calendar_only_invitation_gives_its_summary_and_description() -> None:
    p = parse("calendar_only.eml")
    assert p.body_excerpt == (
        "Quarterly review\nRoom 4, Building B\nAgenda:\n1. numbers\n"
        "2. plans for the next quarter with a long line that is folded"
    )
    assert "BEGIN:VEVENT" not in p.body_excerpt and not p.has_attachments


def test_multipart_without_boundary_is_read_as_text() -> None:
    p = parse("no_boundary.eml")
    assert p.body_excerpt.startswith("The sender forgot the boundary parameter")
    assert any("boundary" in x for x in p.problems)


# ------------------------------------------------------------------------ charsets


def test_unknown_charset_is_best_effort_with_a_note() -> None:
    p = parse("unknown_charset.eml")
    assert p.subject == "Caf\ufffd" and p.body_excerpt == "Caf\ufffd ok"
    assert p.from_name == "Weird Name"
    assert any("unknown charset 'x-unknown'" in x for x in p.problems)
    assert p.has_attachments and "JVBER" not in p.body_excerpt
    assert p.message_id == "no-brackets@example.org" and p.date is None


def test_8bit_body_with_the_wrong_charset_falls_back_and_says_so() -> None:
    p = parse("eight_bit_wrong_charset.eml")
    assert p.body_excerpt == "Grüße aus München, schöne Grüße!"
    assert p.subject == "Grüße"  # raw 8-bit header bytes that are not UTF-8
    assert p.problems == ("body: text is not 'utf-8' as declared; decoded as Windows-1252",)


def test_8bit_utf8_body_without_any_charset_is_read_as_utf8() -> None:
    p = parse("eight_bit_no_charset.eml")
    assert p.body_excerpt == "Déjà vu — même café." and p.subject == "Déjà vu"
    assert p.problems == ()


def test_encoded_words_split_mid_character_and_quoted_encoded_names() -> None:
    p = parse("split_encoded_words.eml")
    assert p.from_name == "Éloña Martín" and p.from_addr == "elona@example.es"
    assert p.subject == "✈️ Flight ✓ confirmed"
    assert p.to_addrs == ("andre@example.fr", "aroy@netskope.com")
    assert p.to_display == 'André <andre@example.fr>, "Roy, Alex" <aroy@netskope.com>'
    assert p.date == datetime(2026, 11, 24, 13, 45, tzinfo=UTC)


@pytest.mark.parametrize(
    ("raw", "text"),
    [
        (None, ""),
        ("", ""),
        ("  plain   text\r\n\tfolded ", "plain text folded"),
        ("=?UTF-8?B?w6lsw6h2ZQ==?=", "élève"),
        ("=?utf-8?q?caf=C3=A9_cr=C3=A8me?=", "café crème"),
        ("=?ISO-8859-1?Q?Andr=E9?= Roy", "André Roy"),
        ("=?windows-1252?Q?=93quoted=94_=80?=", "“quoted” €"),
        ("=?iso-8859-1?q?a?= =?iso-8859-1?q?b?=", "ab"),  # space between words dropped
        ("=?utf-8?q?a?= b =?utf-8?q?c?=", "a b c"),
        ("=?utf-8*en?q?lang?=", "lang"),  # RFC 2231 language suffix
        ("=?x-unknown?q?Caf=E9?=", "Caf\ufffd"),
        ("=?utf-8?b?w6k?=", "é"),  # padding missing
        ("=?utf-8?b?not base64!?=", "=?utf-8?b?not base64!?="),  # shown as written
        ("=?utf-8?q?unterminated", "=?utf-8?q?unterminated"),
        ("a\x00b", "ab"),
    ],
)
def test_decode_header_text(raw: str | None, text: str) -> None:
    assert decode_header_text(raw) == text


def test_decode_header_text_iso_2022_jp() -> None:
    word = base64.b64encode("会議の件".encode("iso2022_jp")).decode()
    assert decode_header_text(f"=?ISO-2022-JP?B?{word}?=") == "会議の件"


def test_iso_2022_jp_body_is_not_mistaken_for_ascii() -> None:
    raw = (
        b"Subject: x\r\nContent-Type: text/plain; charset=iso-2022-jp\r\n\r\n"
        + "アレックスさん、こんにちは".encode("iso2022_jp")
    )
    assert parse_message(raw).body_excerpt == "アレックスさん、こんにちは"


# ----------------------------------------------------------- missing and truncated


def test_missing_from_and_date_and_a_commented_message_id() -> None:
    p = parse("no_from_no_date.eml")
    assert p.from_addr is None and p.from_name is None and p.date is None
    assert p.message_id == "orphan@example.org"
    assert p.body_excerpt == "Nobody sent this." and p.problems == ()


def test_from_without_an_address_keeps_the_name() -> None:
    p = parse_message(b"From: Mail Delivery System\r\n\r\nbounced")
    assert p.from_addr is None and p.from_name == "Mail Delivery System"


def test_truncated_multipart_mid_base64_still_yields_the_text() -> None:
    p = parse("truncated.eml")
    assert p.body_excerpt == "Hello world, this is a truncated mes"
    assert p.problems == ()  # a cut-off tail is expected from the 64 KiB fetch


def test_truncated_base64_cut_inside_a_utf8_character() -> None:
    p = parse("truncated_single_base64.eml")
    assert p.body_excerpt.startswith("Résumé attached. Résumé attached.")
    assert "\ufffd" not in p.body_excerpt and "Ã" not in p.body_excerpt
    assert p.problems == ()


def test_truncated_before_any_text_says_why_the_excerpt_is_empty() -> None:
    p = parse("truncated_before_text.eml")
    assert p.body_excerpt == "" and p.has_attachments
    assert p.problems == ("no readable text before the message was cut off (partial fetch?)",)


def test_no_blank_line_after_the_headers() -> None:
    p = parse_message(b"Subject: hi\r\nFrom: a@b.example\r\nthis line starts the body\r\n")
    assert p.subject == "hi" and p.from_addr == "a@b.example"
    assert p.body_excerpt == "this line starts the body"
    assert p.problems == ("no blank line between header and body",)


def test_headers_only_and_empty_input() -> None:
    assert parse_message(b"Subject: only headers\r\n") == ParsedMessage(subject="only headers")
    assert parse_message(b"") == ParsedMessage()


# ------------------------------------------------------------------- Postgres safety


def test_nul_bytes_never_reach_postgres() -> None:
    p = parse("nul_bytes.eml")
    assert p.subject == "zerobyte" and p.from_name == "Nul Sender"
    assert p.body_excerpt == "rawnul and encodednul"  # raw NUL and QP-encoded =00


def test_codecs_that_produce_lone_surrogates_are_made_storable() -> None:
    raw = b"Subject: =?utf-7?q?+2D0-x?=\r\nContent-Type: text/plain; charset=utf-7\r\n\r\n+2D0-y"
    p = parse_message(raw)
    p.subject.encode("utf-8")
    p.body_excerpt.encode("utf-8")
    assert p.body_excerpt.endswith("y")


@pytest.mark.parametrize("label", ["unicode_escape", "raw_unicode_escape", "undefined", "idna"])
def test_codecs_that_are_not_charsets_count_as_unknown(label: str) -> None:
    raw = f"Content-Type: text/plain; charset={label}\r\n\r\n".encode() + b"\\ud800 caf\xe9"
    p = parse_message(raw)
    p.body_excerpt.encode("utf-8")
    assert any("unknown charset" in x for x in p.problems)


# ------------------------------------------------------------------ excerpt details


def test_message_ids_with_and_without_brackets() -> None:
    assert parse_message(b"Message-ID: <a.b@c>\r\n\r\n").message_id == "a.b@c"
    assert parse_message(b"Message-ID:   bare@c  \r\n\r\n").message_id == "bare@c"
    assert parse_message(b"Message-ID: <>\r\n\r\n").message_id is None
    p = parse_message(
        b"In-Reply-To: <x@y> (Bob's message)\r\nReferences: <a@b> <x@y> <a@b>\r\n\r\n"
    )
    assert p.in_reply_to == "x@y" and p.references == ("a@b", "x@y")


def test_excerpt_is_limited_and_whitespace_collapsed() -> None:
    body = ("word   \t word\u00a0 " * 400 + "\n\n\n\n\nend").encode()
    p = parse_message(b"Content-Type: text/plain; charset=utf-8\r\n\r\n" + body, excerpt_chars=50)
    assert p.body_excerpt == "word word word word word word word word word word"
    assert parse_message(b"\r\nbody", excerpt_chars=0).body_excerpt == ""


def test_long_html_needs_more_than_the_first_guess_of_markup() -> None:
    padding = '<div style="' + "x" * 20000 + '"></div>'
    html = f"<html><body>{padding}<p>{'text ' * 1000}</p></body></html>".encode()
    p = parse_message(b"Content-Type: text/html\r\n\r\n" + html, excerpt_chars=100)
    assert p.body_excerpt == ("text " * 20).strip()


def test_newsletter_padding_characters_are_dropped() -> None:
    body = "Preview\u200c \u200c \u034f\u00ad \ufeffText".encode()
    p = parse_message(b"Content-Type: text/plain; charset=utf-8\r\n\r\n" + body)
    assert p.body_excerpt == "Preview Text"


@pytest.mark.parametrize(
    ("html", "text"),
    [
        ("<p>a&nbsp;&lt;b&gt;</p><br><div>c</div>", "a <b>\n\nc"),
        ("<P>Upper</P><BR/>case<Br>tags", "Upper\n\ncase\ntags"),
        # Cells are spaced; a stray <td> outside a table is no cell in HTML5.
        ("<table><tr><td>x</td><td>y</td></tr></table>", "x y"),
        ("<td>x</td><td>y</td>", "xy"),
        # A comment is nothing at all, as a browser shows it (not a space).
        ("a<!-- hidden -->b<!--[if mso]>outlook<![endif]-->c", "abc"),
        ("<script>var a = '<p>';</script>shown<style>p{}</style>", "shown"),
        ("<head><title>t</title></head><body>body</body>", "body"),
        ("<head><style>x</style>no closing head <p>body", "no closing head\nbody"),
        ("line\none\n\n\ntwo", "line one two"),  # source newlines are spaces in HTML
        ("&#169; &copy; &#x20AC; &bogus; &amp;amp;", "© © € &bogus; &amp;"),
        ("cut off <a href='x", "cut off"),
        ("<header>kept</header>", "kept"),
        # A style or title left open does not swallow the page that follows.
        ("<body><style>p { color: red }<p>Hello Alex</p></body>", "Hello Alex"),
        ("<title>Update <p>body text", "body text"),
        ("<style><!-- p {} --></style><p>ok</p>", "ok"),
        ("<p>a < b and c > d</p>", "a < b and c > d"),
    ],
)
def test_html_to_text(html: str, text: str) -> None:
    assert html_to_text(html) == text


# ------------------------------------------------- "mentions you" over the whole message

ME = Identity("alex.roy@example.com", "Alex Roy", ("aroy@example.com",))


def test_without_an_identity_nothing_is_decided() -> None:
    assert parse("qp_latin1.eml").mentions_you is None  # "Bonjour Alex" in the body


def test_rfc2231_names_are_decoded_and_count_as_the_message_s_text() -> None:
    raw = load("rfc2231_attachment_names.eml")
    p = parse_message(raw, identity=Identity("z@x.example", "Zoë Ørsted"))
    # filename*0*=iso-8859-1'fr'Re%E7u%20de%20; filename*1*=Zo%EB%20%D8rsted; filename*2=".txt"
    assert p.mentions_you is True and p.has_attachments
    assert p.body_excerpt == "Two documents were scanned."  # attachments stay out of it
    # The base64 HTML attachment (name="scan 2.html") is read too.
    assert parse_message(raw, identity=Identity("p@x.example", "Second Page")).mentions_you
    assert parse_message(raw, identity=Identity("n@x.example", "Nobody Here")).mentions_you is False


def test_a_forwarded_message_counts_but_stays_out_of_the_excerpt() -> None:
    inner = b"From: a@b.example\r\nSubject: notes for Alex\r\n\r\nnothing here\r\n"
    raw = (
        b"Content-Type: multipart/mixed; boundary=o\r\n\r\n--o\r\n"
        b"Content-Type: text/plain\r\n\r\nsee attached\r\n--o\r\n"
        b"Content-Type: message/rfc822\r\n\r\n" + inner + b"--o--\r\n"
    )
    p = parse_message(raw, identity=ME)
    assert p.mentions_you is True and p.body_excerpt == "see attached" and p.has_attachments


def test_parts_left_unread_make_the_verdict_unknown_not_no() -> None:
    parts = b"".join(b"--b\r\nContent-Type: text/plain\r\n\r\nfiller\r\n" for _ in range(250))
    raw = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n" + parts + b"--b--\r\n"
    assert parse_message(raw, identity=ME).mentions_you is None
    named = raw.replace(b"filler", b"Hi Alex", 1)
    assert parse_message(named, identity=ME).mentions_you is True


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"<p>Thanks, Al<b>ex</b>!</p>", True),  # a name split by inline markup
        (b"<p>Hello</p><p>Roy</p>", True),
        (b"<p>Ren&#233; and <!-- Alex --> friends</p>", True),  # comments count (safe side)
        (b'<a href="mailto:aroy@example.com">write to us</a>', True),  # attribute values too
        (b"<p>Alexander and royalty</p>", False),
    ],
)
def test_html_is_read_as_rendered_text_and_as_source(body: bytes, expected: bool) -> None:
    raw = b"Content-Type: text/html; charset=utf-8\r\n\r\n" + body
    assert parse_message(raw, identity=ME).mentions_you is expected


def test_the_mention_check_reads_past_the_excerpt() -> None:
    body = b"word " * 10_000 + b"\r\nregards, alex\r\n"
    raw = b"Content-Type: text/plain\r\n\r\n" + body
    p = parse_message(raw, identity=ME)
    assert p.mentions_you is True and "alex" not in p.body_excerpt


# ---------------------------------------------------------------- property tests


def assert_storable(p: ParsedMessage) -> None:
    """What the mirror insert needs: Postgres-safe text and lower-case unique addresses."""
    texts = [p.subject, p.body_excerpt, p.to_display, p.cc_display, *p.problems, *p.references]
    texts += [p.from_name or "", p.from_addr or "", p.message_id or "", p.in_reply_to or ""]
    texts += [*p.to_addrs, *p.cc_addrs, p.reply_to or "", p.list_id or "", p.list_unsubscribe or ""]
    for text in texts:
        assert "\x00" not in text
        text.encode("utf-8")  # no lone surrogates
    for addrs in (p.to_addrs, p.cc_addrs):
        assert len(set(addrs)) == len(addrs)
        assert all(a == a.lower() and "@" in a for a in addrs)
    assert p.date is None or p.date.tzinfo is not None
    assert len(p.body_excerpt) <= 2000


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=3000))
def test_parse_never_raises_on_arbitrary_bytes(raw: bytes) -> None:
    assert_storable(parse_message(raw))


MIME_TOKENS = [
    b"\r\n",
    b"\n",
    b"\r\n\r\n",
    b" ",
    b"\t",
    b"--b",
    b"--b--",
    b"Content-Type: multipart/mixed; boundary=b\r\n",
    b'Content-Type: multipart/alternative; boundary="b"\r\n',
    b"Content-Type: text/html; charset=x-unknown\r\n",
    b"Content-Type: text/plain; charset=utf-7\r\n",
    b"Content-Type: text/calendar\r\n",
    b"Content-Transfer-Encoding: base64\r\n",
    b"Content-Transfer-Encoding: quoted-printable\r\n",
    b"Content-Disposition: attachment\r\n",
    b'From: "Roy, Alex" <A@B.c>, ',
    b"To: team: x@y;, ",
    b"Subject: =?utf-8?B?w6k=?= ",
    b"=?iso-2022-jp?q?=1B$B?=",
    b"Date: Tue, 17 Nov 2026 08:00:00 +9999\r\n",
    b"<p>",
    b"<script>",
    b"&#xD800;",
    b"\x00",
    b"\xc3",
    b"\xff",
    b"=C3=",
    b"SGVsbG8",
    b"(",
    b'"',
    b"<",
]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(MIME_TOKENS) | st.binary(max_size=8), max_size=60))
def test_parse_never_raises_on_mime_shaped_junk(tokens: list[bytes]) -> None:
    assert_storable(parse_message(b"".join(tokens)))


@st.composite
def mangled_fixture(draw: st.DrawFn) -> bytes:
    raw = bytearray(load(draw(st.sampled_from(FIXTURE_NAMES))))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(raw)))
        action = draw(st.sampled_from(["cut", "insert", "delete", "flip", "duplicate"]))
        if action == "cut":
            del raw[at:]
        elif action == "insert":
            raw[at:at] = draw(st.binary(min_size=1, max_size=40) | st.sampled_from(MIME_TOKENS))
        elif action == "delete":
            del raw[at : at + draw(st.integers(1, 200))]
        elif action == "flip" and at < len(raw):
            raw[at] ^= draw(st.integers(1, 255))
        elif action == "duplicate":
            raw[at:at] = raw[at : at + draw(st.integers(1, 300))]
    return bytes(raw)


@settings(max_examples=500, deadline=None)
@given(mangled_fixture())
def test_parse_never_raises_on_mangled_fixtures(raw: bytes) -> None:
    assert_storable(parse_message(raw))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mangled_fixture() | st.lists(st.sampled_from(MIME_TOKENS), max_size=60).map(b"".join))
def test_the_mention_check_never_raises_either(raw: bytes) -> None:
    p = parse_message(raw, identity=ME)
    assert_storable(p)
    assert p.mentions_you in (True, False, None)


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_every_prefix_of_every_fixture_parses(name: str) -> None:
    """What the 64 KiB partial fetch does to a big message, at every cut point."""
    raw = load(name)
    for cut in range(0, len(raw) + 1, 7):
        assert_storable(parse_message(raw[:cut]))


# ------------------------------------------------- agreement with the stdlib mailer

WORD = st.text(
    st.characters(categories=("L", "N", "P", "S"), exclude_characters="\x85"),
    min_size=1,
    max_size=12,
)
LINE = st.lists(WORD, min_size=1, max_size=12).map(" ".join)
ADDRESS = st.from_regex(
    r"[a-z][a-z0-9]{0,5}(\.[a-z0-9]{1,4})?@[a-z]{1,8}\.(com|org|example)", fullmatch=True
)
DISPLAY = st.text(st.characters(categories=("L", "Zs")) | st.sampled_from(',."'), max_size=15)


@st.composite
def standard_message(draw: st.DrawFn) -> tuple[bytes, dict[str, object]]:
    """A message as Python's own mailer writes it, and what parsing must give back."""
    text = "\n".join(draw(st.lists(LINE, min_size=1, max_size=8)))
    subject = " ".join(draw(st.lists(WORD, min_size=1, max_size=6)))
    recipients = draw(st.lists(st.tuples(DISPLAY, ADDRESS), min_size=1, max_size=4))
    msg = EmailMessage(policy=SMTP)
    msg["From"] = Address(draw(DISPLAY), addr_spec=draw(ADDRESS))
    msg["To"] = [Address(name, addr_spec=addr) for name, addr in recipients]
    msg["Subject"] = subject
    encoding = draw(st.sampled_from(["base64", "quoted-printable", "8bit", None]))
    charset = "utf-8"
    if draw(st.booleans()):
        try:
            text.encode("iso-8859-1")
            charset = "iso-8859-1"
        except UnicodeEncodeError:
            pass
    msg.set_content(text, charset=charset, cte=encoding)
    html = draw(st.booleans())
    if html:
        msg.add_alternative(f"<p>{escape(text)}</p>", subtype="html")
    attached = draw(st.booleans())
    if attached:
        msg.add_attachment(b"%PDF-1.4 secret", maintype="application", subtype="pdf")
    raw = msg.as_bytes()
    # Compared with the stdlib's own reading, not `subject`: when folding, its
    # writer can turn the space between two words into the fold between two
    # encoded words, which RFC 2047 (and its reader) then drops.
    reread = email.message_from_bytes(raw, policy=email.policy.default)
    # Its writer can also fold an address itself into an encoded word
    # (`<a00.0@a` then `=?utf-8?q?aaaaaaa=2Ecom=3E=2C?=`): a header no reader
    # can put back (RFC 2047 §5 allows none inside an addr-spec; its own reads
    # `a00.0@a`), so not a message it writes correctly. Such draws are dropped.
    intended = tuple(dict.fromkeys(addr for _, addr in recipients))
    assume(tuple(dict.fromkeys(a.addr_spec for a in reread["to"].addresses)) == intended)
    expected = {
        "subject": " ".join(str(reread["subject"]).split()),
        "to": intended,
        "excerpt": text[:2000].rstrip(),
        "attachments": attached,
    }
    return raw, expected


@pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning")
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(standard_message())
def test_messages_written_by_the_stdlib_come_back_intact(
    case: tuple[bytes, dict[str, object]],
) -> None:
    """The MIME walk is hand-written for speed; whatever Python's own mailer
    produces (encodings, charsets, nesting, folding) must read back exactly."""
    raw, expected = case
    p = parse_message(raw)
    assert p.subject == expected["subject"]
    assert p.to_addrs == expected["to"]
    assert p.body_excerpt == expected["excerpt"]
    assert p.has_attachments is expected["attachments"]
    assert p.problems == ()
