"""Mutation tools. Each enqueues a job only when the approval node recorded an
approval for that very tool call in the graph state (which the model can
neither see nor set); the database then makes the job from that approval row:
its type, params and exactly its messages, one job per approval. The model's
own arguments decide nothing here: they were shown on the approval card, and
what the person approved (maybe edited) is what runs."""

from __future__ import annotations

import uuid
from typing import Any

from langchain_core.tools import BaseTool, tool
from pydantic import BaseModel

from app.graph.deps import GraphDeps
from app.graph.tools.results import ToolOutput, error, plain
from app.graph.tools.schemas import (
    LabelArgs,
    LabelCall,
    MoveArgs,
    MoveCall,
    SelectionArgs,
    SelectionCall,
    UndoArgs,
    UndoCall,
)
from app.jobs.models import JobType

MUTATION_TOOLS: dict[str, JobType] = {
    "mark_read": JobType.MARK_READ,
    "mark_unread": JobType.MARK_UNREAD,
    "move_emails": JobType.MOVE,
    "apply_label": JobType.LABEL,
    "execute_clean_batch": JobType.CLEAN,
    "undo_job": JobType.UNDO,
}
# What a model may pass to each: the approval node validates a call with these.
MUTATION_ARGS: dict[str, type[BaseModel]] = {
    "mark_read": SelectionArgs,
    "mark_unread": SelectionArgs,
    "move_emails": MoveArgs,
    "apply_label": LabelArgs,
    "execute_clean_batch": SelectionArgs,
    "undo_job": UndoArgs,
}
NOT_APPROVED = "not approved: mailbox changes need the person's approval first"
NO_APPROVAL = "no matching approval was recorded: nothing was changed"


async def enqueue_approved(
    deps: GraphDeps, job_type: JobType, state: dict[str, Any], call_id: str
) -> ToolOutput:
    """The one path from an approval to a mutation job."""
    approval_id = (state.get("approvals") or {}).get(call_id)
    if not approval_id:
        return error(NOT_APPROVED)
    try:
        approval = await deps.store.get_approval(uuid.UUID(str(approval_id)))
    except ValueError:
        approval = None
    if approval is None or approval.action != job_type.value:
        return error(NO_APPROVAL)
    # The database makes the job from the approval row (type, params, messages)
    # and keeps it to one job per approval, however often this runs.
    job = await deps.store.enqueue_approved(approval.approval_id)
    if job is None:
        return error(NO_APPROVAL)
    return plain(
        {
            "job_id": str(job.job_id),
            "job_type": job_type.value,
            "status": job.status.value,
            "messages": len(approval.messages),
            "approval_id": str(approval.approval_id),
        }
    )


def make_mutation_tools(deps: GraphDeps) -> list[BaseTool]:
    @tool(args_schema=SelectionCall, response_format="content_and_artifact")
    async def mark_read(
        messages: list[str], state: dict[str, Any], tool_call_id: str
    ) -> ToolOutput:
        """Mark these messages as read. The person sees them and approves first."""
        return await enqueue_approved(deps, JobType.MARK_READ, state, tool_call_id)

    @tool(args_schema=SelectionCall, response_format="content_and_artifact")
    async def mark_unread(
        messages: list[str], state: dict[str, Any], tool_call_id: str
    ) -> ToolOutput:
        """Mark these messages as unread. The person sees them and approves first."""
        return await enqueue_approved(deps, JobType.MARK_UNREAD, state, tool_call_id)

    @tool(args_schema=MoveCall, response_format="content_and_artifact")
    async def move_emails(
        messages: list[str], target_folder: str, state: dict[str, Any], tool_call_id: str
    ) -> ToolOutput:
        """Move these messages to a folder (created if missing). Never deletes, never
        into Trash or Spam. The person sees them and approves (or edits) first."""
        return await enqueue_approved(deps, JobType.MOVE, state, tool_call_id)

    @tool(args_schema=LabelCall, response_format="content_and_artifact")
    async def apply_label(
        messages: list[str],
        label: str,
        state: dict[str, Any],
        tool_call_id: str,
        remove: bool = False,
    ) -> ToolOutput:
        """Apply (or with remove=true, remove) a label such as `Projects` on these
        messages. The person sees them and approves (or edits) first."""
        return await enqueue_approved(deps, JobType.LABEL, state, tool_call_id)

    @tool(args_schema=SelectionCall, response_format="content_and_artifact")
    async def execute_clean_batch(
        messages: list[str], state: dict[str, Any], tool_call_id: str
    ) -> ToolOutput:
        """Clean these bulk/automated messages: mark read and move to
        `Secretary/Auto-Cleaned` (recoverable, never deleted). Use ids from
        quick_clean_inbox. The person sees them and approves first."""
        return await enqueue_approved(deps, JobType.CLEAN, state, tool_call_id)

    @tool(args_schema=UndoCall, response_format="content_and_artifact")
    async def undo_job(job_id: str, state: dict[str, Any], tool_call_id: str) -> ToolOutput:
        """Undo an earlier mutation job (e.g. a clean): move the messages back and
        restore their read state. The person sees them and approves first."""
        return await enqueue_approved(deps, JobType.UNDO, state, tool_call_id)

    return [mark_read, mark_unread, move_emails, apply_label, execute_clean_batch, undo_job]
