"""Approved mutations against a real Dovecot: exactly the approved messages change."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from app.config import ImapAccount, Settings
from app.graph.deps import GraphDeps
from app.graph.offline_model import ScriptedPlanner
from app.graph.service import ChatService
from app.jobs.models import Job, JobStatus, JobType
from app.jobs.store import ChangeState, JobStore
from app.web.fragments import to_batch_update
from executor import imap_ops
from tests.integration.test_executor_sync import seed
from tests.support.executor_harness import (
    imap_connect,
    mirror_state,
    running_executor,
    server_state,
    wait_for_job,
)

CLEANED = "Secretary/Auto-Cleaned"
Mailbox = dict[str, list[tuple[str | None, frozenset[str]]]]


def mailbox(account: ImapAccount) -> Mailbox:
    """folder → sorted (Message-ID, flags): the mailbox as a person sees it,
    whatever UIDs moves handed out (read-only: EXAMINE and BODY.PEEK)."""
    client = imap_connect(account)
    try:
        out: Mailbox = {}
        for flags, _, name in client.list_folders():
            if b"\\Noselect" in flags:
                continue
            info = client.select_folder(name, readonly=True)
            items: list[tuple[str | None, frozenset[str]]] = []
            if info.get(b"EXISTS"):
                state = imap_ops.fetch_state(client, client.search("ALL"))
                items = [(mid, frozenset(f)) for f, mid in state.values()]
            if items:
                out[name] = sorted(items, key=lambda i: (i[0] or "", sorted(i[1])))
        return out
    finally:
        client.logout()


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
    job = await store.enqueue_approved(approval.approval_id)
    assert job is not None
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
    prior = await asyncio.to_thread(mailbox, imap_account)
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
    # The finished card reads the change record, not the last event.
    record = (await store.change_summaries([job.job_id]))[job.job_id]
    assert record.applied == 6 and sorted(record.uids) == sorted(uids)
    card = to_batch_update(job.snapshot(), None, record={"applied": 6, "uids": record.uids})
    assert card["type"] == "batch_complete" and sorted(card["uids"]) == sorted(uids)

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
    assert await asyncio.to_thread(mailbox, imap_account) == prior


async def approve_rows(
    store: JobStore,
    job_type: JobType,
    rows: list[dict[str, Any]],
    *,
    batch_size: int = 2,
    max_attempts: int = 5,
    **params: Any,
) -> Job:
    approval = await store.record_approval(
        thread_id="t",
        interrupt_id=f"i-{uuid.uuid4().hex}",
        action=job_type.value,
        params=params,
        messages=[
            {k: r[k] for k in ("folder", "uidvalidity", "uid", "message_id", "subject")}
            for r in rows
        ],
    )
    job = await store.enqueue_approved(
        approval.approval_id, batch_size=batch_size, max_attempts=max_attempts
    )
    assert job is not None
    return job


async def undo_everything_recorded(
    store: JobStore, pool: Any, original: Job, **enqueue: Any
) -> Job:
    """The undo the chat would propose: the approval lists what the record says."""
    from app.graph.approval import propose_action

    deps = GraphDeps(pool=pool, store=store, settings=Settings())
    action = await propose_action(
        deps, {"name": "undo_job", "id": "u1", "args": {"job_id": str(original.job_id)}}
    )
    cards = [m for g in action["groups"] for m in g["messages"]]
    assert cards, action["description"]
    return await approve_rows(store, JobType.UNDO, cards, **enqueue, **action["params"])


async def test_seen_set_before_a_failed_move_is_recorded_and_undone(
    store: JobStore, pool: Any, imap_account: ImapAccount, monkeypatch: Any
) -> None:
    await synced(store, pool, imap_account, count=20)
    prior = await asyncio.to_thread(mailbox, imap_account)
    rows = await inbox_rows(pool, 4, "NOT ('\\Seen' = ANY (flags))")
    assert len(rows) == 4

    def refuse(*_a: Any, **_k: Any) -> Any:
        raise imap_ops.IMAPClientError("MOVE failed: quota exceeded")

    monkeypatch.setattr(imap_ops, "move_uids", refuse)
    job = await approve_rows(store, JobType.CLEAN, rows, target_folder=CLEANED)
    async with running_executor(str(pool.conninfo), imap_account, workers=1):
        done = await wait_for_job(store, job.job_id)
    monkeypatch.undo()
    assert done.status is JobStatus.FAILED  # nothing could be moved
    changes = await store.job_changes(job.job_id)
    assert {c.state for c in changes} == {ChangeState.FAILED}
    assert all(c.flags_added == ("\\Seen",) and "\\Seen" not in c.flags_before for c in changes)
    marked = await asyncio.to_thread(server_state, imap_account)
    assert all("\\Seen" in marked["INBOX"][r["uid"]] for r in rows)  # the STORE did happen
    undo = await undo_everything_recorded(store, pool, done)
    async with running_executor(str(pool.conninfo), imap_account, workers=1):
        undone = await wait_for_job(store, undo.job_id)
    assert undone.status is JobStatus.COMPLETED, undone.error
    assert await asyncio.to_thread(mailbox, imap_account) == prior  # unread again


def lose_the_first_answer(monkeypatch: Any, change: str) -> list[int]:
    """`imap_ops.<change>` (a MOVE or COPY) does its work on the server, then,
    the first time, the connection drops before its answer is read: the UIDs
    of that batch are returned (filled in when it happens)."""
    real = getattr(imap_ops, change)
    dropped: list[int] = []

    def then_drop(client: Any, uids: Any, target: str) -> Any:
        result = real(client, uids, target)
        if not dropped:
            dropped.extend(uids)
            raise imap_ops.IMAPClientAbortError("connection reset after the change")
        return result

    monkeypatch.setattr(imap_ops, change, then_drop)
    return dropped


async def test_a_move_whose_answer_was_lost_is_reconciled_by_exact_message_id_on_retry(
    store: JobStore, pool: Any, imap_account: ImapAccount, monkeypatch: Any
) -> None:
    """The connection drops after the server moved the batch: the retry must
    find the moved copies (not record them as gone), and undo restores them."""
    await synced(store, pool, imap_account, count=20)
    prior = await asyncio.to_thread(mailbox, imap_account)
    rows = await inbox_rows(pool, 6)
    dropped = lose_the_first_answer(monkeypatch, "move_uids")
    job = await approve_rows(store, JobType.CLEAN, rows, target_folder=CLEANED)
    async with running_executor(str(pool.conninfo), imap_account, workers=1):
        done = await wait_for_job(store, job.job_id, timeout=90)
    monkeypatch.undo()
    assert done.status is JobStatus.COMPLETED, done.error
    assert done.attempt == 2 and len(dropped) == 2
    changes = {c.uid: c for c in await store.job_changes(job.job_id)}
    assert {c.state for c in changes.values()} == {ChangeState.APPLIED}
    assert {u for u, c in changes.items() if c.reason and "Message-ID" in c.reason} == set(dropped)
    after = await asyncio.to_thread(mailbox, imap_account)
    moved = {r["message_id"] for r in rows}
    assert sorted(m for m, _ in after[CLEANED]) == sorted(moved)  # each exactly once
    assert not moved & {m for m, _ in after["INBOX"]}
    undo = await undo_everything_recorded(store, pool, done)
    async with running_executor(str(pool.conninfo), imap_account, workers=1):
        undone = await wait_for_job(store, undo.job_id)
    assert undone.status is JobStatus.COMPLETED, undone.error
    assert await asyncio.to_thread(mailbox, imap_account) == prior


def append_twins(account: ImapAccount) -> list[dict[str, Any]]:
    """INBOX: three messages with Message-IDs of their own, and two (one read,
    one not) that share one (a list copy beside a direct one, migrated mail);
    returned as approval rows."""
    client = imap_connect(account)
    try:
        for mid, subject, flags in [
            ("own-1@x", "one", []),
            ("twin@x", "twin a", []),
            ("own-2@x", "two", []),
            ("twin@x", "twin b", ["\\Seen"]),
            ("own-3@x", "three", []),
        ]:
            raw = (
                f"Message-ID: <{mid}>\r\nFrom: a@example.org\r\nTo: b@example.org\r\n"
                f"Subject: {subject}\r\n\r\nbody\r\n"
            )
            client.append("INBOX", raw.encode(), flags=flags)
        info = client.select_folder("INBOX", readonly=True)
        state = imap_ops.fetch_state(client, client.search("ALL"))
        return [
            {
                "folder": "INBOX",
                "uidvalidity": int(info[b"UIDVALIDITY"]),
                "uid": uid,
                "message_id": mid,
                "subject": "",
            }
            for uid, (_flags, mid) in sorted(state.items())
        ]
    finally:
        client.logout()


@pytest.mark.parametrize(
    ("job_type", "params", "change"),
    [
        (JobType.CLEAN, {"target_folder": CLEANED}, "move_uids"),
        (JobType.LABEL, {"label": "Keep Me"}, "copy_uids"),  # a label that is a folder: COPY
    ],
)
async def test_twins_sharing_a_message_id_are_found_after_a_lost_answer_and_undone(
    store: JobStore,
    pool: Any,
    imap_account: ImapAccount,
    monkeypatch: Any,
    job_type: JobType,
    params: dict[str, Any],
    change: str,
) -> None:
    """The connection drops after the server moved (or copied) a batch. The retry
    finds each copy by its Message-ID above the target's UIDNEXT before the
    batch: two copies of one Message-ID there could not be told apart, so both
    were recorded failed and undo left them in the target, the unread one read.
    Twins now never share a batch."""
    rows = await asyncio.to_thread(append_twins, imap_account)
    prior = await asyncio.to_thread(mailbox, imap_account)
    dropped = lose_the_first_answer(monkeypatch, change)
    job = await approve_rows(store, job_type, rows, batch_size=10, **params)
    async with running_executor(str(pool.conninfo), imap_account, workers=1):
        done = await wait_for_job(store, job.job_id, timeout=90)
    monkeypatch.undo()
    assert done.status is JobStatus.COMPLETED, done.error
    assert len(dropped) == 4  # the first batch: everything but the second twin
    changes = await store.job_changes(job.job_id)
    assert {c.state for c in changes} == {ChangeState.APPLIED}, [c.reason for c in changes]
    undo = await undo_everything_recorded(store, pool, done, batch_size=10)
    if job_type is JobType.CLEAN:  # the undo's own move back loses its answer too
        dropped = lose_the_first_answer(monkeypatch, change)
    async with running_executor(str(pool.conninfo), imap_account, workers=1):
        undone = await wait_for_job(store, undo.job_id, timeout=90)
    monkeypatch.undo()
    assert undone.status is JobStatus.COMPLETED, undone.error
    assert job_type is not JobType.CLEAN or len(dropped) == 4
    assert await asyncio.to_thread(mailbox, imap_account) == prior


async def test_undo_finds_a_moved_message_by_its_exact_message_id_and_never_guesses(
    store: JobStore, pool: Any, imap_account: ImapAccount
) -> None:
    """The target folder was rebuilt (new UIDVALIDITY): the recorded UID means
    nothing, so undo looks for the exact Message-ID; a substring match is not
    it, and two exact matches are reported and left alone."""
    await synced(store, pool, imap_account, count=20)
    rows = await inbox_rows(pool, 2)
    job = await approve_rows(store, JobType.MOVE, rows, target_folder="Hold")
    async with running_executor(str(pool.conninfo), imap_account, workers=1):
        done = await wait_for_job(store, job.job_id)
    assert done.status is JobStatus.COMPLETED, done.error
    single, twice = rows[0]["message_id"], rows[1]["message_id"]

    def rebuild() -> None:
        client = imap_connect(imap_account)
        try:
            client.create_folder("Tmp")
            client.select_folder("Hold")
            client.move(client.search("ALL"), "Tmp")
            client.unselect_folder()
            client.delete_folder("Hold")
            client.create_folder("Hold")
            client.select_folder("Tmp")
            client.move(client.search("ALL"), "Hold")
            for mid in (f"x{single}", f"{single}.other", twice):  # near misses and a twin
                client.append(
                    "Hold", f"Message-ID: <{mid}>\r\nSubject: decoy\r\n\r\nx\r\n".encode()
                )
        finally:
            client.logout()

    await asyncio.to_thread(rebuild)
    undo = await undo_everything_recorded(store, pool, done)
    async with running_executor(str(pool.conninfo), imap_account, workers=1):
        undone = await wait_for_job(store, undo.job_id)
    assert undone.status is JobStatus.COMPLETED, undone.error
    own = {c.message_id: c for c in await store.job_changes(undo.job_id)}
    assert own[single].state is ChangeState.APPLIED
    assert own[twice].state is ChangeState.SKIPPED and "not guessed" in (own[twice].reason or "")
    box = await asyncio.to_thread(mailbox, imap_account)
    assert single in {m for m, _ in box["INBOX"]}
    hold = [m for m, _ in box["Hold"]]
    assert hold.count(twice) == 2 and single not in hold  # both twins left where they were


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


async def test_label_undo_takes_off_exactly_the_keyword_or_the_copy(
    store: JobStore, pool: Any, imap_account: ImapAccount
) -> None:
    """A keyword label is a flag: undo removes it. A label that is a folder is a
    copy there: undo expunges exactly that copy (UID EXPUNGE), the original stays."""
    await synced(store, pool, imap_account, count=20)
    prior = await asyncio.to_thread(mailbox, imap_account)
    for label in ("Follow-up", "Follow Up/2026"):
        rows = await inbox_rows(pool, 3)
        job = await approve_rows(store, JobType.LABEL, rows, label=label, remove=False)
        async with running_executor(str(pool.conninfo), imap_account, workers=1):
            done = await wait_for_job(store, job.job_id)
        assert done.status is JobStatus.COMPLETED, done.error
        labelled = await asyncio.to_thread(mailbox, imap_account)
        assert labelled != prior
        if " " in label:
            assert len(labelled[label]) == 3 and labelled["INBOX"] == prior["INBOX"]
        undo = await undo_everything_recorded(store, pool, done)
        async with running_executor(str(pool.conninfo), imap_account, workers=1):
            undone = await wait_for_job(store, undo.job_id)
        assert undone.status is JobStatus.COMPLETED, undone.error
        assert await asyncio.to_thread(mailbox, imap_account) == prior
