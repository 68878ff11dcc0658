"""Triage scores: deterministic, explainable, each signal pulling its weight."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from app.mail.identity import Identity
from app.mail.triage import CATEGORIES, triage

ME = Identity("alex.roy@example.com", "Alex Roy", ("aroy@example.com",))


@dataclass
class Row:
    from_addr: str = "bob@example.org"
    to_addrs: list[str] = field(default_factory=lambda: ["alex.roy@example.com"])
    cc_addrs: list[str] = field(default_factory=list)
    subject: str = "Hello"
    body_excerpt: str = "Just saying hi."
    flags: list[str] = field(default_factory=list)
    date: datetime | None = datetime(2026, 11, 20, 9, tzinfo=UTC)
    list_unsubscribe: str | None = None
    list_id: str | None = None
    precedence: str | None = None
    auto_submitted: str | None = None


def test_direct_question_with_deadline_is_action_required_with_reasons() -> None:
    t = triage(Row(subject="Budget", body_excerpt="Could you review the budget by Friday?"), ME)
    assert t.category == "action_required"
    assert t.confidence >= 0.75
    assert (
        "addressed to you" in t.reasons
        and "has a deadline" in t.reasons
        and "asks you something" in t.reasons
    )


def test_each_signal_raises_the_score() -> None:
    base = triage(Row(), ME).scores["action_required"]
    asks = triage(Row(body_excerpt="Can you send it?"), ME).scores["action_required"]
    urgent = triage(Row(body_excerpt="Can you send it today?"), ME).scores["action_required"]
    flagged = triage(Row(body_excerpt="Can you send it today?", flags=["\\Flagged"]), ME).scores[
        "action_required"
    ]
    assert base < asks < urgent < flagged


def test_already_replied_is_lowered() -> None:
    open_q = triage(Row(body_excerpt="Can you send it today?"), ME)
    replied = triage(Row(body_excerpt="Can you send it today?", flags=["\\Answered"]), ME)
    assert replied.scores["action_required"] < open_q.scores["action_required"]


def test_cc_is_fyi() -> None:
    t = triage(
        Row(
            to_addrs=["team@example.org"],
            cc_addrs=["alex.roy@example.com"],
            body_excerpt="FYI the deck is up.",
        ),
        ME,
    )
    assert t.category == "fyi" and "you are in CC" in t.reasons


def test_bulk_mail_is_newsletter_notification_or_cleanup_never_action() -> None:
    newsletter = Row(
        from_addr="news@list.example",
        to_addrs=["subscribers@list.example"],
        subject="Weekly digest: can you believe it?",
        list_unsubscribe="<https://u>",
        list_id="<list.example>",
        body_excerpt="Sale ends today! Unsubscribe here.",
    )
    t = triage(newsletter, ME)
    assert t.category in ("newsletter", "cleanup")
    assert t.scores["action_required"] < 0.3
    note = triage(
        Row(
            from_addr="noreply@github.com",
            to_addrs=["repo@noreply.github.com"],
            auto_submitted="auto-generated",
            body_excerpt="A new comment.",
        ),
        ME,
    )
    assert note.category in ("notification", "cleanup")


def test_scores_are_deterministic_and_bounded() -> None:
    rows = [Row(), Row(body_excerpt="today? asap"), Row(cc_addrs=["aroy@example.com"])]
    for row in rows:
        a, b = triage(row, ME), triage(row, ME)
        assert a == b
        assert set(a.scores) == set(CATEGORIES)
        assert all(0.0 <= s <= 1.0 for s in a.scores.values())
