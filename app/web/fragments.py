"""Job state → the `batch_progress` / `batch_complete` messages of SPEC §7.

One pure function, so the page, the chat and the tests agree on the mapping.
"""

from __future__ import annotations

from typing import Any

from app.mail.clean import CLEAN_FOLDER

TOOL_NAMES = {"sync": "sync_mailbox", "clean": "execute_clean_batch"}


def tool_name(job_type: str) -> str:
    return TOOL_NAMES.get(job_type, job_type)


def to_batch_update(
    job: dict[str, Any],
    event: dict[str, Any] | None = None,
    *,
    iterations: int | None = None,
    record: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Map a job snapshot (and the newest event, if any) to a SPEC §7 message.

    `job` is the public snapshot (`Job.snapshot()` or a `job_status` payload
    plus `job_type`); `event` is a `job_event` payload whose `data` carries the
    handler's progress fields (items_found, batch, has_more, uids, summary).
    `record`, for a finished mutation job, is its change record in figures
    (`applied`, `uids`: what really changed); it wins over the event's summary.
    """
    data: dict[str, Any] = dict((event or {}).get("data") or {})
    status = job["status"]
    processed = int(job.get("processed") or 0)
    total = job.get("total_estimate")
    tool = tool_name(job.get("job_type", ""))
    iteration = int(iterations if iterations is not None else data.get("batch") or 0)
    if status == "completed":
        summary: dict[str, Any] = data.get("summary") or {}
        if record is not None:
            summary = {**summary, "uids": list(record.get("uids") or [])}
        uids = summary.get("uids") if isinstance(summary.get("uids"), list) else []
        message: dict[str, Any] = {
            "type": "batch_complete",
            "tool": tool,
            "status": "complete",
            "total_items": int(total if total is not None else processed),
            "processed_count": processed,
            "iterations": iteration,
            "uids": uids,
        }
        if job.get("job_type") == "clean":
            message["action"] = summary.get("action", "archive")
            message["target_folder"] = summary.get("target_folder", CLEAN_FOLDER)
            message["description"] = summary.get("description") or (
                f"Marked {len(uids)} message(s) read and moved them to {CLEAN_FOLDER}"
            )
        elif summary.get("description"):
            message["description"] = summary["description"]
        if record is not None:
            message["changed"] = int(record.get("applied") or 0)
        return message
    if status in ("failed", "cancelled"):
        phase = "error"
    elif status == "pending" or (processed == 0 and not data.get("items_found")):
        phase = "starting"
    else:
        phase = "running"
    has_more = data.get("has_more")
    if has_more is None:
        has_more = status in ("pending", "running") and (total is None or processed < total)
    message = {
        "type": "batch_progress",
        "tool": tool,
        "status": phase,
        "processed": processed,
        "total_estimate": total,
        "items_found": int(data.get("items_found") or 0),
        "iteration": iteration,
        "has_more": bool(has_more) and phase != "error",
    }
    if phase == "error":
        message["error"] = job.get("error") or ("cancelled" if status == "cancelled" else "failed")
        if record is not None:
            message["changed"] = int(record.get("applied") or 0)
    return message
