"""Golden cases for /clean discovery: what may and may never be proposed."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from app.mail.clean import assess_for_clean
from app.mail.identity import Identity
from app.mail.mime import parse_message

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "clean"
ME = Identity(
    email="alex.roy@example.com", name="Alex Roy", aliases=("aroy@example.com", "aroy@netskope.com")
)


@dataclass
class Row:
    from_addr: str | None
    to_addrs: list[str]
    cc_addrs: list[str]
    subject: str
    body_excerpt: str
    flags: list[str] = field(default_factory=list)
    list_unsubscribe: str | None = None
    list_id: str | None = None
    precedence: str | None = None
    auto_submitted: str | None = None


def load(name: str, flags: list[str] | None = None) -> Row:
    p = parse_message((FIXTURES / name).read_bytes())
    return Row(
        p.from_addr,
        list(p.to_addrs),
        list(p.cc_addrs),
        p.subject,
        p.body_excerpt,
        flags or [],
        p.list_unsubscribe,
        p.list_id,
        p.precedence,
        p.auto_submitted,
    )


@pytest.mark.parametrize(
    ("fixture", "why"),
    [
        ("to_user.eml", "To: the user"),
        ("cc_user.eml", "CC: the user"),
        ("to_alias.eml", "To: an alias"),
        ("display_name_comma.eml", '"Roy, Alex" <AROY@netskope.com> (the reported case)'),
        ("name_in_body.eml", "the user's name in the body"),
        ("newsletter_direct_to_user.eml", "a newsletter sent directly To the user"),
    ],
)
def test_direct_mail_is_never_a_candidate(fixture: str, why: str) -> None:
    verdict = assess_for_clean(load(fixture), ME)
    assert not verdict.candidate, why
    assert verdict.direct


@pytest.mark.parametrize("fixture", ["newsletter.eml", "list_bcc.eml"])
def test_bulk_mail_not_addressed_to_the_user_is_a_candidate(fixture: str) -> None:
    verdict = assess_for_clean(load(fixture), ME)
    assert verdict.candidate
    assert 0.5 <= verdict.confidence <= 1.0
    assert verdict.category == "newsletter"
    assert "list_unsubscribe" in verdict.signals or "list_id" in verdict.signals


def test_flagged_bulk_mail_is_left_alone() -> None:
    assert not assess_for_clean(load("newsletter.eml", flags=["\\Flagged"]), ME).candidate


def test_personal_mail_without_bulk_signals_is_not_a_candidate() -> None:
    row = Row("friend@example.org", ["someone@else.example"], [], "dinner", "see you at 8")
    verdict = assess_for_clean(row, ME)
    assert not verdict.candidate and not verdict.direct


def test_exclusion_outweighs_every_bulk_signal() -> None:
    row = Row(
        "noreply@github.com",
        ["ALEX.ROY@EXAMPLE.COM"],
        [],
        "weekly newsletter digest sale",
        "unsubscribe",
        [],
        "<https://u>",
        "<list>",
        "bulk",
        "auto-generated",
    )
    assert not assess_for_clean(row, ME).candidate
