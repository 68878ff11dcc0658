"""Asking for a sync: the one place its parameters are validated and the job is made.

The API, the CLI, the page's button and the chat's tool all come through here,
so a bad folder name is refused the same way everywhere (before this, four
callers built payloads and one validated them). So do the syncs nobody asked
for (the executor's INBOX watcher and interval sweeps), deduplicated to at most
one pending per account and folder.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from psycopg.types.json import Jsonb
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from app.db.queries import query
from app.jobs.models import Job, JobType
from app.jobs.store import JobStore


class InvalidSyncParams(ValueError):
    """Parameters a sync cannot take; the message names each problem."""


# No IMAP folder name comes near these; a request past them is a mistake or an
# attack, and would otherwise end in a job whose error text repeats it.
MAX_FOLDER_NAME = 1000
MAX_FOLDERS = 1000


class SyncParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    folders: list[str] | None = Field(
        default=None, max_length=MAX_FOLDERS, description="folders to sync; all when omitted"
    )
    folder: str | None = Field(default=None, description="shorthand for a single folder")
    batch_size: int | None = Field(default=None, ge=1, le=1000)

    @field_validator("folders", "folder")
    @classmethod
    def _printable(cls, value: list[str] | str | None) -> list[str] | str | None:
        names = [value] if isinstance(value, str) else value or []
        if any(not name or "\x00" in name for name in names):
            raise ValueError("folder names must be non-empty and contain no NUL character")
        if any(len(name) > MAX_FOLDER_NAME for name in names):
            raise ValueError(f"folder names are at most {MAX_FOLDER_NAME} characters")
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


# -- syncs nobody asked for: the live mirror (SPEC §5) --------------------------

ALL_FOLDERS = "*"
"""The folder part of the key of a sync of every folder (the interval sweep)."""


def pending_key(account: str, folder: str) -> str:
    """`sync:pending:<account>:<folder>`: at most one pending job holds it (007)."""
    return f"sync:pending:{account}:{folder}"


async def enqueue_pending_sync(
    store: JobStore,
    account: str,
    folder: str,
    *,
    trigger: str,
    max_attempts: int = 3,
) -> Job:
    """A sync of `folder` unless one is already pending for this account and
    folder, in which case that one is returned: a burst of arrivals becomes one
    job. A running sync does not count (it may have looked already), so a
    change seen during a sync still gets exactly one follow-up.

    `trigger` ("idle", "poll", "catch-up"...) is kept in the payload for the
    job's reader; the handler ignores it.
    """
    payload = {"folders": [folder], "trigger": trigger}
    sync_payload({"folders": [folder]})  # the same validation as every other sync
    params = {
        "payload": Jsonb(payload),
        "pending_key": pending_key(account, folder),
        "max_attempts": max_attempts,
    }
    # Lost the insert to a pending job that was claimed before we could read
    # it: its key is free now, so the next insert wins. Twice is plenty.
    for _ in range(3):
        async with store.pool.connection() as conn:
            row = await (await conn.execute(query("enqueue_pending_sync"), params)).fetchone()
            if row is None:
                row = await (
                    await conn.execute(
                        query("pending_sync_by_key"), {"pending_key": params["pending_key"]}
                    )
                ).fetchone()
        if row is not None:
            return Job.from_row(row)
    raise RuntimeError(f"could not enqueue or find the pending sync {params['pending_key']}")


async def enqueue_sweep_if_due(
    store: JobStore, account: str, *, interval: float, max_attempts: int = 3
) -> Job | None:
    """The interval sweep: a sync of every folder, made only when one is due
    (see the `enqueue_sweep_if_due` query), else None."""
    params = {
        "payload": Jsonb({"trigger": "sweep"}),
        "pending_key": pending_key(account, ALL_FOLDERS),
        "max_attempts": max_attempts,
        "interval": float(interval),
    }
    async with store.pool.connection() as conn:
        row = await (await conn.execute(query("enqueue_sweep_if_due"), params)).fetchone()
    return Job.from_row(row) if row else None


async def folder_is_mirrored(store: JobStore, folder: str) -> bool:
    """Whether a sync ever mirrored `folder`: automatic syncs keep a mirror
    fresh, the first sync is the person's to ask for."""
    async with store.pool.connection() as conn:
        row = await (await conn.execute(query("folder_is_mirrored"), {"folder": folder})).fetchone()
    return bool(row and row["mirrored"])
