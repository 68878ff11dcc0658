"""Piper's graph with the scripted planner, real Postgres checkpoints and job store."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from app.config import Settings
from app.db.pool import open_pool
from app.graph.deps import GraphDeps
from app.graph.offline_model import ScriptedPlanner
from app.graph.service import ChatError, ChatService
from app.jobs.models import JobType
from app.jobs.store import JobStore
from tests.support.mirror_fixtures import email, github, insert_emails


async def make_service(pool: Any) -> ChatService:
    deps = GraphDeps(pool=pool, store=JobStore(pool), settings=Settings())
    service = ChatService(deps, ScriptedPlanner())
    await service.setup()
    return service


@pytest.fixture
async def chat(pool: Any) -> ChatService:
    await insert_emails(
        pool,
        [
            github(1),
            github(2, flags=["\\Seen"]),
            github(3),
            email(4, subject="Lunch?", from_addr="bob@example.org", cc_addrs=["x@example.org"]),
        ],
    )
    return await make_service(pool)


async def jobs(store: JobStore) -> list[Any]:
    return await store.list(limit=100)


async def test_read_only_tool_returns_a_job_id_and_raises_no_interrupt(
    chat: ChatService, store: JobStore
) -> None:
    turn = await chat.send(None, "/sync")
    assert turn.interrupt is None
    assert len(turn.job_ids) == 1
    [job] = await jobs(store)
    assert str(job.job_id) == turn.job_ids[0] and job.job_type is JobType.SYNC
    assert turn.messages[-1].type == "ai" and turn.job_ids[0][:8] in turn.messages[-1].text


async def test_mutation_raises_an_interrupt_with_the_messages_and_enqueues_nothing(
    chat: ChatService, store: JobStore
) -> None:
    turn = await chat.send(None, "mark the GitHub notifications as read")
    assert turn.interrupt is not None and turn.interrupt["kind"] == "approval"
    [action] = turn.interrupt["actions"]
    shown = [m for g in action["groups"] for m in g["messages"]]
    assert {m["uid"] for m in shown} == {1, 3}  # only the unread ones need it
    for m in shown:
        assert {"date", "from", "to", "cc", "subject"} <= m.keys()
    assert await jobs(store) == []
    assert turn.job_ids == []


async def test_approve_enqueues_exactly_one_job_with_the_approval(
    chat: ChatService, store: JobStore
) -> None:
    turn = await chat.send(None, "mark the GitHub notifications as read")
    done = await chat.resume(turn.thread_id, turn.interrupt["id"], "approve")  # type: ignore[index]
    assert done.interrupt is None and len(done.job_ids) == 1
    [job] = await jobs(store)
    assert job.job_type is JobType.MARK_READ and job.approval_id is not None
    approval = await store.get_approval(job.approval_id)
    assert approval is not None and approval.thread_id == turn.thread_id
    assert (
        {m["uid"] for m in approval.messages}
        == {m["uid"] for m in job.payload["messages"]}
        == {1, 3}
    )


async def test_reject_enqueues_nothing_and_says_so(chat: ChatService, store: JobStore) -> None:
    turn = await chat.send(None, "mark the GitHub notifications as read")
    done = await chat.resume(turn.thread_id, turn.interrupt["id"], "reject")  # type: ignore[index]
    assert done.interrupt is None and done.job_ids == []
    assert await jobs(store) == []
    assert "nothing was changed" in done.messages[-1].text.lower()


async def test_selection_approves_only_the_chosen_messages(
    chat: ChatService, store: JobStore
) -> None:
    turn = await chat.send(None, "mark the GitHub notifications as read")
    chosen = [
        m["id"]
        for g in turn.interrupt["actions"][0]["groups"]
        for m in g["messages"]
        if m["uid"] == 3
    ]  # type: ignore[index]
    await chat.resume(turn.thread_id, turn.interrupt["id"], "approve", chosen + ["INBOX:1000:4"])  # type: ignore[index]
    [job] = await jobs(store)
    assert [m["uid"] for m in job.payload["messages"]] == [3]  # never more than was proposed


async def test_double_approve_gives_one_job_and_a_conflict(
    chat: ChatService, store: JobStore
) -> None:
    turn = await chat.send(None, "mark the GitHub notifications as read")
    iid = turn.interrupt["id"]  # type: ignore[index]
    results = await asyncio.gather(
        chat.resume(turn.thread_id, iid, "approve"),
        chat.resume(turn.thread_id, iid, "approve"),
        return_exceptions=True,
    )
    assert len(await jobs(store)) == 1
    errors = [r for r in results if isinstance(r, ChatError)]
    assert len(errors) == 1 and errors[0].status == 409


async def test_stale_interrupt_and_unknown_thread(chat: ChatService) -> None:
    turn = await chat.send(None, "mark the GitHub notifications as read")
    with pytest.raises(ChatError) as stale:
        await chat.resume(turn.thread_id, "not-the-interrupt", "approve")
    assert stale.value.status == 409
    with pytest.raises(ChatError) as unknown:
        await chat.resume("no-such-thread", "x", "approve")
    assert unknown.value.status == 404
    with pytest.raises(ChatError) as bad:
        await chat.resume(turn.thread_id, turn.interrupt["id"], "maybe")  # type: ignore[index]
    assert bad.value.status == 422


async def test_web_restart_between_interrupt_and_approval(
    chat: ChatService, database_url: str
) -> None:
    turn = await chat.send(None, "mark the GitHub notifications as read")
    other_pool = await open_pool(database_url)  # a new process: new pool, new graph
    try:
        restarted = await make_service(other_pool)
        view = await restarted.view(turn.thread_id)
        assert view.interrupt is not None and view.interrupt["id"] == turn.interrupt["id"]  # type: ignore[index]
        done = await restarted.resume(turn.thread_id, view.interrupt["id"], "approve")
        assert len(done.job_ids) == 1
    finally:
        await other_pool.close()


async def test_a_model_cannot_smuggle_its_own_approval_id(pool: Any, store: JobStore) -> None:
    from langchain_core.messages import AIMessage

    await insert_emails(pool, [github(1)])

    class Sneaky(ScriptedPlanner):
        def respond(self, messages: Any) -> AIMessage:  # type: ignore[override]
            if messages and messages[-1].type == "human":
                return AIMessage(
                    content="",
                    tool_calls=[
                        {
                            "name": "mark_read",
                            "id": "c1",
                            "type": "tool_call",
                            "args": {
                                "messages": ["INBOX:1000:1"],
                                "approval_id": "00000000-0000-0000-0000-000000000000",
                            },
                        }
                    ],
                )
            return AIMessage(content="ok")

    deps = GraphDeps(pool=pool, store=store, settings=Settings())
    service = ChatService(deps, Sneaky())
    await service.setup()
    turn = await service.send(None, "go")
    assert turn.interrupt is not None  # still has to ask
    assert await jobs(store) == []


async def test_move_and_label_requests_carry_their_parameters(
    chat: ChatService, store: JobStore
) -> None:
    turn = await chat.send(None, "move emails from bob@example.org to Receipts")
    action = turn.interrupt["actions"][0]  # type: ignore[index]
    assert action["action"] == "move" and action["params"]["target_folder"] == "Receipts"
    await chat.resume(turn.thread_id, turn.interrupt["id"], "approve")  # type: ignore[index]
    [job] = await jobs(store)
    assert job.job_type is JobType.MOVE and job.payload["target_folder"] == "Receipts"
    assert [m["uid"] for m in job.payload["messages"]] == [4]


async def test_new_message_sets_a_pending_approval_aside(
    chat: ChatService, store: JobStore
) -> None:
    turn = await chat.send(None, "mark the GitHub notifications as read")
    after = await chat.send(turn.thread_id, "/status")
    assert after.interrupt is None
    assert await jobs(store) == []


async def test_a_streamed_turn_yields_tool_events_and_tokens_then_the_turn(
    chat: ChatService, store: JobStore
) -> None:
    from app.graph.service import ChatTurn, TurnStarted

    items = [item async for item in chat.stream_send(None, "/sync")]
    assert isinstance(items[0], TurnStarted) and isinstance(items[-1], ChatTurn)
    events = items[1:-1]
    assert [e for e in events if e["type"] == "tool"] == [
        {"type": "tool", "name": "sync_mailbox", "status": "start"},
        {"type": "tool", "name": "sync_mailbox", "status": "end"},
    ]
    tokens = "".join(e["text"] for e in events if e["type"] == "token")
    turn = items[-1]
    assert tokens == turn.messages[-1].text and len(turn.job_ids) == 1
    assert [str(j.job_id) for j in await jobs(store)] == turn.job_ids
