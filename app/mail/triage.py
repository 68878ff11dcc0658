"""Priority triage: explainable, deterministic scores over the mirror.

Each category's score is a noisy-OR of the evidence for it, so every reason
adds a known amount and the strongest category wins; its score is the
confidence shown to the person, with the reasons behind it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import Protocol

from app.mail.clean import CleanVerdict, assess_with_signals, bulk_signals
from app.mail.identity import Identity
from app.mail.keywords import Keywords, fold
from app.quick_init import quick_init

CATEGORIES = ("action_required", "fyi", "newsletter", "notification", "cleanup")

QUESTION = re.compile(
    r"\?|\b(can you|could you|would you|will you|please|let me know|thoughts|"
    r"what do you think|are you able|do you have)\b",
    re.IGNORECASE,
)
DEADLINE = re.compile(
    r"\b(today|tonight|tomorrow|eod|end of (the )?day|deadline|due|asap|urgent|"
    r"by (mon|tues|wednes|thurs|fri|satur|sun)day|this week|before \d|by \d)\b",
    re.IGNORECASE,
)
MEETING = re.compile(
    r"zoom\.us/[jw]/|\bzoom\b|invitation:|meet\.google\.com|teams\.microsoft\.com|"
    r"\bcalendar invite\b|\bmeeting\b",
    re.IGNORECASE,
)
ZOOM = re.compile(r"zoom\.us/|\bzoom\b", re.IGNORECASE)
EXCERPT_READ = 1500  # what triage reads of the excerpt
# The same searches at C speed (app/mail/keywords.py): the regexes above stay the rules.
_QUESTION, _DEADLINE, _MEETING, _ZOOM = map(Keywords, (QUESTION, DEADLINE, MEETING, ZOOM))


class TriageInput(Protocol):
    from_addr: str | None
    to_addrs: list[str]
    cc_addrs: list[str]
    subject: str
    body_excerpt: str
    flags: list[str]
    date: datetime | None
    list_unsubscribe: str | None
    list_id: str | None
    precedence: str | None
    auto_submitted: str | None


@quick_init
@dataclass(frozen=True)
class Triage:
    category: str
    confidence: float
    scores: dict[str, float]
    reasons: list[str]


def _noisy_or(weights: Iterable[float]) -> float:
    remaining = 1.0
    for w in weights:
        remaining *= 1.0 - w
    return 1.0 - remaining


def _score(evidence: list[tuple[float, str]]) -> float:
    """`_noisy_or` of the evidence's weights (0.0 for none), without a
    generator per category."""
    remaining = 1.0
    for weight, _reason in evidence:
        remaining *= 1.0 - weight
    return 1.0 - remaining


def is_zoom(row: TriageInput) -> bool:
    return _ZOOM.search(row.subject or "") or _ZOOM.search(row.body_excerpt or "")


def _is_zoom(row: TriageInput, text: str, folded: str) -> bool:
    """`is_zoom(row)` reusing triage's text (subject, newline, the excerpt's
    first 1,500 characters) and its fold when that holds the whole excerpt:
    the newline is a word boundary as the end of a text is, and neither
    alternative of ZOOM can match across it."""
    if len(row.body_excerpt or "") <= EXCERPT_READ:
        return _ZOOM.search(text, folded)
    return is_zoom(row)


def is_today(row: TriageInput, now: datetime, tz: tzinfo) -> bool:
    return row.date is not None and row.date.astimezone(tz).date() == now.astimezone(tz).date()


def mentions_person(row: TriageInput, identity: Identity) -> bool:
    """The executor's whole-message verdict when it was decided for this
    identity (name or address anywhere, not only the excerpt); otherwise what
    the excerpt shows."""
    if getattr(row, "mention_identity", None) == identity.fingerprint:
        stored = getattr(row, "mentions_you", None)
        if stored is not None:
            return bool(stored)
    return identity.name_mentioned(row.body_excerpt or "")


def triage(row: TriageInput, identity: Identity, *, vip: frozenset[str] = frozenset()) -> Triage:
    return triage_and_verdict(row, identity, vip=vip)[0]


def triage_and_verdict(
    row: TriageInput, identity: Identity, *, vip: frozenset[str] = frozenset()
) -> tuple[Triage, CleanVerdict]:
    """The triage and the /clean verdict it weighs (`assess_for_clean(row,
    identity)`), worked out once for callers that store both."""
    triaged, verdict, _zoom = scores_of(row, identity, vip=vip)
    return triaged, verdict


def scores_of(
    row: TriageInput, identity: Identity, *, vip: frozenset[str] = frozenset()
) -> tuple[Triage, CleanVerdict, bool]:
    """`triage_and_verdict` and `is_zoom(row)`: the scores a row stores, with
    its text folded once for every keyword search."""
    text = f"{row.subject or ''}\n{(row.body_excerpt or '')[:EXCERPT_READ]}"
    to_me = identity.is_recipient(row.to_addrs, ())
    cc_me = identity.is_recipient((), row.cc_addrs)
    named = mentions_person(row, identity)
    flags = set(row.flags or [])
    bulk = bulk_signals(row)
    sender = (row.from_addr or "").lower()
    evidence: dict[str, list[tuple[float, str]]] = {c: [] for c in CATEGORIES}
    act = evidence["action_required"]
    if to_me:
        act.append((0.4, "addressed to you"))
    if named:
        act.append((0.15, "mentions your name"))
    folded = fold(text)
    if _QUESTION.search(text, folded):
        act.append((0.35, "asks you something"))
    if _DEADLINE.search(text, folded):
        act.append((0.4, "has a deadline"))
    if (to_me or cc_me) and _MEETING.search(text, folded):
        act.append((0.25, "meeting / Zoom"))
    if "\\Flagged" in flags:
        act.append((0.4, "you flagged it"))
    if sender and sender in vip:
        act.append((0.3, "VIP sender"))
    fyi = evidence["fyi"]
    if cc_me:
        fyi.append((0.55, "you are in CC"))
    if to_me:
        fyi.append((0.3, "addressed to you"))
    if named and not to_me:
        fyi.append((0.3, "mentions your name"))
    if "list_unsubscribe" in bulk or "list_id" in bulk:
        evidence["newsletter"].append((0.6, "mailing list / unsubscribe link"))
    if "newsletter_words" in bulk:
        evidence["newsletter"].append((0.35, "newsletter wording"))
    if "precedence_bulk" in bulk:
        evidence["newsletter"].append((0.2, "bulk precedence"))
    for signal, weight, reason in (
        ("noreply_sender", 0.55, "no-reply sender"),
        ("auto_submitted", 0.45, "automated message"),
        ("notification_domain", 0.35, "notification service"),
    ):
        if signal in bulk:
            evidence["notification"].append((weight, reason))
    verdict = assess_with_signals(row, identity, bulk, recipient=to_me or cc_me)
    if verdict.candidate:
        evidence["cleanup"].append((verdict.confidence * 0.85, "safe to clean"))

    scores = {c: _score(ev) for c, ev in evidence.items()}
    dampen = 1.0
    if "\\Answered" in flags:
        dampen *= 0.45
    if bulk and not to_me and not cc_me:
        dampen *= 0.25
    scores["action_required"] *= dampen
    # The highest score (to 6 places) wins; on a tie, the category listed first.
    category, top = CATEGORIES[0], round(scores[CATEGORIES[0]], 6)
    for c in CATEGORIES[1:]:
        rounded = round(scores[c], 6)
        if rounded > top:
            category, top = c, rounded
    reasons = [r for _, r in sorted(evidence[category], key=lambda e: -e[0])]
    if category == "action_required" and "\\Answered" in flags:
        reasons.append("already replied (lowered)")
    if scores[category] == 0:
        category, reasons = "fyi", ["nothing stands out"]
    return (
        Triage(
            category=category,
            confidence=round(scores[category], 3),
            scores={c: round(s, 3) for c, s in scores.items()},
            reasons=reasons,
        ),
        verdict,
        _is_zoom(row, text, folded),
    )
