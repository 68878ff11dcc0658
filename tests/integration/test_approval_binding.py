"""Approvals bind mutation jobs, in the database and again in the executor.

SPEC §8: "Each mutation job is bound to one approval in the database (one job
per approval), and changes only messages that approval lists." The database
refuses any other job, whoever writes it (a second writer with psql included),
and the executor reads the approved set from the approvals row, so even a job
slipped past the database changes nothing it was not approved for.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import psycopg
import pytest
from langchain_core.messages import AIMessage
from psycopg.types.json import Jsonb

from app.config import ImapAccount, Settings
from app.graph.approval import make_nodes, propose_action
from app.graph.deps import GraphDeps
from app.jobs.models import JobStatus, JobType
from app.jobs.store import Approval, JobStore
from app.mail.folders import discarding_folder_reason
from app.mail.message_ref import normalise_message_id
from tests.integration.test_mutations import inbox_rows, synced
from tests.support.executor_harness import running_executor, server_state, wait_for_job
from tests.support.mirror_fixtures import email, insert_emails


def ident(uid: int, folder: str = "INBOX", validity: int = 1000) -> dict[str, Any]:
    return {
        "folder": folder,
        "uidvalidity": validity,
        "uid": uid,
        "message_id": f"m{uid}@x",
        "subject": "s",
    }


async def approve(
    store: JobStore,
    action: JobType = JobType.MARK_READ,
    messages: list[dict[str, Any]] | None = None,
    **params: Any,
) -> Approval:
    return await store.record_approval(
        thread_id="t",
        interrupt_id=f"i-{uuid.uuid4().hex}",
        action=action.value,
        params=params,
        messages=[ident(1), ident(2)] if messages is None else messages,
    )


async def job_count(pool: Any) -> int:
    async with pool.connection() as conn:
        row = await (await conn.execute("SELECT count(*) AS n FROM imap_jobs")).fetchone()
    return int(row["n"])


# -- the approval row --------------------------------------------------------------


async def test_an_empty_approval_is_refused_and_can_start_no_job(
    store: JobStore, pool: Any
) -> None:
    with pytest.raises(psycopg.errors.CheckViolation, match="at least one message"):
        await approve(store, messages=[])
    assert await job_count(pool) == 0


async def test_an_approval_names_exact_identities(store: JobStore) -> None:
    for bad in (
        [{"folder": "INBOX", "uid": 1}],  # no UIDVALIDITY
        [{"folder": "INBOX", "uidvalidity": "1000", "uid": 1}],  # a string is not an identity
        [{"folder": "INBOX", "uidvalidity": 1000, "uid": 1.5}],
        ["INBOX:1000:1"],
    ):
        with pytest.raises(psycopg.errors.CheckViolation):
            await approve(store, messages=bad)  # type: ignore[arg-type]


async def test_an_approval_never_changes_and_is_never_deleted(store: JobStore, pool: Any) -> None:
    approval = await approve(store)
    async with pool.connection() as conn:
        for sql in (
            "UPDATE approvals SET messages = messages || %s WHERE approval_id = %s",
            "UPDATE approvals SET action = 'clean' WHERE approval_id = %s",
            "DELETE FROM approvals WHERE approval_id = %s",
        ):
            args = (
                (Jsonb([ident(99)]), approval.approval_id)
                if "||" in sql
                else (approval.approval_id,)
            )
            with pytest.raises(psycopg.errors.CheckViolation):
                await conn.execute(sql, args)
            await conn.rollback()
    again = await store.get_approval(approval.approval_id)
    assert again == approval


async def test_a_read_only_type_cannot_be_approved(store: JobStore) -> None:
    with pytest.raises(psycopg.errors.CheckViolation, match="not one"):
        await approve(store, JobType.SYNC)


# -- the job made from it ------------------------------------------------------------


async def test_the_job_is_made_from_the_approval_row(store: JobStore) -> None:
    approval = await approve(store, JobType.MOVE, target_folder="Receipts")
    job = await store.enqueue_approved(approval.approval_id)
    assert job is not None
    assert job.job_type is JobType.MOVE and job.approval_id == approval.approval_id
    assert job.payload == {"target_folder": "Receipts", "messages": approval.messages}
    assert job.total_estimate == 2
    assert await store.enqueue_approved(uuid.uuid4()) is None  # no approval, no job


async def test_one_job_per_approval_however_often_and_concurrently_it_is_enqueued(
    store: JobStore, pool: Any
) -> None:
    approval = await approve(store)
    jobs = await asyncio.gather(*(store.enqueue_approved(approval.approval_id) for _ in range(12)))
    assert len({j.job_id for j in jobs if j is not None}) == 1
    # A second writer going around the store is refused by the database.
    with pytest.raises(psycopg.errors.UniqueViolation):
        await store.enqueue(
            JobType.MARK_READ,
            {"messages": approval.messages},
            approval_id=approval.approval_id,
        )
    assert await job_count(pool) == 1


@pytest.mark.parametrize(
    ("job_type", "payload", "why"),
    [
        (JobType.CLEAN, {"messages": [ident(1)]}, "approved mark_read, not clean"),
        (JobType.MARK_READ, {"messages": [ident(1), ident(3)]}, "does not list"),
        (JobType.MARK_READ, {"messages": [ident(1, validity=1001)]}, "does not list"),
        (JobType.MARK_READ, {"messages": [ident(1, folder="Other")]}, "does not list"),
        (JobType.MARK_READ, {"messages": [{**ident(1), "uid": "1"}]}, "does not list"),
        (JobType.MARK_READ, {"messages": []}, "never means all"),
        (JobType.MARK_READ, {"messages": [ident(1)], "target_folder": "X"}, "parameters"),
        (JobType.MARK_READ, {"messages": "all"}, "never means all"),
    ],
)
async def test_a_hand_made_job_that_differs_from_its_approval_is_refused(
    store: JobStore, pool: Any, job_type: JobType, payload: dict[str, Any], why: str
) -> None:
    approval = await approve(store)
    with pytest.raises(psycopg.errors.CheckViolation, match=why):
        await store.enqueue(job_type, payload, approval_id=approval.approval_id)
    assert await job_count(pool) == 0


async def test_a_job_cannot_be_rebound_to_other_messages_or_another_approval(
    store: JobStore, pool: Any
) -> None:
    approval = await approve(store)
    other = await approve(store, JobType.CLEAN, target_folder="Secretary/Auto-Cleaned")
    job = await store.enqueue_approved(approval.approval_id)
    assert job is not None
    async with pool.connection() as conn:
        for sql, args in (
            (
                "UPDATE imap_jobs SET payload = jsonb_set(payload, '{messages}', %s) WHERE job_id = %s",
                (Jsonb([ident(1), ident(7)]), job.job_id),
            ),
            (
                "UPDATE imap_jobs SET approval_id = %s WHERE job_id = %s",
                (other.approval_id, job.job_id),
            ),
            ("UPDATE imap_jobs SET job_type = 'clean' WHERE job_id = %s", (job.job_id,)),
        ):
            with pytest.raises(psycopg.errors.CheckViolation):
                await conn.execute(sql, args)
            await conn.rollback()
    assert (await store.get(job.job_id)) == job


async def test_a_narrower_job_is_allowed(store: JobStore) -> None:
    approval = await approve(store)
    job = await store.enqueue(
        JobType.MARK_READ, {"messages": [ident(2)]}, approval_id=approval.approval_id
    )
    assert [m["uid"] for m in job.payload["messages"]] == [2]


async def test_an_undo_approval_lists_only_what_the_undone_job_recorded_changing(
    store: JobStore,
) -> None:
    original = await store.enqueue_approved((await approve(store)).approval_id)
    assert original is not None
    with pytest.raises(psycopg.errors.CheckViolation, match="recorded changing"):
        await approve(store, JobType.UNDO, [ident(1)], undo_of=str(original.job_id))
    with pytest.raises(psycopg.errors.CheckViolation, match="names the job"):
        await approve(store, JobType.UNDO, [ident(1)])
    with pytest.raises(psycopg.errors.CheckViolation, match="can be undone"):
        await approve(store, JobType.UNDO, [ident(1)], undo_of=str(uuid.uuid4()))


# -- the executor, for a job slipped past the database --------------------------------


async def test_the_executor_fails_a_job_naming_unapproved_messages_and_changes_nothing(
    store: JobStore, pool: Any, imap_account: ImapAccount
) -> None:
    before = await synced(store, pool, imap_account, count=12)
    rows = await inbox_rows(pool, 3, "NOT ('\\Seen' = ANY (flags))")
    assert len(rows) == 3
    approved = [
        {k: r[k] for k in ("folder", "uidvalidity", "uid", "message_id", "subject")}
        for r in rows[:2]
    ]
    smuggled = {k: rows[2][k] for k in ("folder", "uidvalidity", "uid", "message_id", "subject")}
    approval = await approve(store, JobType.MARK_READ, approved)
    # A superuser with the triggers off: what the database alone cannot stop.
    async with pool.connection() as conn:
        await conn.execute("SET session_replication_role = replica")
        row = await (
            await conn.execute(
                "INSERT INTO imap_jobs (job_type, payload, approval_id) VALUES ('mark_read', %s, %s) "
                "RETURNING job_id",
                (Jsonb({"messages": [*approved, smuggled]}), approval.approval_id),
            )
        ).fetchone()
        await conn.execute("SET session_replication_role = origin")
    async with running_executor(str(pool.conninfo), imap_account, workers=1):
        job = await wait_for_job(store, row["job_id"])
    assert job.status is JobStatus.FAILED
    assert job.error and "does not list" in job.error
    assert await asyncio.to_thread(server_state, imap_account) == before


async def test_the_executor_acts_on_the_approval_row_not_the_payload_params(
    store: JobStore, pool: Any, imap_account: ImapAccount
) -> None:
    before = await synced(store, pool, imap_account, count=8)
    rows = await inbox_rows(pool, 2)
    msgs = [
        {k: r[k] for k in ("folder", "uidvalidity", "uid", "message_id", "subject")} for r in rows
    ]
    approval = await approve(store, JobType.MOVE, msgs, target_folder="Receipts")
    async with pool.connection() as conn:
        await conn.execute("SET session_replication_role = replica")
        row = await (
            await conn.execute(
                "INSERT INTO imap_jobs (job_type, payload, approval_id) VALUES ('move', %s, %s) "
                "RETURNING job_id",
                (Jsonb({"messages": msgs, "target_folder": "Elsewhere"}), approval.approval_id),
            )
        ).fetchone()
        await conn.execute("SET session_replication_role = origin")
    async with running_executor(str(pool.conninfo), imap_account, workers=1):
        job = await wait_for_job(store, row["job_id"])
    assert job.status is JobStatus.COMPLETED, job.error
    after = await asyncio.to_thread(server_state, imap_account)
    assert "Elsewhere" not in after and len(after["Receipts"]) == 2
    assert len(after["INBOX"]) == len(before["INBOX"]) - 2


# -- nothing that deletes by another name ------------------------------------------


@pytest.mark.parametrize(
    "folder",
    [
        "Trash",
        "trash",
        "Junk",
        "Spam",
        "Deleted Items",
        "[Gmail]/Trash",
        "[Gmail]/Spam",
        "INBOX.Trash",
        "INBOX/Junk E-mail",
        " Deleted  Messages ",
    ],
)
def test_trash_and_spam_folders_are_recognised_by_name(folder: str) -> None:
    assert discarding_folder_reason(folder) is not None


@pytest.mark.parametrize(
    "folder", ["Receipts", "Projects/Spamalot", "Secretary/Auto-Cleaned", "Trash talk"]
)
def test_ordinary_folders_are_not(folder: str) -> None:
    assert discarding_folder_reason(folder) is None


def test_special_use_flags_count_whatever_the_name() -> None:
    assert discarding_folder_reason("Papierkorb", ["\\HasNoChildren", "\\Trash"]) is not None
    assert discarding_folder_reason("Pourriel", ["\\Junk"]) is not None
    assert discarding_folder_reason("Archive", ["\\Archive"]) is None


async def test_a_move_into_trash_gets_no_approval_card(store: JobStore, pool: Any) -> None:
    await insert_emails(pool, [email(4, subject="Lunch?", from_addr="bob@example.org")])
    deps = GraphDeps(pool=pool, store=store, settings=Settings())
    for target in ("Trash", "[Gmail]/Spam"):
        action = await propose_action(
            deps,
            {
                "name": "move_emails",
                "id": "c1",
                "args": {"messages": ["INBOX:1000:4"], "target_folder": target},
            },
        )
        assert action["groups"] == []
        assert action["excluded"] and "Trash or Spam" in action["excluded"][0]["reason"]
    label = await propose_action(
        deps,
        {
            "name": "apply_label",
            "id": "c2",
            "args": {"messages": ["INBOX:1000:4"], "label": "Deleted Items"},
        },
    )
    assert label["groups"] == []


async def test_the_executor_refuses_a_move_into_trash(
    store: JobStore, pool: Any, imap_account: ImapAccount
) -> None:
    before = await synced(store, pool, imap_account, count=6)
    rows = await inbox_rows(pool, 2)
    msgs = [
        {k: r[k] for k in ("folder", "uidvalidity", "uid", "message_id", "subject")} for r in rows
    ]
    approval = await approve(store, JobType.MOVE, msgs, target_folder="Trash")
    job = await store.enqueue_approved(approval.approval_id)
    assert job is not None
    async with running_executor(str(pool.conninfo), imap_account, workers=1):
        done = await wait_for_job(store, job.job_id)
    assert done.status is JobStatus.FAILED and "Trash" in (done.error or "")
    assert await asyncio.to_thread(server_state, imap_account) == before  # not even created


# -- the approval node fails closed ------------------------------------------------


async def test_an_absent_proposal_is_a_rejection_and_no_tool_runs(
    store: JobStore, pool: Any
) -> None:
    deps = GraphDeps(pool=pool, store=store, settings=Settings())
    _propose, approval_node = make_nodes(deps)
    call = {
        "name": "mark_read",
        "id": "c1",
        "type": "tool_call",
        "args": {"messages": ["INBOX:1000:1"]},
    }
    for proposal in (None, {}):
        command = await approval_node(
            {"messages": [AIMessage(content="", tool_calls=[call])], "proposal": proposal},
            {"configurable": {"thread_id": "t"}},
        )
        assert command.goto == "agent"
        [reply] = command.update["messages"]
        assert "rejected" in reply.content and reply.tool_call_id == "c1"
        assert "approvals" not in command.update
    assert await job_count(pool) == 0


# -- exact Message-IDs ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Message-ID: <abc@x.example>\r\n\r\n", "abc@x.example"),
        (b"Message-Id:\r\n <abc@x.example>\r\n", "abc@x.example"),
        ("<abc@x.example> (comment)", "abc@x.example"),
        ("  abc@x.example  ", "abc@x.example"),
        ("Message-ID: \r\n\r\n", None),
        (None, None),
    ],
)
def test_message_ids_are_normalised_like_the_mirror_does(raw: Any, expected: str | None) -> None:
    assert normalise_message_id(raw) == expected
