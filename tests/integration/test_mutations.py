"""Approved mutations against a real Dovecot: exactly the approved messages change."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from app.config import ImapAccount, Settings
from app.graph.deps import GraphDeps
from app.graph.planner import ScriptedPlanner
from app.graph.service import ChatService
from app.jobs.models import Job, JobStatus, JobType
from app.jobs.store import JobStore
from tests.integration.test_executor_sync import seed
from tests.support.executor_harness import (
    mirror_state,
    running_executor,
    server_state,
    wait_for_job,
)

CLEANED = "Secretary/Auto-Cleaned"


async def synced(
    store: JobStore, pool: Any, account: ImapAccount, count: int = 40
) -> dict[str, Any]:
    await asyncio.to_thread(seed, account, count)
    job = await store.enqueue("sync")
    async with running_executor(str(pool.conninfo), account, workers=1):
        assert (await wait_for_job(store, job.job_id)).status is JobStatus.COMPLETED
    return await asyncio.to_thread(server_state, account)


async def inbox_rows(pool: Any, limit: int, where: str = "TRUE") -> list[dict[str, Any]]:
    async with pool.connection() as conn:
        return await (
            await conn.execute(
                f"SELECT folder, uidvalidity, uid, message_id, subject, flags FROM emails "
                f"WHERE folder = 'INBOX' AND {where} ORDER BY uid LIMIT %s",
                (limit,),
            )
        ).fetchall()


async def approve_and_run(
    store: JobStore,
    pool: Any,
    account: ImapAccount,
    job_type: JobType,
    rows: list[dict[str, Any]],
    **params: Any,
) -> Job:
    messages = [
        {k: r[k] for k in ("folder", "uidvalidity", "uid", "message_id", "subject")} for r in rows
    ]
    approval = await store.record_approval(
        thread_id="t",
        interrupt_id=f"i-{job_type}-{len(rows)}-{id(rows)}",
        action=job_type.value,
        params=params,
        messages=messages,
    )
    job = await store.enqueue(
        job_type, {**params, "messages": messages}, approval_id=approval.approval_id
    )
    async with running_executor(str(pool.conninfo), account, workers=1):
        return await wait_for_job(store, job.job_id)


def without(
    state: dict[str, dict[int, frozenset[str]]], folder: str, uids: set[int]
) -> dict[int, frozenset[str]]:
    return {u: f for u, f in state[folder].items() if u not in uids}


async def test_mark_read_changes_exactly_the_approved_messages(
    store: JobStore, pool: Any, imap_account: ImapAccount
) -> None:
    before = await synced(store, pool, imap_account)
    rows = await inbox_rows(pool, 5, "NOT ('\\Seen' = ANY (flags))")
    uids = {r["uid"] for r in rows}
    job = await approve_and_run(store, pool, imap_account, JobType.MARK_READ, rows)
    assert job.status is JobStatus.COMPLETED, job.error
    after = await asyncio.to_thread(server_state, imap_account)
    assert all("\\Seen" in after["INBOX"][u] for u in uids)
    assert without(after, "INBOX", uids) == without(before, "INBOX", uids)
    assert {k: v for k, v in after.items() if k != "INBOX"} == {
        k: v for k, v in before.items() if k != "INBOX"
    }
    assert await mirror_state(pool) == after


async def test_move_and_label(store: JobStore, pool: Any, imap_account: ImapAccount) -> None:
    before = await synced(store, pool, imap_account)
    rows = await inbox_rows(pool, 4)
    moved = await approve_and_run(
        store, pool, imap_account, JobType.MOVE, rows, target_folder="Projects/2026"
    )
    assert moved.status is JobStatus.COMPLETED, moved.error
    after = await asyncio.to_thread(server_state, imap_account)
    assert set(after["INBOX"]) == set(before["INBOX"]) - {r["uid"] for r in rows}
    assert len(after["Projects/2026"]) == 4
    labelled_rows = await inbox_rows(pool, 3)
    labelled = await approve_and_run(
        store, pool, imap_account, JobType.LABEL, labelled_rows, label="Follow-up"
    )
    assert labelled.status is JobStatus.COMPLETED, labelled.error
    final = await asyncio.to_thread(server_state, imap_account)
    assert {u for u, f in final["INBOX"].items() if "Follow-up" in f} == {
        r["uid"] for r in labelled_rows
    }
    mirror = await mirror_state(pool)
    assert mirror["INBOX"] == final["INBOX"]
    assert mirror["Projects/2026"] == final["Projects/2026"]


async def test_clean_then_undo_restores_folder_and_read_state(
    store: JobStore, pool: Any, imap_account: ImapAccount
) -> None:
    before = await synced(store, pool, imap_account)
    rows = await inbox_rows(pool, 6)
    uids = {r["uid"] for r in rows}
    was_seen = {r["uid"]: "\\Seen" in r["flags"] for r in rows}
    assert any(was_seen.values()) and not all(was_seen.values())
    job = await approve_and_run(
        store, pool, imap_account, JobType.CLEAN, rows, target_folder=CLEANED
    )
    assert job.status is JobStatus.COMPLETED, job.error
    after = await asyncio.to_thread(server_state, imap_account)
    assert len(after[CLEANED]) == 6 and all("\\Seen" in f for f in after[CLEANED].values())
    assert set(after["INBOX"]) == set(before["INBOX"]) - uids
    assert without(after, "INBOX", uids) == without(before, "INBOX", uids)
    events = await store.events_after(job.job_id)
    summary = events[-1].data["summary"]
    assert summary["action"] == "archive" and summary["target_folder"] == CLEANED
    assert sorted(summary["uids"]) == sorted(uids)

    undo = await approve_and_run(
        store, pool, imap_account, JobType.UNDO, rows, undo_of=str(job.job_id)
    )
    assert undo.status is JobStatus.COMPLETED, undo.error
    restored = await asyncio.to_thread(server_state, imap_account)
    assert restored[CLEANED] == {}
    assert len(restored["INBOX"]) == len(before["INBOX"])
    by_subject_seen = sorted("\\Seen" in f for f in restored["INBOX"].values())
    assert by_subject_seen == sorted("\\Seen" in f for f in before["INBOX"].values())
    assert await mirror_state(pool) == restored


async def test_stale_uidvalidity_and_vanished_messages_are_skipped_not_counted(
    store: JobStore, pool: Any, imap_account: ImapAccount
) -> None:
    await synced(store, pool, imap_account)
    rows = await inbox_rows(pool, 3)
    stale = [{**rows[0], "uidvalidity": rows[0]["uidvalidity"] + 1}]
    gone = [{**rows[1], "uid": 999_999}]
    job = await approve_and_run(
        store, pool, imap_account, JobType.MARK_READ, stale + gone + [rows[2]]
    )
    assert job.status is JobStatus.COMPLETED
    summary = (await store.events_after(job.job_id))[-1].data["summary"]
    assert summary["applied"] == 1 and summary["uids"] == [rows[2]["uid"]]
    reasons = sorted(s["reason"] for s in summary["skipped"])
    assert any("UIDVALIDITY" in r for r in reasons) and any("no longer" in r for r in reasons)
    state = await asyncio.to_thread(server_state, imap_account)
    assert ("\\Seen" in state["INBOX"][rows[0]["uid"]]) == ("\\Seen" in rows[0]["flags"])


async def test_chat_mark_read_end_to_end(
    store: JobStore, pool: Any, imap_account: ImapAccount
) -> None:
    await synced(store, pool, imap_account, count=60)
    chat = ChatService(GraphDeps(pool=pool, store=store, settings=Settings()), ScriptedPlanner())
    await chat.setup()
    turn = await chat.send(None, "mark the GitHub notifications as read")
    assert turn.interrupt is not None
    approved = {m["uid"] for g in turn.interrupt["actions"][0]["groups"] for m in g["messages"]}
    assert approved
    done = await chat.resume(turn.thread_id, turn.interrupt["id"], "approve")
    [job_id] = done.job_ids
    job = await store.get(uuid.UUID(job_id))
    assert job is not None and job.job_type is JobType.MARK_READ
    async with running_executor(str(pool.conninfo), imap_account, workers=1):
        final = await wait_for_job(store, job.job_id)
    assert final.status is JobStatus.COMPLETED
    state = await asyncio.to_thread(server_state, imap_account)
    assert all("\\Seen" in state["INBOX"][u] for u in approved)
