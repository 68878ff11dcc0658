"""The mention check's shortcut for HTML (app/mail/mime.py `_leaf_rendered_for`):
a page whose words cannot mention the person is not rendered, and the verdict
is what rendering it would have given, hostile pages included."""

from __future__ import annotations

import html

from hypothesis import example, given, settings
from hypothesis import strategies as st

from app.mail import mime
from app.mail.identity import Identity

IDENTITIES = [
    Identity("alex.roy@example.com", "Alex Roy", ("aroy@example.com",)),
    Identity("jn@x.example", "José Ñúñez"),
    Identity("al@x.example", "Al Li"),  # only the full name counts
    Identity("ssa@x.example", "Straße Kai"),
    Identity("k@x.example", "山田 太郎"),  # cores outside ASCII: never skipped
]
HTML_PIECES = ["Alex", "ALEX", "Al", "ex", "Roy", "Li", "Jos", "é", "e\u0301", "Ñúñez", "Kai"]
HTML_PIECES += ["STRASSE", "Stra", "ße", "ſ", "山田", "太郎", "aroy@example.com", "aroy", "@"]
HTML_PIECES += ["<b>", "</b>", "<p>", "</p>", "<br>", "<td>", "<div>", "<li>", "<img>", "<hr>"]
HTML_PIECES += ["<script>", "</script>", "<style>", "</style>", "<title>", "<textarea>"]
HTML_PIECES += ["<!--", "-->", "<![CDATA[", "]]>", "<svg>", "</svg>", "<xmp>", "<plaintext>"]
HTML_PIECES += ["&amp;", "&#97;", "&#x41;", "&lt;", "&gt;", "&nbsp;", "&shy;", "\u200b", "\u00ad"]
HTML_PIECES += [" ", "\n", "\r", "\t", "\x00", "\x0c", "x", "<", ">", '"', "'", "=", "/"]
pages = st.lists(st.sampled_from(HTML_PIECES) | st.text(max_size=3), max_size=14).map("".join)


@settings(max_examples=3000, deadline=None)
@given(pages)
@example("Al<p>ex")
@example("<p>Al</p><p>Li</p>")
@example("Al<b></b> Li")
@example("al<script>x</script>ex")
@example("<svg><![CDATA[Al]]>ex</svg>")
@example("Stra<b>ße</b>")
@example("Al\x00ex")
def test_a_page_is_skipped_only_when_rendering_it_finds_no_mention(page: str) -> None:
    parsed = mime._html_page(page)
    words = mime._page_words(parsed) if parsed is not None else ""
    rendered = mime._render_html(page)
    for identity in IDENTITIES:
        if not identity.could_be_mentioned_in(words):
            assert not identity.mentioned_in(rendered)


def _message(page: str) -> bytes:
    return (
        "From: a@x.example\r\nTo: b@x.example\r\nSubject: hello\r\n"
        'Content-Type: multipart/alternative; boundary="b"\r\n\r\n'
        "--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nhello\r\n"
        "--b\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
        f"{page}\r\n--b--\r\n"
    ).encode("utf-8", "surrogatepass")


@settings(max_examples=500, deadline=None)
@given(pages.filter(lambda p: "--b" not in p and not any("\ud800" <= c <= "\udfff" for c in p)))
@example("<p>Al</p><p>Li</p>")
@example("Al<p>Li")
def test_the_verdict_is_what_rendering_every_page_gives(page: str) -> None:
    for identity in IDENTITIES:
        parsed = mime.parse_message(_message(page), identity=identity)
        expected = identity.mentioned_in_any(
            ["hello", "hello", mime._render_html(page), html.unescape(page)]
        )
        assert parsed.mentions_you is expected


def test_a_page_that_cannot_name_the_person_is_not_rendered(monkeypatch) -> None:
    renders: list[str] = []
    render = mime._render_page
    monkeypatch.setattr(mime, "_render_page", lambda page: renders.append("") or render(page))
    me = IDENTITIES[0]
    assert (
        mime.parse_message(_message("<p>Hi Sam</p><p>See you</p>"), identity=me).mentions_you
        is False
    )
    assert renders == []
    assert mime.parse_message(_message("<p>Hi Al</p><p>ex</p>"), identity=me).mentions_you is False
    assert renders == [""]  # "alex" is in the words: rendered, and the breaks keep it apart
