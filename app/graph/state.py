"""The graph's state and the typed approval payload the page renders directly."""

from __future__ import annotations

from typing import Annotated, Any, Literal, NotRequired, TypedDict

from langchain_core.messages import AnyMessage
from langgraph.graph.message import add_messages


class MessageCard(TypedDict):
    id: str
    folder: str
    uid: int
    uidvalidity: int
    date: str | None
    to: str
    cc: str
    subject: str
    unread: bool
    confidence: NotRequired[float]
    category: NotRequired[str]
    reasons: NotRequired[list[str]]
    body_preview: NotRequired[str]


class ApprovalGroup(TypedDict):
    band: Literal["high", "low"]
    title: str
    messages: list[dict[str, Any]]  # MessageCard (the key "from" is not a valid identifier)


class ProposedAction(TypedDict):
    tool_call_id: str
    tool: str
    action: str
    description: str
    params: dict[str, Any]
    groups: list[ApprovalGroup]
    excluded: NotRequired[list[dict[str, Any]]]
    # Gmail rows: the folders the messages are in (a move there is a label change).
    gmail_sources: NotRequired[list[str]]


class Proposal(TypedDict):
    """The interrupt value: everything the person needs to decide, nothing more."""

    kind: Literal["approval"]
    title: str
    actions: list[ProposedAction]
    message_count: int


class Edit(TypedDict):
    """What the person changed before approving, besides the selection: the
    folder of a move or the label of a label job."""

    target: str


class Decision(TypedDict):
    decision: Literal["approve", "reject"]
    selection: NotRequired[list[str] | None]
    interrupt_id: NotRequired[str]
    edit: NotRequired[Edit | None]


def merge_approvals(old: dict[str, str] | None, new: dict[str, str] | None) -> dict[str, str]:
    return {**(old or {}), **(new or {})}


class ChatState(TypedDict):
    messages: Annotated[list[AnyMessage], add_messages]
    proposal: NotRequired[Proposal | None]
    # tool_call_id → approval_id, written only by the approval node. Tools read
    # it through InjectedState, which the model can neither see nor forge.
    approvals: NotRequired[Annotated[dict[str, str], merge_approvals]]
