"""One handler per job type. A handler is `async (JobContext) -> summary dict`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from app.jobs.models import JobType
from executor.context import JobContext
from executor.handlers.gmail_labels import handle_gmail_labels
from executor.handlers.mutations import approved_work, handle_mutation
from executor.handlers.rescore import handle_rescore
from executor.handlers.sync import handle_sync
from executor.handlers.undo import handle_undo

Handler = Callable[[JobContext], Awaitable[dict[str, Any]]]


async def handle_label_change(ctx: JobContext) -> dict[str, Any]:
    """clean, move, label: X-GM-LABELS changes on Gmail (decided by the
    connection's capabilities), folder moves and keywords elsewhere."""
    await ctx.imap.ensure()
    if ctx.imap.is_gmail:
        return await handle_gmail_labels(ctx, await approved_work(ctx))
    return await handle_mutation(ctx)


HANDLERS: dict[JobType, Handler] = {
    JobType.SYNC: handle_sync,
    JobType.CLEAN: handle_label_change,
    JobType.MARK_READ: handle_mutation,
    JobType.MARK_UNREAD: handle_mutation,
    JobType.MOVE: handle_label_change,
    JobType.LABEL: handle_label_change,
    JobType.UNDO: handle_undo,
    JobType.RESCORE: handle_rescore,
}
