"""clean, move, label and undo on Gmail, against the Gmail double (SPEC §5, §9):
X-GM-LABELS changes, never MOVE or COPY; the change record keeps prior flags and labels;
undo finds each message by X-GM-MSGID and restores exactly the labels and flags it had.

With `side_effects=True` the double behaves as real Gmail does with folders: removing
`\\Inbox` expunges the INBOX copy and adding a label appends a copy under a new UID, so the
INBOX UID an approval named is gone: undo and the mirror must not need it."""

from __future__ import annotations

from typing import Any

import pytest

from app.config import Settings
from app.graph.approval import propose_action
from app.graph.deps import GraphDeps
from app.jobs.models import Job, JobStatus, JobType
from app.jobs.store import ChangeState, JobStore
from tests.integration.test_mutations import CLEANED, approve_rows, undo_everything_recorded
from tests.support.executor_harness import running_executor, wait_for_job
from tests.support.gmail_double import ALL_MAIL
from tests.support.gmail_mailbox import (
    SENT,
    account,
    double,
    folder_uids,
    labelled,
    mirror_rows,
    needs_node,
    rows_in,
    sync,
)

pytestmark = needs_node
INBOX = "\\Inbox"
SEEN = "\\Seen"


async def run(store: JobStore, pool: Any, d: Any, job: Job, *, until_idle: bool = False) -> Job:
    async with running_executor(str(pool.conninfo), account(d), workers=1) as _ex:
        done = await wait_for_job(store, job.job_id)
        if until_idle:  # follow-up syncs the job asked for (undo → INBOX)
            for other in await store.list():
                if other.job_type.value == "sync":
                    await wait_for_job(store, other.job_id)
    return done


async def inbox(pool: Any, *subjects: str) -> list[dict[str, Any]]:
    rows = {r["subject"]: r for r in await rows_in(pool, "INBOX")}
    return [rows[s] for s in subjects]


@pytest.mark.parametrize("side_effects", [False, True], ids=["labels-only", "gmail-folders"])
async def test_clean_relabels_in_all_mail_and_undo_restores_labels_and_seen_exactly(
    store: JobStore, pool: Any, side_effects: bool
) -> None:
    with double(side_effects=side_effects) as d:
        await sync(store, pool, d)
        before = labelled(d)
        spam_trash = (labelled(d, "[Gmail]/Spam"), labelled(d, "[Gmail]/Trash"))
        rows = await inbox(pool, "message 1", "message 2", "message 8")
        ids = {r["gm_msgid"] for r in rows}
        old_uids = {r["gm_msgid"]: r["uid"] for r in rows}

        job = await approve_rows(store, JobType.CLEAN, rows, target_folder=CLEANED)
        done = await run(store, pool, d, job)
        assert done.status is JobStatus.COMPLETED, done.error
        after = labelled(d)
        for msgid, (labels, flags) in before.items():
            if msgid in ids:
                assert after[msgid] == ((labels - {INBOX}) | {CLEANED}, flags | {SEEN})
            else:
                assert after[msgid] == (labels, flags)  # nothing else touched
        assert (labelled(d, "[Gmail]/Spam"), labelled(d, "[Gmail]/Trash")) == spam_trash
        stats = d.stats()
        assert stats["labelStores"] > 0
        if side_effects:
            assert not ids & set(folder_uids(d, "INBOX"))  # the INBOX copies are gone
            assert ids <= set(folder_uids(d, CLEANED))
        # The record: prior flags and labels, what was added and removed, the X-GM-MSGID.
        record = {c.gm_msgid: c for c in await store.job_changes(job.job_id)}
        assert set(record) == ids
        for msgid, change in record.items():
            assert change.state is ChangeState.APPLIED
            assert set(change.labels_before or ()) == before[msgid][0]
            assert set(change.flags_before or ()) == before[msgid][1]
            assert change.labels_added == (CLEANED,)
            assert change.labels_removed == (INBOX,)
            assert change.flags_added == (() if SEEN in before[msgid][1] else (SEEN,))
            assert change.folder_after == ALL_MAIL
        # The mirror: the INBOX copies left with their label; other copies relabelled.
        assert not ids & {r["gm_msgid"] for r in await rows_in(pool, "INBOX")}
        assert [r["labels"] for r in await rows_in(pool, SENT)] == [["\\Sent"]]

        undo = await undo_everything_recorded(store, pool, done)
        undone = await run(store, pool, d, undo, until_idle=True)
        assert undone.status is JobStatus.COMPLETED, undone.error
        assert labelled(d) == before
        back = folder_uids(d, "INBOX")
        assert ids <= set(back)
        if side_effects:  # back in INBOX under new UIDs: found by X-GM-MSGID, not by UID
            assert all(back[m] != old_uids[m] for m in ids)
            assert not ids & set(folder_uids(d, CLEANED))
            mirrored = {r["gm_msgid"]: r for r in await rows_in(pool, "INBOX")}
            assert ids <= set(mirrored)
            for msgid in ids:
                assert set(mirrored[msgid]["labels"]) == before[msgid][0]
                assert set(mirrored[msgid]["flags"]) == before[msgid][1]
                assert mirrored[msgid]["uid"] == back[msgid]
        own = await store.job_changes(undo.job_id)
        assert {c.state for c in own} == {ChangeState.APPLIED}
        assert all(c.folder_after == "INBOX" and c.uid_after == back[c.gm_msgid] for c in own)


async def test_move_on_gmail_is_a_label_change_and_archive_only_leaves_the_inbox(
    store: JobStore, pool: Any
) -> None:
    with double(side_effects=True) as d:
        await sync(store, pool, d)
        before = labelled(d)
        trash = labelled(d, "[Gmail]/Trash")
        (seven,) = await inbox(pool, "message 7")
        (eight,) = await inbox(pool, "message 8")
        to_work = await run(
            store, pool, d, await approve_rows(store, JobType.MOVE, [seven], target_folder="Work")
        )
        archived = await run(
            store,
            pool,
            d,
            await approve_rows(store, JobType.MOVE, [eight], target_folder="Archive"),
        )
        assert to_work.status is archived.status is JobStatus.COMPLETED
        after = labelled(d)
        assert after[seven["gm_msgid"]][0] == (before[seven["gm_msgid"]][0] - {INBOX}) | {"Work"}
        assert after[eight["gm_msgid"]][0] == before[eight["gm_msgid"]][0] - {INBOX}
        assert "Receipts" in after[eight["gm_msgid"]][0]  # other labels stay
        assert seven["gm_msgid"] in folder_uids(d, "Work")
        assert not {seven["gm_msgid"], eight["gm_msgid"]} & set(folder_uids(d, "INBOX"))
        # Nothing went anywhere but by label: the Trash is as empty as before.
        assert labelled(d, "[Gmail]/Trash") == trash
        undo = await run(store, pool, d, await undo_everything_recorded(store, pool, to_work))
        assert undo.status is JobStatus.COMPLETED, undo.error
        assert labelled(d)[seven["gm_msgid"]] == before[seven["gm_msgid"]]


async def test_the_approval_card_says_archive_and_label_in_gmails_words(
    store: JobStore, pool: Any
) -> None:
    with double() as d:
        await sync(store, pool, d)
    rows = await inbox(pool, "message 7", "message 8")
    ids = [f"{r['folder']}:{r['uidvalidity']}:{r['uid']}" for r in rows]
    deps = GraphDeps(pool=pool, store=store, settings=Settings())

    async def card(name: str, **args: Any) -> str:
        action = await propose_action(deps, {"name": name, "id": "c1", "args": args})
        return action["description"]

    assert (await card("move_emails", messages=ids, target_folder="Archive")).startswith(
        "Archive 2 message(s): take them out of the Inbox"
    )
    moved = await card("move_emails", messages=ids, target_folder="Work")
    assert moved.startswith("Label 2 message(s) Work and archive them")
    assert "All Mail" in moved
    assert (await card("apply_label", messages=ids, label="Projects")) == (
        "Apply the Gmail label Projects to 2 message(s)"
    )
    refused = await card("apply_label", messages=ids, label="\\Trash")
    assert refused.startswith("Nothing to approve") and "Trash" in refused
    refused = await card("move_emails", messages=ids, target_folder="[Gmail]/Spam")
    assert refused.startswith("Nothing to approve")


async def test_label_jobs_add_and_remove_gmail_labels_and_never_apply_trash(
    store: JobStore, pool: Any
) -> None:
    with double() as d:
        await sync(store, pool, d)
        before = labelled(d)
        one, two = await inbox(pool, "message 1", "message 2")
        added = await run(
            store, pool, d, await approve_rows(store, JobType.LABEL, [two], label="Projects")
        )
        removed = await run(
            store,
            pool,
            d,
            await approve_rows(store, JobType.LABEL, [one], label="Work", remove=True),
        )
        trash = await run(
            store, pool, d, await approve_rows(store, JobType.LABEL, [two], label="\\Trash")
        )
        after = labelled(d)
    assert added.status is removed.status is JobStatus.COMPLETED
    assert after[two["gm_msgid"]][0] == before[two["gm_msgid"]][0] | {"Projects"}
    assert after[one["gm_msgid"]][0] == before[one["gm_msgid"]][0] - {"Work"}
    assert one["gm_msgid"] in after  # removing a label never deletes mail
    assert trash.status is JobStatus.FAILED and "Trash" in (trash.error or "")
    mirrored = {r["gm_msgid"]: r for r in await mirror_rows(pool)}
    assert set(mirrored[two["gm_msgid"]]["labels"]) == after[two["gm_msgid"]][0]
    assert set(mirrored[one["gm_msgid"]]["labels"]) == after[one["gm_msgid"]][0]
