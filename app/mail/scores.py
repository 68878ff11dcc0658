"""Scores computed once per message, at ingest, and stored on its mirror row.

Triage (category, confidence, reasons) and the `/clean` verdict (candidate?,
confidence, category, signals, why excluded) are pure functions of the row
and the identity (app/mail/triage.py, app/mail/clean.py). The executor calls
`score_row` when it writes a row, and the `rescore` job calls it again when
the rules or the identity change, so the web process only runs indexed SQL
(`ORDER BY triage_confidence DESC LIMIT n`) and never loops over the mailbox.

A stored score is current only when `scores_version == SCORES_VERSION` and the
row's `mention_identity` is the current identity's fingerprint. Anything else
is stale: never a `/clean` candidate (fail safe) and shown as stale in triage.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from app.mail.identity import Identity
from app.mail.triage import scores_of
from app.quick_init import quick_init

# Bump whenever a rule in triage.py or clean.py changes what a row scores:
# every stored score then reads as stale until the `rescore` job recomputes it.
SCORES_VERSION = 1


@quick_init
@dataclass(frozen=True)
class Scores:
    triage_category: str
    triage_confidence: float
    triage_reasons: list[str]
    triage_zoom: bool
    clean_candidate: bool
    clean_confidence: float
    clean_category: str
    clean_signals: list[str]
    clean_excluded: str | None
    clean_direct: bool  # excluded because it involves the person (SPEC §8)
    scores_version: int = SCORES_VERSION

    def columns(self) -> dict[str, Any]:
        """The emails columns these scores fill (names match 009_scores.sql)."""
        return {
            "triage_category": self.triage_category,
            "triage_confidence": self.triage_confidence,
            "triage_reasons": list(self.triage_reasons),
            "triage_zoom": self.triage_zoom,
            "clean_candidate": self.clean_candidate,
            "clean_confidence": self.clean_confidence,
            "clean_category": self.clean_category,
            "clean_signals": list(self.clean_signals),
            "clean_excluded": self.clean_excluded,
            "clean_direct": self.clean_direct,
            "scores_version": self.scores_version,
        }


# What an unscored row stores: every column NULL, so it reads as stale.
UNSCORED: dict[str, Any] = {
    "triage_category": None,
    "triage_confidence": None,
    "triage_reasons": None,
    "triage_zoom": None,
    "clean_candidate": False,
    "clean_confidence": None,
    "clean_category": None,
    "clean_signals": None,
    "clean_excluded": "not scored yet",
    "clean_direct": True,
    "scores_version": None,
}


def score_row(row: Any, identity: Identity) -> Scores:
    """Both verdicts for one row (anything with the TriageInput/CleanInput
    attributes plus `mentions_you` and `mention_identity`). Pure."""
    t, v, zoom = scores_of(row, identity)
    return Scores(
        triage_category=t.category,
        triage_confidence=t.confidence,
        triage_reasons=list(t.reasons),
        triage_zoom=zoom,
        clean_candidate=v.candidate,
        clean_confidence=v.confidence,
        clean_category=v.category,
        clean_signals=list(v.signals),
        clean_excluded=None if v.candidate else v.reason,
        clean_direct=v.direct,
    )
