"""Call a tool the way the graph's ToolNode does (a tool call), for its artifact."""

from __future__ import annotations

from typing import Any

from langchain_core.tools import BaseTool


async def artifact(tool: BaseTool, **args: Any) -> Any:
    message = await tool.ainvoke({"name": tool.name, "args": args, "id": "t1", "type": "tool_call"})
    return message.artifact
