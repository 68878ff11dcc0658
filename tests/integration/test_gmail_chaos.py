"""Chaos on Gmail: `kill -9` a real executor process at random points of a multi-batch
clean against the Gmail double (with Gmail's folder side effects: the INBOX copy goes when
`\\Inbox` is removed), again and again until the job ends; then every approved message was
relabelled exactly once, and an undo (killed too) restores every label and flag exactly,
each message found by X-GM-MSGID although its INBOX UID changed twice.

SPEC §8: every finished mutation can be undone exactly, including one whose worker died.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from app.jobs.models import JobStatus, JobType
from app.jobs.store import ChangeState, JobStore
from tests.integration.test_mutation_chaos import BATCH, Figures, drive, executors
from tests.integration.test_mutations import CLEANED, approve_rows, undo_everything_recorded
from tests.support.figures import report
from tests.support.gmail_double import GmailMessage
from tests.support.gmail_mailbox import (
    account,
    double,
    folder_uids,
    labelled,
    needs_node,
    raw,
    rows_in,
    sync,
)

pytestmark = needs_node
SEED = 20261205
RUNS = 3
INBOX = "\\Inbox"
SEEN = "\\Seen"


def chaos_mailbox(rng: random.Random, count: int = 16) -> list[GmailMessage]:
    extra = ["Work", "Receipts", "\\Important", "\\Starred"]
    return [
        GmailMessage(
            raw(100 + i),
            labels=["\\Inbox", *rng.sample(extra, rng.randint(0, 2))],
            flags=[f for f, p in ((SEEN, 0.5), ("\\Flagged", 0.1)) if rng.random() < p],
        )
        for i in range(count)
    ]


async def test_gmail_clean_killed_at_random_then_undo_killed_restores_every_label_exactly(
    store: JobStore, pool: Any, tmp_path: Path
) -> None:
    rng = random.Random(SEED)
    figures = Figures()
    with (
        double(chaos_mailbox(rng), side_effects=True) as d,
        executors(str(pool.conninfo), account(d), tmp_path) as ex,
    ):
        # As in test_mutation_chaos: more runs, killed as soon as claimed, while
        # no kill has landed inside a job.
        while figures.runs < RUNS or (figures.kills_mid_job == 0 and figures.runs < RUNS + 4):
            eager = figures.runs >= RUNS
            await sync(store, pool, d)  # learns the INBOX UIDs the last undo handed out
            before = labelled(d)
            inbox = await rows_in(pool, "INBOX")
            chosen = rng.sample(inbox, rng.randint(7, min(12, len(inbox))))
            ids = {r["gm_msgid"] for r in chosen}
            job = await approve_rows(
                store,
                JobType.CLEAN,
                chosen,
                batch_size=BATCH,
                max_attempts=100,
                target_folder=CLEANED,
            )
            done = await drive(store, pool, ex, job, rng, rng.randint(1, 3), figures, eager=eager)
            assert done.status is JobStatus.COMPLETED, (done.error, ex.tail())
            record = await store.job_changes(job.job_id)
            assert sorted(c.gm_msgid for c in record) == sorted(ids)
            assert all(c.state is ChangeState.APPLIED for c in record)
            for c in record:  # what the first attempt saw, never what a retry saw
                assert set(c.labels_before or ()) == before[c.gm_msgid][0]
                assert set(c.flags_before or ()) == before[c.gm_msgid][1]
            after = labelled(d)
            for msgid, (labels, flags) in before.items():
                want = (
                    ((labels - {INBOX}) | {CLEANED}, flags | {SEEN})
                    if msgid in ids
                    else (labels, flags)
                )
                figures.messages_checked += 1
                figures.mismatches += after[msgid] != want
            assert not ids & set(folder_uids(d, "INBOX"))

            undo = await undo_everything_recorded(
                store, pool, done, batch_size=BATCH, max_attempts=100
            )
            undone = await drive(store, pool, ex, undo, rng, rng.randint(0, 2), figures)
            assert undone.status is JobStatus.COMPLETED, (undone.error, ex.tail())
            restored = labelled(d)
            figures.messages_checked += len(before)
            figures.mismatches += sum(restored[m] != v for m, v in before.items())
            assert ids <= set(folder_uids(d, "INBOX"))
            figures.runs += 1
    report(figures.line("gmail clean"))
    assert figures.kills_mid_job > 0
    assert figures.mismatches == 0
