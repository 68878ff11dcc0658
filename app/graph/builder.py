"""Piper's graph: agent → (propose → approval) → tools → agent."""

from __future__ import annotations

from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, SystemMessage
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.prebuilt import ToolNode

from app.graph.approval import make_nodes
from app.graph.deps import GraphDeps
from app.graph.planner import SYSTEM_PROMPT
from app.graph.state import ChatState
from app.graph.tools import MUTATION_TOOLS, make_tools


def route_after_agent(state: ChatState) -> str:
    last = state["messages"][-1]
    if not isinstance(last, AIMessage) or not last.tool_calls:
        return END
    if any(c["name"] in MUTATION_TOOLS for c in last.tool_calls):
        return "propose"
    return "tools"


def build_graph(
    deps: GraphDeps, model: BaseChatModel, checkpointer: BaseCheckpointSaver[Any] | None = None
) -> CompiledStateGraph[Any, Any, Any, Any]:
    tools = make_tools(deps)
    bound = model.bind_tools(tools)

    async def agent(state: ChatState) -> dict[str, Any]:
        reply = await bound.ainvoke([SystemMessage(SYSTEM_PROMPT), *state["messages"]])
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
