"""The `rescore` job: decide "mentions you" again for mirror rows whose verdict
was decided against another identity (or never), read-only.

It runs exactly the fetch and parse a sync runs (EXAMINE, `BODY.PEEK[]`
prefix, the server's `SEARCH BODY` for what the prefix cut off), so a
re-decided row holds what a fresh sync would store. Folder by folder in
micro-batches; each batch's verdicts and its progress event commit together,
so a retried job goes on with the rows still stale. Until a row is re-decided
`/clean` excludes it ("not yet checked against your current identity").
"""

from __future__ import annotations

from typing import Any

from imapclient.exceptions import IMAPClientAbortError, IMAPClientError

from executor import mirror_writes as mirror
from executor.context import JobContext
from executor.handlers.sync import examine, fetch_raw
from executor.imap_fetch import UidFetcher, chunks
from executor.mentions import MentionCheck
from executor.parsing import ParserPool


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
    summary["processed"] = base + done
    return summary
