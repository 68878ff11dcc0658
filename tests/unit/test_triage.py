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


# ---------------------------------------------------------------------------
# Scores computed at ingest (app/mail/scores.py) and the whole-message verdict.


@dataclass
class SyncedRow(Row):
    mentions_you: bool | None = None
    mention_identity: str | None = None


def test_a_name_past_the_excerpt_counts_when_the_ingest_verdict_is_for_this_identity() -> None:
    cc = ["team@example.org"]
    far = SyncedRow(to_addrs=cc, mentions_you=True, mention_identity=ME.fingerprint)
    assert "mentions your name" in triage(far, ME).reasons
    other = Identity("carol@project.example", "Carol Diaz")
    stale = SyncedRow(to_addrs=cc, mentions_you=True, mention_identity=other.fingerprint)
    assert "mentions your name" not in triage(stale, ME).reasons  # another identity's verdict
    said_no = SyncedRow(
        to_addrs=cc, body_excerpt="Hi Alex Roy", mentions_you=False, mention_identity="old"
    )
    assert "mentions your name" in triage(said_no, ME).reasons  # what the row shows still counts


def test_stored_scores_are_the_live_verdicts_and_deterministic() -> None:
    from app.mail.clean import assess_for_clean
    from app.mail.scores import SCORES_VERSION, score_row

    bulk = SyncedRow(
        from_addr="news@shop.example",
        to_addrs=["customers@shop.example"],
        subject="Weekly deals",
        body_excerpt="Big sale. Unsubscribe any time.",
        list_unsubscribe="<https://shop.example/u>",
        list_id="<deals.shop.example>",
        mentions_you=False,
        mention_identity=ME.fingerprint,
    )
    s = score_row(bulk, ME)
    t, v = triage(bulk, ME), assess_for_clean(bulk, ME)
    assert (s.triage_category, s.triage_confidence, s.triage_reasons) == (
        t.category,
        t.confidence,
        t.reasons,
    )
    assert s.clean_candidate and s.clean_confidence == v.confidence and s.clean_excluded is None
    assert s.scores_version == SCORES_VERSION and s == score_row(bulk, ME)
    unchecked = score_row(SyncedRow(**{**bulk.__dict__, "mention_identity": None}), ME)
    assert not unchecked.clean_candidate and unchecked.clean_direct  # fail safe
    assert unchecked.columns()["clean_excluded"]


def test_today_is_the_local_calendar_day_even_across_a_dst_change() -> None:
    from zoneinfo import ZoneInfo

    from app.graph.tools.triage import day_bounds

    ny = ZoneInfo("America/New_York")
    start, end = day_bounds(datetime(2026, 11, 1, 15, tzinfo=UTC), ny)  # DST ends that day
    assert start.isoformat() == "2026-11-01T00:00:00-04:00"
    assert end.isoformat() == "2026-11-02T00:00:00-05:00"
    assert (end.astimezone(UTC) - start.astimezone(UTC)).total_seconds() == 25 * 3600
    late = day_bounds(datetime(2026, 11, 20, 3, tzinfo=UTC), ny)  # 22:00 the day before
    assert late[0].day == 19
