"""What the graph's nodes and tools need from the outside world."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from psycopg_pool import AsyncConnectionPool

from app.config import Settings
from app.jobs.store import JobStore
from app.mail.identity import Identity


@dataclass(frozen=True)
class GraphDeps:
    pool: AsyncConnectionPool
    store: JobStore
    settings: Settings
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))

    @property
    def identity(self) -> Identity:
        s = self.settings
        return Identity(
            email=s.identity_email, name=s.identity_name, aliases=tuple(s.identity_aliases)
        )
