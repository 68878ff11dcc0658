"""Read-only tools over the mirror: cleanup discovery and priority ranking.

Both read the scores the executor stored at ingest (app/mail/scores.py) with
indexed SQL over the whole folder: no row cap, and no Python loop over the
mailbox on the web event loop. A row whose scores are stale (other rules or
identity) is never a /clean candidate and is marked `stale` in a ranking.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from langchain_core.tools import BaseTool, tool

from app.graph.deps import GraphDeps
from app.graph.tools.mailbox import brief
from app.graph.tools.results import ToolOutput, mail_data
from app.graph.tools.schemas import MAX_CLEAN_CANDIDATES, QuickCleanArgs, TopArgs
from app.mail import mirror_reads
from app.mail.scores import SCORES_VERSION


def day_bounds(now: datetime, tz: ZoneInfo) -> tuple[datetime, datetime]:
    """[start, end) of `now`'s calendar day in `tz`, as aware datetimes (a DST
    day is 23 or 25 hours long: both ends are local midnights)."""
    local = now.astimezone(tz)
    start = datetime(local.year, local.month, local.day, tzinfo=tz)
    following = start.date() + timedelta(days=1)
    end = datetime(following.year, following.month, following.day, tzinfo=tz)
    return start, end


async def rank(
    deps: GraphDeps, *, category: str | None, n: int, filters: list[str]
) -> list[dict[str, Any]]:
    tz = ZoneInfo(deps.settings.timezone)
    rows = await mirror_reads.top_by_triage(
        deps.pool,
        folder="INBOX",
        category=category,
        limit=n,
        version=SCORES_VERSION,
        fingerprint=deps.identity.fingerprint,
        day=day_bounds(deps.clock(), tz) if "today" in filters else None,
        unread="unread" in filters,
        zoom="zoom" in filters,
    )
    return [
        {
            **brief(row),
            "category": row.category,
            "confidence": row.confidence,
            "reasons": row.reasons,
            **({} if row.fresh else {"stale": True}),
        }
        for row in rows
    ]


def _clean_result(rows: list[mirror_reads.ScoredRow], counts: dict[str, int]) -> ToolOutput:
    candidates = [
        {
            **brief(row),
            "confidence": row.confidence,
            "category": row.category,
            "signals": row.reasons,
        }
        for row in rows
    ]
    return mail_data(
        {
            "candidates": candidates,
            "scanned": counts["scanned"],
            "excluded_direct": counts["direct"] + counts["not_checked"],
            "not_yet_checked": counts["not_checked"],
            "timed_out": False,
        }
    )


def make_triage_tools(deps: GraphDeps) -> list[BaseTool]:
    @tool(args_schema=QuickCleanArgs, response_format="content_and_artifact")
    async def quick_clean_inbox(limit: int = MAX_CLEAN_CANDIDATES) -> ToolOutput:
        """Find newsletters, notifications and other bulk mail in the INBOX that are safe
        to clean up. Read-only. Never returns mail addressed to the person (To/CC),
        mail mentioning them anywhere (name or address, the whole message checked when
        it was synced), or flagged mail. Each candidate has a confidence (0-1), a
        category and the signals behind it. `not_yet_checked` counts messages left
        out because they were not yet checked against the current identity (a
        rescore job is on its way). To clean them, pass their ids to
        execute_clean_batch."""
        rows, counts = await mirror_reads.clean_candidates(
            deps.pool,
            folder="INBOX",
            limit=limit,
            version=SCORES_VERSION,
            fingerprint=deps.identity.fingerprint,
        )
        # Up to 300 candidates: serialised off the event loop.
        return await asyncio.to_thread(_clean_result, rows, counts)

    @tool(args_schema=TopArgs, response_format="content_and_artifact")
    async def top_by_confidence(
        category: str | None = "action_required", n: int = 10, filters: list[str] | None = None
    ) -> ToolOutput:
        """Rank INBOX messages by triage confidence within a category (or any).
        Sorted by confidence, ties by newest first. Each result has the score and reasons;
        `stale: true` marks a score computed under older rules or another identity
        (being recomputed), and `stale_scores` counts such messages in the INBOX."""
        filters = list(dict.fromkeys(filters or []))
        results = await rank(deps, category=category, n=n, filters=filters)
        stale = await mirror_reads.stale_score_count(
            deps.pool,
            folder="INBOX",
            version=SCORES_VERSION,
            fingerprint=deps.identity.fingerprint,
        )
        out: dict[str, Any] = {"category": category, "n": n, "filters": filters, "results": results}
        if stale:
            # Ranked by the scores they have (or left out if never scored): say so.
            out["stale_scores"] = stale
        return mail_data(out)

    return [quick_clean_inbox, top_by_confidence]
