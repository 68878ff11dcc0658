"""The job → batch_progress / batch_complete mapping (SPEC §7)."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi.templating import Jinja2Templates

import app
from app.jobs.models import Job, JobEvent, JobStatus, JobType
from app.jobs.progress import NO_CHANGES, Progress, Record, fold_all
from app.web.fragments import render_card, render_card_body, to_batch_update


def job(**kw: object) -> dict[str, object]:
    base: dict[str, object] = {
        "job_type": "sync",
        "status": "running",
        "processed": 40,
        "total_estimate": 100,
        "error": None,
    }
    base.update(kw)
    return base


def test_running_sync_maps_to_batch_progress() -> None:
    msg = to_batch_update(job(), {"data": {"batch": 2, "items_found": 20, "has_more": True}})
    assert msg == {
        "type": "batch_progress",
        "tool": "sync_mailbox",
        "status": "running",
        "processed": 40,
        "total_estimate": 100,
        "items_found": 20,
        "iteration": 2,
        "has_more": True,
    }


def test_pending_is_starting() -> None:
    msg = to_batch_update(job(status="pending", processed=0))
    assert msg["status"] == "starting" and msg["has_more"] is True


def test_failed_and_cancelled_are_errors_with_a_reason() -> None:
    failed = to_batch_update(job(status="failed", error="IMAP server refused: NO"))
    assert failed["status"] == "error" and failed["error"] == "IMAP server refused: NO"
    assert failed["has_more"] is False
    cancelled = to_batch_update(job(status="cancelled"))
    assert cancelled["status"] == "error" and cancelled["error"] == "cancelled"


def test_completed_clean_maps_to_batch_complete_with_the_archive_fields() -> None:
    summary = {
        "uids": [4, 5, 9],
        "action": "archive",
        "target_folder": "Secretary/Auto-Cleaned",
        "description": "3 message(s) marked read and moved to Secretary/Auto-Cleaned",
    }
    msg = to_batch_update(
        job(job_type="clean", status="completed", processed=3, total_estimate=3),
        {"data": {"summary": summary}},
        iterations=1,
    )
    assert msg == {
        "type": "batch_complete",
        "tool": "execute_clean_batch",
        "status": "complete",
        "total_items": 3,
        "processed_count": 3,
        "iterations": 1,
        "uids": [4, 5, 9],
        "action": "archive",
        "target_folder": "Secretary/Auto-Cleaned",
        "description": summary["description"],
    }


def test_completed_sync_has_no_clean_fields() -> None:
    msg = to_batch_update(
        job(status="completed", processed=100), {"data": {"summary": {"folders": {}}}}, iterations=5
    )
    assert msg["type"] == "batch_complete" and msg["tool"] == "sync_mailbox" and msg["uids"] == []
    assert "action" not in msg and msg["iterations"] == 5


# -- the cards, rendered from the one fold (app/web/fragments.py) ---------------

TEMPLATES = Jinja2Templates(directory=str(Path(app.__file__).parent / "templates"))


def state(job_type: JobType, status: JobStatus, *events: JobEvent, **head: Any) -> Progress:
    job = Job(
        job_id=uuid.UUID("00000000-0000-4000-8000-0000000000aa"),
        job_type=job_type,
        status=status,
        payload={},
        processed=head.get("processed", 60),
        total_estimate=head.get("total", 60),
        cancel_requested=False,
        error=head.get("error"),
        attempt=1,
        max_attempts=3,
        lease_owner=None,
        lease_expires_at=None,
        last_seq=len(events),
        idempotency_key=None,
        approval_id=None,
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
        started_at=None,
        finished_at=None,
    )
    return fold_all(Progress.start(job), events)


def ev(seq: int, message: str, **data: Any) -> JobEvent:
    return JobEvent(
        uuid.UUID("00000000-0000-4000-8000-0000000000aa"),
        seq,
        datetime(2026, 1, 1, tzinfo=UTC),
        "info",
        message,
        data,
    )


def text(html: str) -> str:
    return " ".join(re.sub(r"<[^>]+>", " ", html).split())


def test_a_finished_sync_card_says_how_many_batches_it_took() -> None:
    done = state(
        JobType.SYNC,
        JobStatus.COMPLETED,
        ev(1, "claimed"),
        ev(2, "INBOX: 20", phase="fetch", batch=1, items_found=20),
        ev(3, "INBOX: 20", phase="fetch", batch=2, items_found=20),
        ev(4, "completed", summary={"folders": {}}),
    )
    card = render_card(TEMPLATES, done, live=False)
    assert "✓ 60 / 60 · complete · 2 batch(es)" in text(card)
    assert "sse-connect" not in card and 'data-seq="4"' in card
    kind, swap = render_card_body(TEMPLATES, done)
    assert kind == "batch_complete" and swap.strip() == card.strip()


def test_a_live_card_streams_on_from_the_seq_it_was_rendered_at() -> None:
    running = state(
        JobType.SYNC,
        JobStatus.RUNNING,
        ev(1, "claimed"),
        ev(2, "INBOX: 20 <b>new</b>", phase="fetch", batch=1, items_found=20),
        processed=20,
        total=60,
    )
    card = render_card(TEMPLATES, running, live=True)
    assert 'sse-connect="/ui/jobs/00000000-0000-4000-8000-0000000000aa/stream?after=2"' in card
    assert "20 / 60 · running · batch 1" in text(card)
    assert "&lt;b&gt;new&lt;/b&gt;" in card and "<b>new" not in card
    kind, body = render_card_body(TEMPLATES, running)
    assert kind == "batch_progress" and text(body) in text(card)


def test_undo_is_offered_from_the_job_type_list_not_from_the_template() -> None:
    """The card asks `JobType.is_undoable` (through Progress.offers_undo): no
    list of job types lives in the templates."""
    for job_type in JobType:
        for status in (JobStatus.COMPLETED, JobStatus.CANCELLED, JobStatus.FAILED):
            changed = state(job_type, status, ev(1, "done", summary={})).with_record(Record(3))
            nothing = changed.with_record(NO_CHANGES)
            html = render_card(TEMPLATES, changed, live=False)
            assert ('class="undo"' in html) is job_type.is_undoable, (job_type, status)
            assert 'class="undo"' not in render_card(TEMPLATES, nothing, live=False)
    partials = Path(app.__file__).parent / "templates" / "partials"
    for template in partials.glob("*.html"):
        assert '"mark_read"' not in template.read_text(), template.name
