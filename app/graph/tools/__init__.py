"""Piper's tools, by role: `mailbox` (look-ups and the read-only sync),
`triage` (ranking and /clean discovery), `mutations` (mailbox changes, each
behind an approval). None of them touches IMAP; results are artifacts
(`results.py`), the arguments pydantic models (`schemas.py`)."""

from __future__ import annotations

from langchain_core.tools import BaseTool

from app.graph.deps import GraphDeps
from app.graph.tools.mailbox import make_mailbox_tools
from app.graph.tools.mutations import MUTATION_TOOLS, make_mutation_tools
from app.graph.tools.triage import make_triage_tools

__all__ = ["MUTATION_TOOLS", "make_tools"]


def make_tools(deps: GraphDeps) -> list[BaseTool]:
    return [*make_mailbox_tools(deps), *make_triage_tools(deps), *make_mutation_tools(deps)]
