"""Read-only tools over the mirror: cleanup discovery and priority ranking."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from langchain_core.tools import BaseTool, tool

from app.graph.deps import GraphDeps
from app.graph.tools import dumps
from app.mail import mirror_reads
from app.mail.clean import NOT_CHECKED, assess_for_clean
from app.mail.triage import CATEGORIES, is_today, is_zoom, triage

CLEAN_TIME_BOX_SECONDS = 5.0
MAX_CLEAN_CANDIDATES = 300
FILTERS = ("today", "unread", "zoom")


def _brief(row: mirror_reads.EmailRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "date": row.date.isoformat() if row.date else None,
        "from": row.sender,
        "subject": row.subject,
        "unread": row.unread,
    }


async def rank(
    deps: GraphDeps, *, category: str | None, n: int, filters: list[str]
) -> list[dict[str, Any]]:
    tz = ZoneInfo(deps.settings.timezone)
    now = deps.clock()
    rows = await mirror_reads.folder_emails(deps.pool, "INBOX")
    identity = deps.identity  # once: its matchers are compiled on first use
    ranked = []
    for row in rows:
        if "unread" in filters and not row.unread:
            continue
        if "today" in filters and not is_today(row, now, tz):
            continue
        if "zoom" in filters and not is_zoom(row):
            continue
        t = triage(row, identity)
        if category and t.category != category:
            continue
        ranked.append((t, row))
    ranked.sort(
        key=lambda tr: (
            -tr[0].confidence,
            -(tr[1].date or datetime.min.replace(tzinfo=tz)).timestamp(),
        )
    )
    return [
        {**_brief(row), "category": t.category, "confidence": t.confidence, "reasons": t.reasons}
        for t, row in ranked[:n]
    ]


def make_triage_tools(deps: GraphDeps) -> list[BaseTool]:
    @tool
    async def quick_clean_inbox(limit: int = MAX_CLEAN_CANDIDATES) -> str:
        """Find newsletters, notifications and other bulk mail in the INBOX that are safe
        to clean up. Read-only. Never returns mail addressed to the person (To/CC),
        mail mentioning them anywhere (name or address, the whole message checked when
        it was synced), or flagged mail. Each candidate has a confidence (0-1), a
        category and the signals behind it. `not_yet_checked` counts messages left
        out because they were not yet checked against the current identity (a
        rescore job is on its way)."""
        started = time.monotonic()
        rows = await mirror_reads.folder_emails(deps.pool, "INBOX")
        identity = deps.identity
        candidates, excluded_direct, scanned, timed_out = [], 0, 0, False
        not_checked = 0
        for row in rows:
            if time.monotonic() - started > CLEAN_TIME_BOX_SECONDS:
                timed_out = True
                break
            scanned += 1
            verdict = assess_for_clean(row, identity)
            if verdict.direct:
                excluded_direct += 1
                not_checked += verdict.reason == NOT_CHECKED
            if verdict.candidate:
                candidates.append(
                    {
                        **_brief(row),
                        "confidence": verdict.confidence,
                        "category": verdict.category,
                        "signals": verdict.signals,
                    }
                )
        candidates.sort(key=lambda c: -c["confidence"])
        return dumps(
            {
                "candidates": candidates[: max(1, min(limit, MAX_CLEAN_CANDIDATES))],
                "scanned": scanned,
                "excluded_direct": excluded_direct,
                "not_yet_checked": not_checked,
                "timed_out": timed_out,
            }
        )

    @tool
    async def top_by_confidence(
        category: str | None = "action_required", n: int = 10, filters: list[str] | None = None
    ) -> str:
        """Rank INBOX messages by triage confidence. category: one of action_required,
        fyi, newsletter, notification, cleanup (or null for any). filters, combinable:
        "today" (in the person's timezone), "unread", "zoom" (Zoom invites or links).
        Sorted by confidence, ties by newest first. Each result has the score and reasons."""
        filters = [f for f in (filters or []) if f]
        bad = [f for f in filters if f not in FILTERS]
        if category is not None and category not in CATEGORIES:
            return dumps(
                {"error": f"unknown category {category!r}; use one of {', '.join(CATEGORIES)}"}
            )
        if bad:
            return dumps({"error": f"unknown filter(s) {bad}; use {', '.join(FILTERS)}"})
        results = await rank(deps, category=category, n=max(1, min(n, 200)), filters=filters)
        return dumps({"category": category, "n": n, "filters": filters, "results": results})

    return [quick_clean_inbox, top_by_confidence]
