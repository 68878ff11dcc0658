"""One handler per job type. A handler is `async (JobContext) -> summary dict`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from app.jobs.models import JobType
from executor.context import JobContext
from executor.handlers.mutations import handle_mutation
from executor.handlers.rescore import handle_rescore
from executor.handlers.sync import handle_sync
from executor.handlers.undo import handle_undo

Handler = Callable[[JobContext], Awaitable[dict[str, Any]]]

HANDLERS: dict[JobType, Handler] = {
    JobType.SYNC: handle_sync,
    JobType.CLEAN: handle_mutation,
    JobType.MARK_READ: handle_mutation,
    JobType.MARK_UNREAD: handle_mutation,
    JobType.MOVE: handle_mutation,
    JobType.LABEL: handle_mutation,
    JobType.UNDO: handle_undo,
    JobType.RESCORE: handle_rescore,
}
