"""Piper's graph: agent → (propose → approval) → tools → agent."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, SystemMessage
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.prebuilt import ToolNode

from app.graph.approval import make_nodes
from app.graph.deps import GraphDeps
from app.graph.model_failures import EMPTY, MALFORMED, describe_failure, status_of
from app.graph.prompts import SYSTEM_PROMPT
from app.graph.state import ChatState
from app.graph.tools import MUTATION_TOOLS, make_tools

log = logging.getLogger(__name__)


def route_after_agent(state: ChatState) -> str:
    last = state["messages"][-1]
    if not isinstance(last, AIMessage) or not last.tool_calls:
        return END
    if any(c["name"] in MUTATION_TOOLS for c in last.tool_calls):
        return "propose"  # whatever else the model asked for: a card first
    return "tools"


def cut_off(reply: AIMessage) -> bool:
    """An OpenAI-style reply that ended without a finish reason (the stream was
    cut), or ran out of tokens: LangChain repairs half-sent tool-call arguments
    into valid ones (`parse_partial_json`), so such a call would become a card
    for an action the model never finished asking for. Other providers' replies
    are left alone (their finish fields differ and are not tested here)."""
    meta = reply.response_metadata or {}
    if meta.get("model_provider") != "openai":
        return False
    return meta.get("finish_reason") in (None, "", "length")


def build_graph(
    deps: GraphDeps, model: BaseChatModel, checkpointer: BaseCheckpointSaver[Any] | None = None
) -> CompiledStateGraph[Any, Any, Any, Any]:
    tools = make_tools(deps)
    bound = model.bind_tools(tools)
    settings = deps.settings
    deadline = settings.chat_timeout * (settings.chat_max_retries + 1) + 5

    async def agent(state: ChatState) -> dict[str, Any]:
        """One model turn. A provider that fails (after its client's bounded
        retries) or answers with a tool call it garbled ends the turn with one
        readable message, so the thread stays usable for the next one."""
        try:
            # The client's timeout bounds each read, so a provider that keeps
            # sending a little never times out by itself (and holds the thread's
            # lock): the whole request, retries included, gets a deadline too.
            async with asyncio.timeout(deadline):
                reply = await bound.ainvoke([SystemMessage(SYSTEM_PROMPT), *state["messages"]])
        except Exception as exc:  # any provider, any failure: the chat carries on
            log.warning("chat model failed: %s (status %s)", type(exc).__name__, status_of(exc))
            return {"messages": [AIMessage(describe_failure(exc))]}
        if isinstance(reply, AIMessage):
            calls = reply.tool_calls
            if (
                reply.invalid_tool_calls
                or len({c["id"] for c in calls}) < len(calls)
                or (calls and cut_off(reply))
            ):
                # Garbled or cut-off arguments, or two calls under one id (the card
                # and the approvals are keyed by it: one would hide the other).
                log.warning("chat model sent malformed tool call(s)")
                return {"messages": [AIMessage(MALFORMED)]}
            if not calls and not str(reply.text).strip():
                log.warning("chat model sent an empty answer")
                return {"messages": [AIMessage(EMPTY)]}
        return {"messages": [reply]}

    propose, approval = make_nodes(deps)
    graph = StateGraph(ChatState)
    graph.add_node("agent", agent)
    graph.add_node("propose", propose)
    graph.add_node("approval", approval, destinations=("tools", "agent"))
    graph.add_node("tools", ToolNode(tools, handle_tool_errors=True))
    graph.add_edge(START, "agent")
    graph.add_conditional_edges("agent", route_after_agent, ["propose", "tools", END])
    graph.add_edge("propose", "approval")
    graph.add_edge("tools", "agent")
    return graph.compile(checkpointer=checkpointer)
