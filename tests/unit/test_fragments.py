"""The job → batch_progress / batch_complete mapping (SPEC §7)."""

from __future__ import annotations

from app.web.fragments import to_batch_update


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
