"""top_by_confidence over the mirror, and the chat prompt that drives it."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from app.config import Settings
from app.graph.deps import GraphDeps
from app.graph.planner import ScriptedPlanner
from app.graph.service import ChatService
from app.graph.triage_tools import make_triage_tools
from app.jobs.store import JobStore
from tests.support.mirror_fixtures import email, github, insert_emails

NOW = datetime(2026, 11, 20, 15, 0, tzinfo=UTC)  # 10:00 in New York
TZ = "America/New_York"


def at(hour: int, day: int = 20) -> datetime:
    return datetime(2026, 11, day, hour, 0, tzinfo=UTC)


FIXTURE = [
    # uid, when, subject/body, flags
    email(
        1,
        date=at(14),
        subject="Contract",
        body_excerpt="Could you sign the contract today? It is urgent.",
    ),
    email(2, date=at(13), subject="Lunch", body_excerpt="Can you join lunch?"),
    email(
        3,
        date=at(12),
        subject="Invitation: planning @ Fri",
        body_excerpt="Join Zoom Meeting https://zoom.us/j/123 - can you make it?",
        flags=["\\Seen"],
    ),
    email(
        4, date=at(3), subject="Late night", body_excerpt="Could you reply by tomorrow?"
    ),  # 22:00 yesterday in NY
    email(5, date=at(14, day=19), subject="Old ask", body_excerpt="Can you check this today?"),
    email(
        6,
        date=at(11),
        subject="FYI",
        to_addrs=["team@example.org"],
        cc_addrs=["alex.roy@example.com"],
        body_excerpt="The deck is up.",
    ),
    github(7, date=at(10)),
    email(
        8,
        date=at(9),
        subject="Zoom recording",
        body_excerpt="Recording: https://zoom.us/rec/abc",
        to_addrs=["team@example.org"],
    ),
]


@pytest.fixture
async def deps(pool: Any) -> GraphDeps:
    await insert_emails(pool, FIXTURE)
    return GraphDeps(
        pool=pool, store=JobStore(pool), settings=Settings(timezone=TZ), clock=lambda: NOW
    )


async def call(deps: GraphDeps, **args: Any) -> dict[str, Any]:
    [_, top] = make_triage_tools(deps)
    return json.loads(await top.ainvoke(args))


async def test_results_are_sorted_and_carry_scores_and_reasons(deps: GraphDeps) -> None:
    out = await call(deps, category="action_required", n=10, filters=[])
    conf = [r["confidence"] for r in out["results"]]
    assert conf == sorted(conf, reverse=True) and all(0 < c <= 1 for c in conf)
    assert all(r["reasons"] and r["category"] == "action_required" for r in out["results"])
    assert out["results"][0]["subject"] == "Contract"


async def test_today_uses_the_configured_timezone(deps: GraphDeps) -> None:
    out = await call(deps, category="action_required", n=10, filters=["today"])
    subjects = [r["subject"] for r in out["results"]]
    assert "Late night" not in subjects and "Old ask" not in subjects
    assert subjects[0] == "Contract" and set(subjects) <= {
        "Contract",
        "Lunch",
        "Invitation: planning @ Fri",
    }


async def test_unread_and_zoom_filters_and_their_combination(deps: GraphDeps) -> None:
    zoom = await call(deps, category=None, n=10, filters=["zoom"])
    assert {r["subject"] for r in zoom["results"]} == {
        "Invitation: planning @ Fri",
        "Zoom recording",
    }
    unread_zoom = await call(deps, category=None, n=10, filters=["zoom", "unread"])
    assert [r["subject"] for r in unread_zoom["results"]] == ["Zoom recording"]
    unread = await call(deps, category=None, n=20, filters=["unread"])
    assert all(r["unread"] for r in unread["results"]) and len(unread["results"]) == 7


async def test_ties_are_broken_by_newest_first(deps: GraphDeps) -> None:
    out = await call(deps, category=None, n=20, filters=[])
    for a, b in zip(out["results"], out["results"][1:], strict=False):
        if a["confidence"] == b["confidence"]:
            assert a["date"] >= b["date"]


async def test_bad_filter_or_category_is_a_clear_error(deps: GraphDeps) -> None:
    assert "error" in await call(deps, category="bogus", n=5, filters=[])
    assert "error" in await call(deps, category=None, n=5, filters=["tomorrow"])


async def test_chat_prompt_triggers_the_tool_and_lists_the_expected_messages(
    deps: GraphDeps,
) -> None:
    chat = ChatService(deps, ScriptedPlanner())
    await chat.setup()
    turn = await chat.send(None, "top 10 highest-confidence action-required from today")
    state = await chat.graph.aget_state(chat._config(turn.thread_id))
    calls = [c for m in state.values["messages"] if m.type == "ai" for c in m.tool_calls]
    assert calls == [
        {
            "name": "top_by_confidence",
            "args": {"n": 10, "filters": ["today"], "category": "action_required"},
            "id": calls[0]["id"],
            "type": "tool_call",
        }
    ]
    expected = await call(deps, category="action_required", n=10, filters=["today"])
    answer = turn.messages[-1]["content"]
    for r in expected["results"]:
        assert r["subject"] in answer
    assert "Late night" not in answer and "Old ask" not in answer
