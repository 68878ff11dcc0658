"""The one fold from job events to a card's state (app/jobs/progress.py).

Its promise: however a stream came by the events (all at once, page by page,
resumed from any seq, twice after a re-read, or from a stored summary after
the events were pruned), it ends in the same state, so a reload shows exactly
what the live card showed.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from app.jobs.models import Job, JobEvent, JobStatus, JobType
from app.jobs.progress import (
    NO_CHANGES,
    Progress,
    Record,
    fold,
    fold_all,
    to_message,
)

JOB_ID = uuid.UUID("00000000-0000-4000-8000-000000000001")
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def job(
    job_type: JobType = JobType.SYNC,
    status: JobStatus = JobStatus.RUNNING,
    processed: int = 40,
    total: int | None = 100,
    error: str | None = None,
) -> Job:
    return Job(
        job_id=JOB_ID,
        job_type=job_type,
        status=status,
        payload={},
        processed=processed,
        total_estimate=total,
        cancel_requested=False,
        error=error,
        attempt=1,
        max_attempts=3,
        lease_owner=None,
        lease_expires_at=None,
        last_seq=0,
        idempotency_key=None,
        approval_id=None,
        created_at=NOW,
        started_at=NOW,
        finished_at=None,
    )


def event(seq: int, message: str = "", **data: Any) -> JobEvent:
    return JobEvent(JOB_ID, seq, NOW, "info", message or f"event {seq}", data)


def sync_events(batches: int) -> list[JobEvent]:
    """What a sync writes: the claim, its start, batches, a folder summary, the end."""
    events = [event(1, "claimed by w", attempt=1, worker="w")]
    events.append(event(2, "syncing 1 folder(s)", phase="starting", folders=["INBOX"]))
    for i in range(1, batches + 1):
        events.append(
            event(
                2 + i,
                f"INBOX: {i}",
                phase="fetch",
                batch=i,
                items_found=20,
                uids=list(range(i * 20, i * 20 + 20)),
                has_more=i < batches,
            )
        )
    n = len(events)
    events.append(event(n + 1, "INBOX: done", phase="folder_done", new=20 * batches))
    events.append(event(n + 2, "completed", summary={"folders": {"INBOX": {}}}, status="completed"))
    return events


def test_every_batch_counts_once_and_the_newest_event_text_is_shown() -> None:
    state = fold_all(Progress.start(job()), sync_events(3))
    assert state.iterations == 3 and state.seq == 7
    assert state.last_message == "completed"
    assert state.last is not None and "summary" in state.last


def test_a_finished_sync_says_how_many_batches_it_took() -> None:
    done = job(status=JobStatus.COMPLETED, processed=60, total=60)
    state = fold_all(Progress.start(done), sync_events(3))
    msg = to_message(state)
    assert msg == {
        "type": "batch_complete",
        "tool": "sync_mailbox",
        "status": "complete",
        "total_items": 60,
        "processed_count": 60,
        "iterations": 3,
        "uids": [],
    }


def test_an_event_folded_twice_counts_once() -> None:
    events = sync_events(4)
    once = fold_all(Progress.start(job()), events)
    twice = fold_all(fold_all(Progress.start(job()), events[:5]), events)
    assert twice == once
    assert fold(once, events[3]) is once


@settings(max_examples=200, deadline=None)
@given(
    batches=st.integers(min_value=0, max_value=12),
    cuts=st.lists(st.integers(min_value=0, max_value=20), max_size=5),
    replay=st.integers(min_value=0, max_value=5),
)
def test_resuming_from_any_seq_in_any_pages_ends_in_the_same_state(
    batches: int, cuts: list[int], replay: int
) -> None:
    """A card stream resumes from the seq the page had (and a hub re-read can
    hand some events again): the state is the one folded from seq 0 at once."""
    events = sync_events(batches)
    whole = fold_all(Progress.start(job()), events)
    state = Progress.start(job())
    start = 0
    for cut in sorted(min(c, len(events)) for c in cuts) + [len(events)]:
        state = fold_all(state, events[max(0, start - replay) : cut])  # overlapping pages
        start = cut
    assert state == whole


@settings(max_examples=100, deadline=None)
@given(batches=st.integers(min_value=0, max_value=10), at=st.integers(min_value=0, max_value=20))
def test_a_stored_summary_plus_the_events_after_it_is_the_whole_fold(batches: int, at: int) -> None:
    """The cleaner stores the fold and deletes the events it came from: the
    page then starts from the summary and shows what the live card showed."""
    events = sync_events(batches)
    at = min(at, len(events))
    whole = fold_all(Progress.start(job()), events)
    stored = json.loads(json.dumps(fold_all(Progress.start(job()), events[:at]).summary()))
    restored = Progress.start(job()).from_summary(stored)
    assert restored is not None
    assert fold_all(restored, events[at:]) == whole


def test_a_summary_this_code_did_not_write_is_refused() -> None:
    fresh = Progress.start(job())
    for bad in (
        None,
        [],
        "x",
        {"v": 99, "seq": 1, "iterations": 0},
        {"v": 1, "seq": -1, "iterations": 0},
        {"v": 1, "seq": 1, "iterations": True},
        {"v": 1, "seq": "3", "iterations": 0},
        {"v": 1, "seq": 1, "iterations": 0, "last": [1, 2]},
        {"v": 1, "seq": 1, "iterations": 0, "last_message": 5},
    ):
        assert fresh.from_summary(bad) is None, bad


def test_the_state_keeps_only_what_the_card_reads_however_big_the_events() -> None:
    """A batch's data lists every UID it mirrored; the state does not carry it
    (the cache is bounded by bytes, and the stored summary stays small)."""
    huge = event(5, "INBOX", phase="fetch", batch=1, items_found=5000, uids=list(range(5000)))
    state = fold(Progress.start(job()), huge)
    assert state.last == {"phase": "fetch", "batch": 1, "items_found": 5000}
    assert state.nbytes() < 2000
    assert len(json.dumps(state.summary())) < 500


def test_events_that_report_no_batch_do_not_count_and_keep_the_shown_data() -> None:
    start = fold(Progress.start(job()), event(1, phase="fetch", batch=1, items_found=3))
    noted = fold(start, event(2, "cancel requested", status="running"))
    assert noted.iterations == 1 and noted.last == start.last
    assert noted.last_message == "cancel requested"


def test_hostile_event_data_is_not_trusted_as_a_mapping() -> None:
    weird = JobEvent(JOB_ID, 1, NOW, "info", "x", [1, 2, 3])  # type: ignore[arg-type]
    state = fold(Progress.start(job()), weird)
    assert state.seq == 1 and state.iterations == 0 and state.last is None


def test_a_completed_clean_reports_what_its_record_says_changed() -> None:
    done = job(JobType.CLEAN, JobStatus.COMPLETED, processed=3, total=3)
    final = event(
        4,
        "completed",
        summary={
            "uids": [1, 2, 3],
            "description": "3 message(s) marked read and moved",
            "skipped": [{"uid": 9}] * 50,
        },
    )
    state = fold(Progress.start(done), final).with_record(Record(2, (1, 3)))
    msg = to_message(state)
    assert msg["type"] == "batch_complete" and msg["uids"] == [1, 3] and msg["changed"] == 2
    assert msg["action"] == "archive" and msg["target_folder"] == "Secretary/Auto-Cleaned"
    assert "skipped" not in (state.last or {}).get("summary", {})


def test_undo_is_offered_for_every_finished_undoable_job_that_changed_something() -> None:
    for job_type in JobType:
        for status in JobStatus:
            for record in (Record(2, (1, 2)), NO_CHANGES):
                state = Progress.start(job(job_type, status)).with_record(record)
                expected = job_type.is_undoable and status.is_terminal and record.applied > 0
                assert state.offers_undo() is expected, (job_type, status, record)


def test_failed_and_cancelled_jobs_map_to_errors_with_what_changed_before() -> None:
    failed = Progress.start(job(JobType.MOVE, JobStatus.FAILED, error="NO [LIMIT]"))
    msg = to_message(failed.with_record(Record(4)))
    assert msg["status"] == "error" and msg["error"] == "NO [LIMIT]" and msg["changed"] == 4
    cancelled = to_message(Progress.start(job(status=JobStatus.CANCELLED)))
    assert cancelled["status"] == "error" and cancelled["error"] == "cancelled"
    assert cancelled["has_more"] is False
