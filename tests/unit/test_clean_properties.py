"""Property: whatever a message looks like, /clean never proposes one where the
person is in To/CC or is named in the body."""

from __future__ import annotations

import re
from email.message import EmailMessage
from email.policy import SMTP

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.mail.clean import assess_for_clean
from app.mail.identity import Identity
from app.mail.mime import parse_message
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
    msg["Subject"] = draw(st.sampled_from(["Weekly digest", "Your receipt", "Hi", "Sale: 20% off"]))
    if draw(st.booleans()):
        msg["List-Unsubscribe"] = "<https://list.example/u>"
    if draw(st.booleans()):
        msg["List-Id"] = "<list.example>"
    if draw(st.booleans()):
        msg["Precedence"] = "bulk"
    body = " ".join(draw(st.lists(st.sampled_from(BODY_WORDS), max_size=30)))
    if draw(st.booleans()):
        msg.set_content(body)
    else:
        msg.set_content(body)
        msg.add_alternative(f"<p>{body}</p>", subtype="html")
    return msg.as_bytes()


# EmailMessage draws MIME boundaries from `random`; that does not affect the property.
@pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning")
@settings(max_examples=400, deadline=None)
@given(message())
def test_no_candidate_ever_involves_the_person(raw: bytes) -> None:
    p = parse_message(raw)
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
    )
    verdict = assess_for_clean(row, ME)
    if verdict.candidate:
        mine = {a.lower() for a in MINE}
        assert not mine & {a.lower() for a in p.to_addrs + p.cc_addrs}
        assert not re.search(r"(?<!\w)(alex|roy)(?!\w)", p.body_excerpt, re.IGNORECASE)
