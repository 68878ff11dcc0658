"""The chat as the outside sees it: send a message, resume an approval, view a
thread; each either at once (`send`, `resume`) or as a stream of what happens
while the turn runs (`stream_send`, `stream_resume`): the model's tokens and
tool activity, then the finished turn. The graph knows nothing of pages: a turn
is the thread's messages, the pending approval and the jobs it started; the web
layer renders them (app/web/chat_view.py).

One lock per thread serialises turns, so two resumes of one interrupt (double
click, two tabs) cannot both run; the approval's idempotency key makes even
a cross-process race enqueue a single job.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
import weakref
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from langgraph.errors import GraphRecursionError
from langgraph.types import Command

from app.graph.approval import edit_refusal, selection_refusal
from app.graph.builder import build_graph
from app.graph.deps import GraphDeps
from app.graph.model_failures import TOO_MANY_STEPS

MAX_MESSAGE_CHARS = 10_000
RECURSION_LIMIT = 25
log = logging.getLogger(__name__)


class ChatError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class ChatTurn:
    """A thread after a turn: its messages, the approval it waits for (the
    interrupt's id and proposal), and the jobs this turn started."""

    thread_id: str
    messages: list[BaseMessage]
    interrupt: dict[str, Any] | None
    job_ids: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class TurnStarted:
    """First item of a stream: the request was accepted and the turn is running.
    `before` counts the thread's messages before this turn (the page shows only
    the rest when the turn ends); `set_aside` is the approval a new request
    set aside, whose card the page then drops."""

    thread_id: str
    before: int = 0
    set_aside: str | None = None


# What a stream yields between TurnStarted and the final ChatTurn (SPEC §6):
# {"type": "token", "text": str} and {"type": "tool", "name": str, "status": str}.
ChatEvent = dict[str, Any]
StreamItem = TurnStarted | ChatEvent | ChatTurn


def job_ids_in(messages: Sequence[BaseMessage]) -> list[str]:
    """The jobs tools started, from their artifacts."""
    return [
        str(msg.artifact["job_id"])
        for msg in messages
        if isinstance(msg, ToolMessage)
        and isinstance(msg.artifact, dict)
        and msg.artifact.get("job_id")
        and msg.status != "error"
    ]


def event_of(raw: dict[str, Any]) -> ChatEvent | None:
    """A graph `astream_events` event as a chat event, or None for the rest."""
    kind = raw.get("event")
    if kind == "on_chat_model_stream" and raw.get("metadata", {}).get("langgraph_node") == "agent":
        text = raw["data"]["chunk"].text
        return {"type": "token", "text": text} if text else None
    if kind == "on_tool_start":
        return {"type": "tool", "name": raw["name"], "status": "start"}
    if kind == "on_tool_end":
        output = raw.get("data", {}).get("output")
        failed = isinstance(output, ToolMessage) and output.status == "error"
        return {"type": "tool", "name": raw["name"], "status": "error" if failed else "end"}
    if kind == "on_tool_error":
        return {"type": "tool", "name": raw["name"], "status": "error"}
    return None


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
        return {"configurable": {"thread_id": thread_id}, "recursion_limit": RECURSION_LIMIT}

    async def _snapshot(self, thread_id: str) -> tuple[list[BaseMessage], Any]:
        state = await self.graph.aget_state(self._config(thread_id))
        return list(state.values.get("messages", [])) if state.values else [], state

    async def _turn(self, thread_id: str, before: int) -> ChatTurn:
        messages, state = await self._snapshot(thread_id)
        pending = state.interrupts[0] if state.interrupts else None
        interrupt = {"id": pending.id, **pending.value} if pending is not None else None
        return ChatTurn(thread_id, messages, interrupt, job_ids_in(messages[before:]))

    async def exists(self, thread_id: str) -> bool:
        messages, _ = await self._snapshot(thread_id)
        return bool(messages)

    async def view(self, thread_id: str) -> ChatTurn:
        if not await self.exists(thread_id):
            raise ChatError(404, f"unknown thread {thread_id!r}")
        messages, _ = await self._snapshot(thread_id)
        return await self._turn(thread_id, len(messages))

    # -- one turn, at once or streamed -------------------------------------------

    async def send(self, thread_id: str | None, text: str) -> ChatTurn:
        return await _last(self._send(thread_id, text, stream=False))

    async def resume(
        self,
        thread_id: str,
        interrupt_id: str,
        decision: str,
        selection: list[str] | None = None,
        edit: dict[str, Any] | None = None,
    ) -> ChatTurn:
        return await _last(
            self._resume(thread_id, interrupt_id, decision, selection, edit, stream=False)
        )

    def stream_send(self, thread_id: str | None, text: str) -> AsyncIterator[StreamItem]:
        """TurnStarted (or ChatError before it), chat events, then the ChatTurn."""
        return self._send(thread_id, text, stream=True)

    def stream_resume(
        self,
        thread_id: str,
        interrupt_id: str,
        decision: str,
        selection: list[str] | None = None,
        edit: dict[str, Any] | None = None,
    ) -> AsyncIterator[StreamItem]:
        return self._resume(thread_id, interrupt_id, decision, selection, edit, stream=True)

    async def _send(
        self, thread_id: str | None, text: str, *, stream: bool
    ) -> AsyncIterator[StreamItem]:
        text = (text or "").strip()
        if not text:
            raise ChatError(422, "message must not be empty")
        if len(text) > MAX_MESSAGE_CHARS:
            raise ChatError(422, f"message is longer than {MAX_MESSAGE_CHARS} characters")
        thread_id = thread_id or uuid.uuid4().hex
        async with self._lock(thread_id):
            messages, state = await self._snapshot(thread_id)
            before = len(messages)
            set_aside = state.interrupts[0].id if state.interrupts else None
            yield TurnStarted(thread_id, before, set_aside)
            if state.interrupts:
                # A new request sets the pending approval aside (nothing is changed).
                async for event in self._run(
                    thread_id, Command(resume={"decision": "reject"}), stream=False
                ):
                    yield event
            async for event in self._run(
                thread_id, {"messages": [HumanMessage(text)]}, stream=stream
            ):
                yield event
            yield await self._turn(thread_id, before)

    async def _resume(
        self,
        thread_id: str,
        interrupt_id: str,
        decision: str,
        selection: list[str] | None,
        edit: dict[str, Any] | None,
        *,
        stream: bool,
    ) -> AsyncIterator[StreamItem]:
        if decision not in ("approve", "reject"):
            raise ChatError(422, "decision must be 'approve' or 'reject'")
        async with self._lock(thread_id):
            messages, state = await self._snapshot(thread_id)
            if not messages:
                raise ChatError(404, f"unknown thread {thread_id!r}")
            pending = {i.id: i for i in state.interrupts}
            if interrupt_id not in pending:
                raise ChatError(
                    409, "that approval is no longer pending (already answered or replaced)"
                )
            value: dict[str, Any] = {"decision": decision, "interrupt_id": interrupt_id}
            if selection is not None:
                value["selection"] = [str(s) for s in selection]
                refusal = (
                    selection_refusal(pending[interrupt_id].value, value["selection"])
                    if decision == "approve"
                    else None
                )
                if refusal:
                    raise ChatError(422, f"selection refused: {refusal}")
            if edit is not None and decision == "approve":
                target = str(edit.get("target", ""))
                refusal = edit_refusal(pending[interrupt_id].value, target)
                if refusal:
                    raise ChatError(422, f"edit refused: {refusal}")
                value["edit"] = {"target": target.strip()}
            yield TurnStarted(thread_id, len(messages))
            async for event in self._run(thread_id, Command(resume=value), stream=stream):
                yield event
            yield await self._turn(thread_id, len(messages))

    async def _run(
        self, thread_id: str, graph_input: Any, *, stream: bool
    ) -> AsyncIterator[ChatEvent]:
        """Run the graph until it ends or waits for an approval; streamed, it
        yields the model's tokens and tool starts and ends as they happen."""
        config = self._config(thread_id)
        try:
            if not stream:
                await self.graph.ainvoke(graph_input, config)
                return
            async for raw in self.graph.astream_events(graph_input, config, version="v2"):
                event = event_of(raw)
                if event is not None:
                    yield event
        except GraphRecursionError:
            log.warning(
                "chat thread %s: the model did not finish within %d steps",
                thread_id,
                RECURSION_LIMIT,
            )
            await self._close_turn(thread_id, TOO_MANY_STEPS)

    async def _close_turn(self, thread_id: str, text: str) -> None:
        """End a turn the graph could not finish: answer any tool call left open
        (a provider refuses a history with unanswered calls), then say why."""
        messages, _ = await self._snapshot(thread_id)
        last = messages[-1] if messages else None
        closing: list[BaseMessage] = []
        if isinstance(last, AIMessage):
            closing = [
                ToolMessage(content="not run", tool_call_id=c["id"], name=c["name"], status="error")
                for c in last.tool_calls
            ]
        closing.append(AIMessage(text))
        await self.graph.aupdate_state(
            self._config(thread_id), {"messages": closing, "proposal": None}, as_node="agent"
        )


async def _last(items: AsyncIterator[StreamItem]) -> ChatTurn:
    turn: ChatTurn | None = None
    async for item in items:
        if isinstance(item, ChatTurn):
            turn = item
    assert turn is not None
    return turn
