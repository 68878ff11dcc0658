"""The arguments a model chooses for each tool, as pydantic models: they are
the JSON schema the model sees, the validation its calls go through, and what
the approval node reads a proposed change from (app/graph/approval.py).

Mutation tools also receive two values the model never sees and cannot set
(`Injected`): the graph state, where the approval node wrote the approval for
that very call, and the call's id."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from langchain_core.tools import InjectedToolCallId
from langgraph.prebuilt import InjectedState
from pydantic import BaseModel, Field

from app.mail.triage import CATEGORIES

MAX_SELECTION = 1000
MAX_CLEAN_CANDIDATES = 300
TriageCategory = Literal[CATEGORIES]  # type: ignore[valid-type]
TriageFilter = Literal["today", "unread", "zoom"]
MessageId = Annotated[str, Field(min_length=1, max_length=300)]
FolderName = Annotated[str, Field(min_length=1, max_length=200)]


class SyncArgs(BaseModel):
    folders: list[FolderName] | None = Field(
        default=None, max_length=100, description="Folders to refresh; all when omitted."
    )


class SearchArgs(BaseModel):
    text: str = Field(
        default="",
        max_length=500,
        description="Words that must all appear in the sender, subject or list name.",
    )
    from_contains: str | None = Field(default=None, max_length=200)
    subject_contains: str | None = Field(default=None, max_length=200)
    unread: bool | None = Field(default=None, description="true: only unread; false: only read.")
    folder: str = Field(default="INBOX", max_length=200)
    limit: int = Field(default=25, ge=1, le=200)


class ReadEmailArgs(BaseModel):
    id: MessageId = Field(description="A message id exactly as a search tool returned it.")


class JobStatusArgs(BaseModel):
    job_id: str | None = Field(
        default=None, max_length=100, description="One job's id; the recent jobs when omitted."
    )


class QuickCleanArgs(BaseModel):
    limit: int = Field(default=MAX_CLEAN_CANDIDATES, ge=1, le=MAX_CLEAN_CANDIDATES)


class TopArgs(BaseModel):
    category: TriageCategory | None = Field(  # type: ignore[valid-type]
        default="action_required", description="A triage category, or null for any."
    )
    n: int = Field(default=10, ge=1, le=200)
    filters: list[TriageFilter] = Field(
        default_factory=list,
        max_length=3,
        description='Combinable: "today" (person\'s timezone), "unread", "zoom".',
    )


# -- mutations: what the person will see on the approval card ------------------


class SelectionArgs(BaseModel):
    messages: list[MessageId] = Field(
        min_length=1,
        max_length=MAX_SELECTION,
        description="Message ids exactly as a search tool returned them; never invented.",
    )


class MoveArgs(SelectionArgs):
    target_folder: FolderName = Field(
        description="Folder to move them to (created when missing). Never Trash or Spam."
    )


class LabelArgs(SelectionArgs):
    label: FolderName = Field(description="The label, e.g. `Projects` or `Secretary/Auto-Cleaned`.")
    remove: bool = Field(default=False, description="true to take the label off instead.")


class UndoArgs(BaseModel):
    job_id: str = Field(
        min_length=1, max_length=100, description="The earlier change job to undo (job_status)."
    )


class Injected(BaseModel):
    state: Annotated[dict[str, Any], InjectedState]
    tool_call_id: Annotated[str, InjectedToolCallId]


class SelectionCall(SelectionArgs, Injected):
    pass


class MoveCall(MoveArgs, Injected):
    pass


class LabelCall(LabelArgs, Injected):
    pass


class UndoCall(UndoArgs, Injected):
    pass
