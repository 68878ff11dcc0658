"""Asking for a sync: the one place its parameters are validated and the job is made.

The API, the CLI, the page's button and the chat's tool all come through here,
so a bad folder name is refused the same way everywhere (before this, four
callers built payloads and one validated them).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from app.jobs.models import Job, JobType
from app.jobs.store import JobStore


class InvalidSyncParams(ValueError):
    """Parameters a sync cannot take; the message names each problem."""


class SyncParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    folders: list[str] | None = Field(default=None, description="folders to sync; all when omitted")
    folder: str | None = Field(default=None, description="shorthand for a single folder")
    batch_size: int | None = Field(default=None, ge=1, le=1000)

    @field_validator("folders", "folder")
    @classmethod
    def _printable(cls, value: list[str] | str | None) -> list[str] | str | None:
        names = [value] if isinstance(value, str) else value or []
        if any(not name or "\x00" in name for name in names):
            raise ValueError("folder names must be non-empty and contain no NUL character")
        return value

    def payload(self) -> dict[str, Any]:
        folders = list(
            dict.fromkeys([*(self.folders or []), *([self.folder] if self.folder else [])])
        )
        out: dict[str, Any] = {"folders": folders} if folders else {}
        if self.batch_size:
            out["batch_size"] = self.batch_size
        return out


def sync_payload(params: Mapping[str, Any] | None) -> dict[str, Any]:
    """The job payload for these parameters, or InvalidSyncParams saying what is wrong."""
    try:
        return SyncParams.model_validate(dict(params or {})).payload()
    except ValidationError as exc:
        problems = "; ".join(
            f"params.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()
        )
        raise InvalidSyncParams(problems) from None


async def enqueue_sync(
    store: JobStore,
    params: Mapping[str, Any] | None = None,
    *,
    idempotency_key: str | None = None,
    max_attempts: int = 3,
) -> Job:
    return await store.enqueue(
        JobType.SYNC,
        sync_payload(params),
        idempotency_key=idempotency_key,
        max_attempts=max_attempts,
    )
