"""The JSON job API (SPEC §6). Only read-only jobs can be created here:
mutations come only from an approval in the chat."""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query
from pydantic import BaseModel, Field

from app.jobs.models import Job, JobStatus, JobType
from app.jobs.sync_requests import InvalidSyncParams, enqueue_sync
from app.web.deps import StoreDep

router = APIRouter(prefix="/api/jobs", tags=["jobs"])


class CreateJob(BaseModel):
    job_type: str = Field(description="`sync`; mutation types are refused (403)")
    params: dict[str, Any] = Field(
        default_factory=dict,
        description="job parameters; for `sync`: `folders` (list of folder names, all when "
        "omitted) or `folder`, and `batch_size` (1–1000)",
        examples=[{"folders": ["INBOX"], "batch_size": 50}],
    )


class JobSnapshot(BaseModel):
    job_id: uuid.UUID
    job_type: str
    status: Literal["pending", "running", "completed", "failed", "cancelled"]
    processed: int
    total_estimate: int | None
    error: str | None
    cancel_requested: bool
    attempt: int
    created_at: str
    started_at: str | None
    finished_at: str | None

    @classmethod
    def of(cls, job: Job) -> JobSnapshot:
        snap = job.snapshot()
        return cls(**{k: snap[k] for k in cls.model_fields})


class ErrorBody(BaseModel):
    error: str


# 503: the database is unavailable for a moment (app/web/errors.py); retry shortly.
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody} for code in (401, 403, 404, 409, 422, 503)
}


def parse_job_id(job_id: str) -> uuid.UUID:
    try:
        return uuid.UUID(job_id)
    except ValueError:
        raise HTTPException(422, f"{job_id!r} is not a job id (expected a UUID)") from None


async def load_job(store: StoreDep, job_id: str) -> Job:
    job = await store.get(parse_job_id(job_id))
    if job is None:
        raise HTTPException(404, f"no job {job_id}")
    return job


@router.post("", status_code=201, response_model=JobSnapshot, responses=ERRORS)
async def create_job(body: CreateJob, store: StoreDep) -> JobSnapshot:
    try:
        job_type = JobType(body.job_type)
    except ValueError:
        raise HTTPException(422, f"unknown job_type {body.job_type!r}; use 'sync'") from None
    if job_type.is_mutation:
        raise HTTPException(
            403, f"{job_type.value} changes the mailbox: it runs only after an approval in the chat"
        )
    if job_type is not JobType.SYNC:
        raise HTTPException(422, f"{job_type.value} jobs are started by Piper itself; use 'sync'")
    try:
        return JobSnapshot.of(await enqueue_sync(store, body.params))
    except InvalidSyncParams as exc:
        raise HTTPException(422, str(exc)) from None


@router.get("", response_model=list[JobSnapshot], responses=ERRORS)
async def list_jobs(
    store: StoreDep,
    status: Annotated[JobStatus | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[JobSnapshot]:
    return [JobSnapshot.of(j) for j in await store.list(status, limit=limit)]


@router.get("/{job_id}", response_model=JobSnapshot, responses=ERRORS)
async def get_job(job_id: str, store: StoreDep) -> JobSnapshot:
    return JobSnapshot.of(await load_job(store, job_id))


@router.post("/{job_id}/cancel", status_code=202, response_model=JobSnapshot, responses=ERRORS)
async def cancel_job(job_id: str, store: StoreDep) -> JobSnapshot:
    job = await load_job(store, job_id)
    cancelled = await store.request_cancel(job.job_id)
    if cancelled is None:
        current = await store.get(job.job_id)
        raise HTTPException(409, f"job already {current.status.value if current else 'gone'}")
    return JobSnapshot.of(cancelled)
