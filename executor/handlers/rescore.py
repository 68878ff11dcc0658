"""The `rescore` job: decide "mentions you" again for mirror rows whose verdict
was decided against another identity (or never), read-only.

It runs exactly the fetch and parse a sync runs (EXAMINE, the header and body
prefix, the server's `SEARCH BODY` for what the prefix cut off), so a
re-decided row holds what a fresh sync would store. Folder by folder in
micro-batches; each batch's verdicts and its progress event commit together,
so a retried job goes on with the rows still stale. Until a row is re-decided
`/clean` excludes it ("not yet checked against your current identity").

A second pass, without IMAP, recomputes the stored triage and clean scores
(app/mail/scores.py) of every row whose scores are stale: computed under
another SCORES_VERSION, never computed, or invalidated by a change of
\\Flagged or \\Answered (rows the first pass re-checked are scored there,
from the same fetch). It reads the mirror row, scores it
in a thread, and writes the batch with its progress event in one fenced
transaction; a row a sync rewrote meanwhile keeps the sync's scores.
"""

from __future__ import annotations

import asyncio
from typing import Any

from imapclient.exceptions import IMAPClientAbortError, IMAPClientError

from app.mail.identity import Identity
from app.mail.scores import Scores, score_row
from executor import mirror_writes as mirror
from executor.context import JobContext
from executor.handlers.sync import examine, fetch_raw
from executor.imap_fetch import UidFetcher, chunks
from executor.mentions import MentionCheck
from executor.parsing import ParserPool

SCORE_BATCH = 500


class _Row:
    """A mirror row read back for scoring (attribute access for the rules)."""

    def __init__(self, row: dict[str, Any]) -> None:
        self.__dict__.update(row)


def _score_batch(rows: list[dict[str, Any]], identity: Identity) -> list[tuple[dict, Scores]]:
    return [(r, score_row(_Row(r), identity)) for r in rows]


async def handle_rescore(ctx: JobContext) -> dict[str, Any]:
    check = MentionCheck.from_settings(ctx.settings)
    summary: dict[str, Any] = {"rescored": 0, "mentions": 0, "unknown": 0, "skipped": []}
    if check.identity is None or check.fingerprint is None:
        summary["disabled"] = True
        return summary
    fingerprint = check.fingerprint
    async with ctx.store.pool.connection() as conn:
        stale = await mirror.stale_mention_rows(conn, fingerprint)
    base = ctx.job.processed
    total = base + sum(len(uids) for _, _, uids in stale)
    if stale:
        await _recheck_mentions(ctx, check, stale, summary, base, total)
    summary["processed"] = base + sum(len(uids) for _, _, uids in stale)
    summary["scored"] = await _rescore_rows(ctx, check.identity, summary["processed"])
    return summary


async def _recheck_mentions(
    ctx: JobContext,
    check: MentionCheck,
    stale: list[tuple[str, int, list[int]]],
    summary: dict[str, Any],
    base: int,
    total: int,
) -> None:
    """The IMAP pass: decide "mentions you" again for rows decided against another identity."""
    done = 0
    await ctx.progress(
        f"re-checking {total - base} message(s) for mentions of you",
        processed=base,
        total_estimate=total,
        data={"phase": "starting", "folders": [f for f, _, _ in stale], "has_more": total > base},
    )
    client = await ctx.imap.ensure()
    parser = ctx.parser or ParserPool(0)
    batch_size = max(1, int(ctx.job.payload.get("batch_size") or ctx.settings.sync_batch_size))
    for folder, uidvalidity, uids in stale:
        ctx.checkpoint()
        try:
            state = await ctx.imap.call(examine, client, folder)
        except IMAPClientAbortError:
            raise
        except IMAPClientError as exc:  # the folder is gone: the next sync drops its rows
            summary["skipped"].append({"folder": folder, "reason": str(exc)[:200]})
            done += len(uids)
            continue
        if state.uidvalidity != uidvalidity:  # the next sync re-syncs the folder
            summary["skipped"].append({"folder": folder, "reason": "UIDVALIDITY changed"})
            done += len(uids)
            continue
        fetcher = UidFetcher.for_folder(client, exists=state.messages, uidnext=state.uidnext)
        for batch in chunks(uids, batch_size):
            raws, problems = await ctx.imap.call(check.fetch, fetch_raw, fetcher, batch, False)
            fetched, _ = await parser.parse(raws, check.identity)
            done += len(batch)
            summary["rescored"] += len(fetched)
            summary["mentions"] += sum(m.mentions_you is True for m in fetched)
            summary["unknown"] += sum(m.mentions_you is None for m in fetched)
            async with ctx.store.fenced_transaction(ctx.lease) as conn:
                await mirror.update_mentions(conn, folder, uidvalidity, fetched)
                await ctx.progress(
                    f"{folder}: {len(fetched)} message(s) re-checked",
                    processed=base + done,
                    total_estimate=total,
                    data={
                        "phase": "rescore",
                        "folder": folder,
                        "items_found": sum(m.mentions_you is True for m in fetched),
                        "uids": [m.uid for m in fetched],
                        "has_more": base + done < total,
                        "problems": problems,
                    },
                    conn=conn,
                )
            ctx.checkpoint()
        await ctx.imap.leave_folder()


async def _rescore_rows(ctx: JobContext, identity: Identity, processed: int) -> int:
    """The mirror pass: recompute stale scores from the rows themselves (no IMAP)."""
    async with ctx.store.pool.connection() as conn:
        todo = (await mirror.stale_scores(conn)).count
    after, scored = 0, 0
    while todo:
        ctx.checkpoint()
        async with ctx.store.pool.connection() as conn:
            rows = await mirror.stale_score_rows(conn, after, SCORE_BATCH)
        if not rows:
            break
        after = rows[-1]["id"]
        results = await asyncio.to_thread(_score_batch, rows, identity)
        scored += len(results)
        async with ctx.store.fenced_transaction(ctx.lease) as conn:
            await mirror.update_scores(conn, results)
            await ctx.progress(
                f"{scored} message(s) scored again",
                processed=processed + scored,
                total_estimate=processed + max(todo, scored),
                data={"phase": "rescore_scores", "has_more": len(rows) == SCORE_BATCH},
                conn=conn,
            )
    return scored
