"""The one fold from a job's events to what its card shows (SPEC §7).

A `Progress` is a small immutable state: the job's counters (from its row or
the stream hub's head) plus what its events add up to: the last event seq
folded, the number of batches, the newest progress data and the newest event
text. `fold(state, event)` is the only place that decides what an event means
for a card; `to_message(state)` maps a state to the `batch_progress` /
`batch_complete` message. The page's first render, the live card stream and
the cleaner (which folds a job before deleting its events) all go through
here, so a reload shows exactly what the live card showed.

Pure: no I/O and no web framework imports. It lives with the jobs, not the
web, because the executor's cleaner and the web both use it.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from app.jobs.models import Job, JobEvent, JobType
from app.mail.clean import CLEAN_FOLDER

TOOL_NAMES = {"sync": "sync_mailbox", "clean": "execute_clean_batch"}
# An event of one of these phases reports one batch (a card's "N batch(es)").
BATCH_PHASES = frozenset({"fetch", "apply"})
# Events whose data the card shows: batches, the start, and the final summary.
SHOWN_PHASES = BATCH_PHASES | {"starting"}
# Only what the mapping reads is kept of an event's data: a state stays small
# (a sync batch's data also lists every UID it mirrored) whatever the job did.
KEPT_DATA = ("phase", "batch", "items_found", "has_more")
KEPT_SUMMARY = ("uids", "action", "target_folder", "description")
SUMMARY_VERSION = 1
TERMINAL = frozenset({"completed", "failed", "cancelled"})


def tool_name(job_type: str) -> str:
    return TOOL_NAMES.get(job_type, job_type)


class Head(Protocol):
    """A job's counters: a `Job` row or the stream hub's `JobHead`."""

    @property
    def status(self) -> Any: ...
    @property
    def processed(self) -> int: ...
    @property
    def total_estimate(self) -> int | None: ...
    @property
    def error(self) -> str | None: ...
    @property
    def cancel_requested(self) -> bool: ...


@dataclasses.dataclass(frozen=True)
class Record:
    """A finished mutation job's change record in figures: what really changed."""

    applied: int
    uids: tuple[int, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {"applied": self.applied, "uids": list(self.uids)}


NO_CHANGES = Record(0)


@dataclasses.dataclass(frozen=True)
class Progress:
    job_id: str
    job_type: str
    status: str
    processed: int = 0
    total_estimate: int | None = None
    error: str | None = None
    cancel_requested: bool = False
    seq: int = 0  # the last event folded in
    iterations: int = 0  # batches reported so far
    last: Mapping[str, Any] | None = None  # the newest shown event's data, trimmed
    last_message: str | None = None  # the newest event's text
    record: Record | None = None  # finished mutation jobs only

    @classmethod
    def start(cls, job: Job) -> Progress:
        """A job before any of its events is folded in."""
        return cls(str(job.job_id), job.job_type.value, job.status.value).with_head(job)

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL

    @property
    def is_mutation(self) -> bool:
        return self.job_type in _MUTATIONS

    @property
    def is_undoable(self) -> bool:
        return self.job_type in _UNDOABLE

    def with_head(self, head: Head) -> Progress:
        status = getattr(head.status, "value", head.status)
        return dataclasses.replace(
            self,
            status=str(status),
            processed=int(head.processed or 0),
            total_estimate=head.total_estimate,
            error=head.error,
            cancel_requested=bool(head.cancel_requested),
        )

    def with_record(self, record: Record | None) -> Progress:
        return dataclasses.replace(self, record=record)

    def offers_undo(self) -> bool:
        """A finished undoable job that changed something: its card offers Undo
        (which asks for its own approval; the graph decides what it restores)."""
        if not (self.finished and self.is_undoable):
            return False
        return self.record is None or self.record.applied > 0

    def view(self) -> dict[str, Any]:
        """The job as the card templates read it."""
        return {
            "job_id": self.job_id,
            "job_type": self.job_type,
            "status": self.status,
            "processed": self.processed,
            "total_estimate": self.total_estimate,
            "error": self.error,
            "cancel_requested": self.cancel_requested,
            "last_message": self.last_message,
        }

    # -- the stored form (imap_jobs.progress) ---------------------------------

    def summary(self) -> dict[str, Any]:
        """What the events added up to, JSON-ready: stored on a finished job so
        its card renders the same once its events are pruned."""
        return {
            "v": SUMMARY_VERSION,
            "seq": self.seq,
            "iterations": self.iterations,
            "last": dict(self.last) if self.last is not None else None,
            "last_message": self.last_message,
        }

    def from_summary(self, summary: Any) -> Progress | None:
        """This state with a stored summary's fold, or None when the summary is
        not one this code wrote (then the caller folds the events again)."""
        if not isinstance(summary, Mapping) or summary.get("v") != SUMMARY_VERSION:
            return None
        seq, iterations = summary.get("seq"), summary.get("iterations")
        last, message = summary.get("last"), summary.get("last_message")
        if not (_count(seq) and _count(iterations)):
            return None
        if last is not None and not isinstance(last, Mapping):
            return None
        if message is not None and not isinstance(message, str):
            return None
        return dataclasses.replace(
            self,
            seq=seq,
            iterations=iterations,
            last=_trim(last) if last is not None else None,
            last_message=message,
        )

    def key(self) -> tuple[Any, ...]:
        """Identifies what the card shows: the fold is a function of the job's
        events up to `seq`, so the seq and the counters (and the record) settle
        everything else. Streams of one job share renders by it."""
        return (
            self.job_id,
            self.job_type,
            self.seq,
            self.status,
            self.processed,
            self.total_estimate,
            self.error,
            self.cancel_requested,
            self.iterations,
            self.last_message,
            self.record,
        )

    def nbytes(self) -> int:
        """About what the state weighs in memory (for the byte-bounded cache)."""
        record = 16 * len(self.record.uids) if self.record is not None else 0
        return 400 + len(json.dumps(self.summary(), default=str)) + len(self.error or "") + record


def fold(state: Progress, event: JobEvent) -> Progress:
    """The state after `event`. Events at or before `state.seq` change nothing,
    so a stream may hand the same event twice (a re-read after a gap)."""
    if event.seq <= state.seq:
        return state
    data = event.data if isinstance(event.data, Mapping) else {}
    phase = data.get("phase")
    shown = phase in SHOWN_PHASES or "summary" in data
    return dataclasses.replace(
        state,
        seq=event.seq,
        iterations=state.iterations + (1 if phase in BATCH_PHASES else 0),
        last=_trim(data) if shown else state.last,
        last_message=event.message,
    )


def fold_all(state: Progress, events: Iterable[JobEvent]) -> Progress:
    for event in events:
        state = fold(state, event)
    return state


def to_message(state: Progress) -> dict[str, Any]:
    """The SPEC §7 message for a state (+ `changed` for finished mutations)."""
    return to_batch_update(
        {**state.view(), "job_type": state.job_type},
        {"data": state.last} if state.last is not None else None,
        iterations=state.iterations,
        record=state.record.as_dict() if state.record is not None else None,
    )


def to_batch_update(
    job: Mapping[str, Any],
    event: Mapping[str, Any] | None = None,
    *,
    iterations: int | None = None,
    record: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Map a job's counters and its newest shown event data to a SPEC §7 message.

    `job` carries `job_type, status, processed, total_estimate, error`; `event`
    is `{"data": ...}` of the newest shown event (progress fields: items_found,
    batch, has_more; the final event's summary). `record`, for a finished
    mutation job, is its change record in figures (`applied`, `uids`: what
    really changed); it wins over the event's summary. `to_message` is the
    usual way in; this stays callable on its own for the mapping's tests.
    """
    data: dict[str, Any] = dict((event or {}).get("data") or {})
    status = job["status"]
    processed = int(job.get("processed") or 0)
    total = job.get("total_estimate")
    tool = tool_name(job.get("job_type", ""))
    iteration = int(iterations if iterations is not None else data.get("batch") or 0)
    if status == "completed":
        summary: dict[str, Any] = dict(data.get("summary") or {})
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


# -- helpers ------------------------------------------------------------------

_MUTATIONS = frozenset(t.value for t in JobType if t.is_mutation)
_UNDOABLE = frozenset(t.value for t in JobType if t.is_undoable)


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _trim(data: Mapping[str, Any]) -> dict[str, Any]:
    kept = {k: data[k] for k in KEPT_DATA if k in data}
    summary = data.get("summary")
    if isinstance(summary, Mapping):
        kept["summary"] = {k: summary[k] for k in KEPT_SUMMARY if k in summary}
    elif "summary" in data:
        kept["summary"] = {}
    return kept
