"""How a chat turn is shown: the JSON answer of SPEC §6 (`role`/`content` per
message) and the page's chat log, both from the graph's messages and their
tool artifacts. The graph knows nothing of this."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage

from app.graph.service import ChatTurn


def transcript(messages: Sequence[BaseMessage]) -> list[dict[str, Any]]:
    return [shown for shown in (show_message(m) for m in messages) if shown is not None]


def show_message(msg: BaseMessage) -> dict[str, Any] | None:
    if isinstance(msg, HumanMessage):
        return {"role": "user", "content": msg.text}
    if isinstance(msg, AIMessage):
        if msg.text:
            return {"role": "assistant", "content": msg.text}
        if msg.tool_calls:
            names = ", ".join(c["name"] for c in msg.tool_calls)
            return {
                "role": "tool",
                "content": f"calling {names}",
                "tool_calls": [c["name"] for c in msg.tool_calls],
            }
        return None
    if isinstance(msg, ToolMessage):
        shown: dict[str, Any] = {"role": "tool", "content": tool_summary(msg), "name": msg.name}
        data = msg.artifact
        if msg.name == "top_by_confidence" and isinstance(data, dict) and data.get("results"):
            shown["table"] = data["results"]  # the page shows it as a sortable table
        return shown
    return None


def tool_summary(msg: ToolMessage) -> str:
    data = msg.artifact
    if msg.status == "error" or not isinstance(data, dict):
        return f"{msg.name}: failed"
    if "job_id" in data:
        return f"{msg.name}: job {data['job_id']} {data.get('status', '')}".strip()
    if data.get("rejected"):
        return f"{msg.name}: rejected"
    if "error" in data:
        return f"{msg.name}: {data['error']}"
    if "candidates" in data:
        return f"{msg.name}: {len(data['candidates'])} candidate(s)"
    if "count" in data:
        return f"{msg.name}: {data['count']} message(s)"
    if "results" in data:
        return f"{msg.name}: {len(data['results'])} result(s)"
    return f"{msg.name}: done"


def turn_json(turn: ChatTurn) -> dict[str, Any]:
    """The JSON answer (SPEC §6): thread_id, messages [{role, content}], interrupt, job_ids."""
    return {
        "thread_id": turn.thread_id,
        "messages": [
            {"role": m["role"], "content": m["content"]} for m in transcript(turn.messages)
        ],
        "interrupt": turn.interrupt,
        "job_ids": turn.job_ids,
    }


def page_turn(turn: ChatTurn, since: int = 0) -> dict[str, Any]:
    """What the page's chat log template renders: messages (with tables) from
    the `since`-th on, and the card."""
    return {"messages": transcript(turn.messages[since:]), "interrupt": turn.interrupt}
