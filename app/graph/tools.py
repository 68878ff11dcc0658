"""Piper's tools. None of them touches IMAP: read-only tools query the mirror or
enqueue read-only jobs; mutation tools enqueue a job only when the approval
node recorded an approval for that very tool call in the graph state (the
model can neither see nor set it), and the database makes the job from that
approval row: its type, params and exactly its messages, one job per approval."""

from __future__ import annotations

import json
import uuid
from typing import Annotated, Any

from langchain_core.tools import BaseTool, InjectedToolCallId, tool
from langgraph.prebuilt import InjectedState

from app.graph.deps import GraphDeps
from app.jobs.models import JobType
from app.mail import mirror_reads

READ_ONLY_TOOLS = frozenset(
    {"sync_mailbox", "search_emails", "job_status", "quick_clean_inbox", "top_by_confidence"}
)
MUTATION_TOOLS: dict[str, JobType] = {
    "mark_read": JobType.MARK_READ,
    "mark_unread": JobType.MARK_UNREAD,
    "move_emails": JobType.MOVE,
    "apply_label": JobType.LABEL,
    "execute_clean_batch": JobType.CLEAN,
    "undo_job": JobType.UNDO,
}


def dumps(value: Any) -> str:
    return json.dumps(value, default=str)


Approvals = Annotated[dict[str, Any], InjectedState]
CallId = Annotated[str, InjectedToolCallId]


async def enqueue_approved(
    deps: GraphDeps, job_type: JobType, state: dict[str, Any], call_id: str
) -> str:
    """The one path from an approval to a mutation job."""
    approval_id = (state.get("approvals") or {}).get(call_id)
    if not approval_id:
        return dumps({"error": "not approved: mailbox changes need the person's approval first"})
    try:
        approval = await deps.store.get_approval(uuid.UUID(str(approval_id)))
    except ValueError:
        approval = None
    if approval is None or approval.action != job_type.value:
        return dumps({"error": "no matching approval was recorded: nothing was changed"})
    # The database makes the job from the approval row (type, params, messages)
    # and keeps it to one job per approval, however often this runs.
    job = await deps.store.enqueue_approved(approval.approval_id)
    if job is None:
        return dumps({"error": "no matching approval was recorded: nothing was changed"})
    return dumps(
        {
            "job_id": str(job.job_id),
            "job_type": job_type.value,
            "status": job.status.value,
            "messages": len(approval.messages),
            "approval_id": str(approval.approval_id),
        }
    )


def make_tools(deps: GraphDeps) -> list[BaseTool]:
    @tool
    async def sync_mailbox(folders: list[str] | None = None) -> str:
        """Start a read-only sync that refreshes Piper's copy of the mailbox from the
        IMAP server (all folders unless some are named). Returns the job id; the page
        shows its progress. Needs no approval: it never changes the mailbox."""
        payload: dict[str, Any] = {"folders": folders} if folders else {}
        job = await deps.store.enqueue(JobType.SYNC, payload)
        return dumps({"job_id": str(job.job_id), "job_type": "sync", "status": job.status.value})

    @tool
    async def search_emails(
        text: str = "",
        from_contains: str | None = None,
        subject_contains: str | None = None,
        unread: bool | None = None,
        folder: str = "INBOX",
        limit: int = 25,
        then: str | None = None,
        target_folder: str | None = None,
        label: str | None = None,
    ) -> str:
        """Search the mailbox mirror. `text` words must all appear in the sender,
        subject or list name. Returns message ids usable with the mutation tools.
        `then`/`target_folder`/`label` record what the search is for (e.g.
        then="mark_read"); they change nothing."""
        rows = await mirror_reads.search_emails(
            deps.pool,
            words=text.split(),
            from_contains=from_contains,
            subject_contains=subject_contains,
            unread=unread,
            folder=folder or None,
            limit=limit,
        )
        return dumps(
            {
                "count": len(rows),
                "emails": [
                    {
                        "id": r.id,
                        "date": r.date.isoformat() if r.date else None,
                        "from": r.sender,
                        "subject": r.subject,
                        "unread": r.unread,
                    }
                    for r in rows
                ],
            }
        )

    @tool
    async def job_status(job_id: str | None = None) -> str:
        """Status of one job, or of the most recent jobs when no id is given."""
        if job_id:
            try:
                job = await deps.store.get(uuid.UUID(job_id))
            except ValueError:
                return dumps({"error": f"{job_id!r} is not a job id"})
            return dumps(job.snapshot() if job else {"error": f"no job {job_id}"})
        jobs = await deps.store.list(limit=10)
        counts = await mirror_reads.mirror_counts(deps.pool)
        return dumps({"jobs": [j.snapshot() for j in jobs], "mirror": counts})

    @tool
    async def mark_read(messages: list[str], state: Approvals, tool_call_id: CallId) -> str:
        """Mark these messages (ids from search) as read. Runs only after the person approves."""
        return await enqueue_approved(deps, JobType.MARK_READ, state, tool_call_id)

    @tool
    async def mark_unread(messages: list[str], state: Approvals, tool_call_id: CallId) -> str:
        """Mark these messages as unread. Runs only after the person approves."""
        return await enqueue_approved(deps, JobType.MARK_UNREAD, state, tool_call_id)

    @tool
    async def move_emails(
        messages: list[str], target_folder: str, state: Approvals, tool_call_id: CallId
    ) -> str:
        """Move these messages to a folder (created if missing). Never deletes.
        Runs only after the person approves."""
        return await enqueue_approved(deps, JobType.MOVE, state, tool_call_id)

    @tool
    async def apply_label(
        messages: list[str],
        label: str,
        state: Approvals,
        tool_call_id: CallId,
        remove: bool = False,
    ) -> str:
        """Apply (or with remove=true, remove) a label such as `Secretary/Auto-Cleaned`
        on these messages. Runs only after the person approves."""
        return await enqueue_approved(deps, JobType.LABEL, state, tool_call_id)

    @tool
    async def execute_clean_batch(
        messages: list[str], state: Approvals, tool_call_id: CallId
    ) -> str:
        """Clean these bulk/automated messages: mark read and move to
        `Secretary/Auto-Cleaned` (recoverable, never deleted). Use ids from
        quick_clean_inbox. Runs only after the person approves."""
        return await enqueue_approved(deps, JobType.CLEAN, state, tool_call_id)

    @tool
    async def undo_job(job_id: str, state: Approvals, tool_call_id: CallId) -> str:
        """Undo an earlier completed mutation job (e.g. a clean): move the messages back
        and restore their read state. Runs only after the person approves."""
        return await enqueue_approved(deps, JobType.UNDO, state, tool_call_id)

    tools: list[BaseTool] = [
        sync_mailbox,
        search_emails,
        job_status,
        mark_read,
        mark_unread,
        move_emails,
        apply_label,
        execute_clean_batch,
        undo_job,
    ]
    from app.graph.triage_tools import make_triage_tools

    tools.extend(make_triage_tools(deps))
    return tools
