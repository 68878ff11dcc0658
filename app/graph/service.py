"""The chat as the web sees it: send a message, resume an approval, view a thread.

One lock per thread serialises turns, so two resumes of one interrupt (double
click, two tabs) cannot both run; the approval's idempotency key makes even
a cross-process race enqueue a single job.
"""

from __future__ import annotations

import asyncio
import json
import uuid
import weakref
from dataclasses import dataclass, field
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from langgraph.types import Command

from app.graph.builder import build_graph
from app.graph.deps import GraphDeps

MAX_MESSAGE_CHARS = 10_000


class ChatError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class ChatTurn:
    thread_id: str
    messages: list[dict[str, Any]]
    interrupt: dict[str, Any] | None
    job_ids: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "thread_id": self.thread_id,
            "messages": self.messages,
            "interrupt": self.interrupt,
            "job_ids": self.job_ids,
        }


def render_message(msg: BaseMessage) -> dict[str, Any] | None:
    if isinstance(msg, HumanMessage):
        return {"role": "user", "content": str(msg.content)}
    if isinstance(msg, AIMessage):
        if msg.content:
            return {"role": "assistant", "content": str(msg.content)}
        if msg.tool_calls:
            names = ", ".join(c["name"] for c in msg.tool_calls)
            return {
                "role": "tool",
                "content": f"calling {names}",
                "tool_calls": [c["name"] for c in msg.tool_calls],
            }
        return None
    if isinstance(msg, ToolMessage):
        rendered: dict[str, Any] = {"role": "tool", "content": _tool_summary(msg), "name": msg.name}
        data = _json(msg)
        if msg.name == "top_by_confidence" and isinstance(data, dict) and data.get("results"):
            rendered["table"] = data["results"]  # the page shows it as a sortable table
        return rendered
    return None


def _tool_summary(msg: ToolMessage) -> str:
    data = _json(msg)
    if isinstance(data, dict):
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


def _json(msg: ToolMessage) -> Any:
    try:
        return json.loads(msg.content) if isinstance(msg.content, str) else None
    except json.JSONDecodeError:
        return None


def job_ids_in(messages: list[BaseMessage]) -> list[str]:
    ids = []
    for msg in messages:
        if isinstance(msg, ToolMessage):
            data = _json(msg)
            if isinstance(data, dict) and data.get("job_id"):
                ids.append(str(data["job_id"]))
    return ids


class ChatService:
    def __init__(self, deps: GraphDeps, model: BaseChatModel) -> None:
        self.deps = deps
        self.model = model
        self.checkpointer = AsyncPostgresSaver(deps.pool)  # type: ignore[arg-type]
        self.graph = build_graph(deps, model, self.checkpointer)
        # One lock per thread while a turn holds it, then gone: weak values, so
        # the dict holds only threads mid-turn, however many threads there were.
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    def _lock(self, thread_id: str) -> asyncio.Lock:
        lock = self._locks.get(thread_id)
        if lock is None:
            lock = self._locks[thread_id] = asyncio.Lock()
        return lock

    async def setup(self) -> None:
        await self.checkpointer.setup()

    def _config(self, thread_id: str) -> dict[str, Any]:
        return {"configurable": {"thread_id": thread_id}, "recursion_limit": 25}

    async def _snapshot(self, thread_id: str) -> tuple[list[BaseMessage], Any]:
        state = await self.graph.aget_state(self._config(thread_id))
        return list(state.values.get("messages", [])) if state.values else [], state

    async def _turn(self, thread_id: str, before: int) -> ChatTurn:
        messages, state = await self._snapshot(thread_id)
        pending = state.interrupts[0] if state.interrupts else None
        interrupt = {"id": pending.id, **pending.value} if pending is not None else None
        rendered = [r for r in (render_message(m) for m in messages) if r is not None]
        return ChatTurn(thread_id, rendered, interrupt, job_ids_in(messages[before:]))

    async def exists(self, thread_id: str) -> bool:
        messages, _ = await self._snapshot(thread_id)
        return bool(messages)

    async def view(self, thread_id: str) -> ChatTurn:
        if not await self.exists(thread_id):
            raise ChatError(404, f"unknown thread {thread_id!r}")
        messages, _ = await self._snapshot(thread_id)
        return await self._turn(thread_id, len(messages))

    async def send(self, thread_id: str | None, text: str) -> ChatTurn:
        text = (text or "").strip()
        if not text:
            raise ChatError(422, "message must not be empty")
        if len(text) > MAX_MESSAGE_CHARS:
            raise ChatError(422, f"message is longer than {MAX_MESSAGE_CHARS} characters")
        thread_id = thread_id or uuid.uuid4().hex
        async with self._lock(thread_id):
            messages, state = await self._snapshot(thread_id)
            before = len(messages)
            if state.interrupts:
                # A new request sets the pending approval aside (nothing is changed).
                await self.graph.ainvoke(
                    Command(resume={"decision": "reject"}), self._config(thread_id)
                )
            await self.graph.ainvoke({"messages": [HumanMessage(text)]}, self._config(thread_id))
            return await self._turn(thread_id, before)

    async def resume(
        self, thread_id: str, interrupt_id: str, decision: str, selection: list[str] | None = None
    ) -> ChatTurn:
        if decision not in ("approve", "reject"):
            raise ChatError(422, "decision must be 'approve' or 'reject'")
        async with self._lock(thread_id):
            messages, state = await self._snapshot(thread_id)
            if not messages:
                raise ChatError(404, f"unknown thread {thread_id!r}")
            pending = {i.id for i in state.interrupts}
            if interrupt_id not in pending:
                raise ChatError(
                    409, "that approval is no longer pending (already answered or replaced)"
                )
            value: dict[str, Any] = {"decision": decision, "interrupt_id": interrupt_id}
            if selection is not None:
                value["selection"] = [str(s) for s in selection]
            await self.graph.ainvoke(Command(resume=value), self._config(thread_id))
            return await self._turn(thread_id, len(messages))
