"""The job store: the one module both the web process and the executor use."""

from app.jobs.models import Job, JobEvent, JobStatus, JobType, Lease, LeaseLost
from app.jobs.store import JobStore

__all__ = ["Job", "JobEvent", "JobStatus", "JobStore", "JobType", "Lease", "LeaseLost"]
