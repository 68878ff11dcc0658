"""Property: whatever a message looks like, /clean never proposes one where the
person is in To/CC or is mentioned (name or address) anywhere in it: subject,
any text part, HTML, text attachments, forwarded messages.

The oracle is independent of the code under test: Python's own email parser
decodes every part, and a plain regex looks for the person in it.
"""

from __future__ import annotations

import email
import email.policy
import html
import re
from email.message import EmailMessage
from email.policy import SMTP

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.mail.clean import assess_for_clean
from app.mail.identity import Identity
from executor.parsing import RawMessage, parse_raw
from tests.unit.test_clean import Row

ME = Identity(
    email="alex.roy@example.com",
    name="Alex Roy",
    aliases=("aroy@example.com", "a.roy@corp.example"),
)
MINE = ["alex.roy@example.com", "ALEX.ROY@Example.com", "aroy@example.com", "A.Roy@corp.example"]
OTHERS = [
    "news@list.example",
    "team@corp.example",
    "bob@example.org",
    "alexander@example.org",
    "roya@x.example",
]
NAMES = ["", "Alex Roy", "Roy, Alex", "Team", "Ünïcödé Nàme", 'Quote "Q" Person']


@st.composite
def address(draw: st.DrawFn) -> str:
    addr = draw(st.sampled_from(MINE + OTHERS))
    name = draw(st.sampled_from(NAMES))
    if not name:
        return addr
    return f'"{name}" <{addr}>' if any(c in name for c in ',"') else f"{name} <{addr}>"


BODY_WORDS = [
    "hello",
    "unsubscribe",
    "Alex",
    "alex",
    "ALEX",
    "Alexander",
    "Roy",
    "royalty",
    "sale",
    "weekly",
    "digest",
    "meeting",
    "Hi",
    ",",
    ".",
    "\n",
    "—",
]


def words(draw: st.DrawFn) -> str:
    return " ".join(draw(st.lists(st.sampled_from(BODY_WORDS), max_size=30)))


def as_html(draw: st.DrawFn, text: str) -> str:
    escaped = html.escape(text)
    if draw(st.booleans()):  # names written as character references
        escaped = escaped.replace("A", "&#65;").replace("o", "&#x6f;")
    if draw(st.booleans()):  # a style left open before the text
        return f"<html><body><style>p {{ color: red }}<p>{escaped}</p></body></html>"
    return f"<p>{escaped}</p>"


@st.composite
def message(draw: st.DrawFn) -> bytes:
    msg = EmailMessage(policy=SMTP)
    msg["From"] = draw(
        st.sampled_from(
            [
                "noreply@github.com",
                "News <newsletter@list.example>",
                "bob@example.org",
                "notifications@tracker.example",
            ]
        )
    )
    to = draw(st.lists(address(), min_size=0, max_size=3))
    cc = draw(st.lists(address(), min_size=0, max_size=2))
    if to:
        msg["To"] = ", ".join(to)
    if cc:
        msg["Cc"] = ", ".join(cc)
    msg["Subject"] = draw(
        st.sampled_from(["Weekly digest", "Your receipt", "Hi", "Sale: 20% off", "Für Alex"])
    )
    if draw(st.booleans()):
        msg["List-Unsubscribe"] = "<https://list.example/u>"
    if draw(st.booleans()):
        msg["List-Id"] = "<list.example>"
    if draw(st.booleans()):
        msg["Precedence"] = "bulk"
    body = words(draw)
    shape = draw(st.sampled_from(["plain", "alternative", "html"]))
    if shape == "html":
        msg.set_content(as_html(draw, body), subtype="html")
    else:
        msg.set_content(body)
        if shape == "alternative":
            msg.add_alternative(as_html(draw, words(draw)), subtype="html")
    if draw(st.booleans()):
        msg.add_attachment(words(draw).encode(), maintype="text", subtype="plain", filename="a.txt")
    if draw(st.booleans()):
        inner = EmailMessage(policy=SMTP)
        inner["Subject"] = draw(st.sampled_from(["minutes", "Alex's notes", "re: royalty"]))
        inner.set_content(words(draw))
        msg.add_attachment(inner)
    return msg.as_bytes()


MENTION = re.compile(
    r"(?<!\w)(alex|roy)(?!\w)|alex\.roy@example\.com|aroy@example\.com|a\.roy@corp\.example",
    re.IGNORECASE,
)


def everything_it_says(raw: bytes) -> list[str]:
    """Subject and every text part (forwarded messages' subjects too), decoded by
    the standard library; HTML with its character references unescaped."""
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    texts = [str(msg["subject"] or "")]
    for part in msg.walk():
        if part.get_content_type() == "message/rfc822":
            texts.append(str(part.get_payload(0)["subject"] or ""))
        elif part.get_content_maintype() == "text":
            content = part.get_content()
            texts.append(
                html.unescape(content) if part.get_content_subtype() == "html" else content
            )
    return texts


# EmailMessage draws MIME boundaries from `random`; that does not affect the property.
@pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning")
@settings(max_examples=400, deadline=None)
@given(message())
def test_no_candidate_ever_involves_the_person(raw: bytes) -> None:
    synced = RawMessage(1, (), None, len(raw), None, raw)
    [fetched], _ = parse_raw([synced], ME)
    p = fetched.parsed
    row = Row(
        p.from_addr,
        list(p.to_addrs),
        list(p.cc_addrs),
        p.subject,
        p.body_excerpt,
        [],
        p.list_unsubscribe,
        p.list_id,
        p.precedence,
        p.auto_submitted,
        fetched.mentions_you,
        fetched.mention_identity,
    )
    verdict = assess_for_clean(row, ME)
    if verdict.candidate:
        mine = {a.lower() for a in MINE}
        assert not mine & {a.lower() for a in p.to_addrs + p.cc_addrs}
        said = [t for t in everything_it_says(raw) if MENTION.search(t)]
        assert not said, said
    elif MENTION.search(" ".join(everything_it_says(raw))):
        assert verdict.direct
