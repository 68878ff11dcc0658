"""Settings: environment variables over `config.yaml`, over defaults.

One frozen object is built at process start and passed down, so every module
reads the same values and tests can build their own without touching os.environ.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

DEMO_IDENTITY_EMAIL = "alex.roy@example.com"
DEMO_IDENTITY_NAME = "Alex Roy"
DEMO_IDENTITY_ALIASES = ("aroy@example.com",)


@dataclass(frozen=True)
class ImapAccount:
    host: str
    port: int
    username: str
    password: str
    ssl: bool


@dataclass(frozen=True)
class Settings:
    database_url: str | None = None
    data_dir: Path = Path(".data")
    imap: ImapAccount | None = None
    identity_email: str = DEMO_IDENTITY_EMAIL
    identity_name: str = DEMO_IDENTITY_NAME
    identity_aliases: tuple[str, ...] = DEMO_IDENTITY_ALIASES
    web_host: str = "127.0.0.1"
    web_port: int = 8000
    web_token: str | None = None
    lease_seconds: float = 30.0
    max_attempts: int = 3
    poll_seconds: float = 2.0
    sync_batch_size: int = 200
    parse_processes: int = min(2, os.cpu_count() or 1) if (os.cpu_count() or 1) > 1 else 0
    sse_heartbeat_seconds: float = 15.0
    sse_poll_seconds: float = 1.0
    chat_model: str | None = None
    timezone: str = "UTC"
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def demo_mode(self) -> bool:
        """No account configured: run against the private demo Dovecot."""
        return self.imap is None


def _truthy(value: Any) -> bool:
    return str(value).strip().lower() in {"1", "true", "yes", "on"}


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    loaded = yaml.safe_load(path.read_text()) or {}
    if not isinstance(loaded, dict):
        raise ValueError(f"{path}: expected a mapping at the top level")
    return loaded


def load_settings(
    env: Mapping[str, str] | None = None, config_path: Path | str | None = None
) -> Settings:
    """Build settings; `config.yaml` keys are the lower-cased env names."""
    env = dict(os.environ if env is None else env)
    path = Path(config_path or env.get("SECRETARY_CONFIG", "config.yaml"))
    file_values = {str(k).upper(): v for k, v in _read_yaml(path).items()}

    def get(name: str, default: Any = None) -> Any:
        if name in env and env[name] != "":
            return env[name]
        if name in file_values and file_values[name] is not None:
            return file_values[name]
        return default

    imap: ImapAccount | None = None
    if get("IMAP_HOST"):
        use_ssl = _truthy(get("IMAP_SSL", "true"))
        imap = ImapAccount(
            host=str(get("IMAP_HOST")),
            port=int(get("IMAP_PORT", 993 if use_ssl else 143)),
            username=str(get("IMAP_USERNAME", "")),
            password=str(get("IMAP_PASSWORD", "")),
            ssl=use_ssl,
        )
    aliases = get("SECRETARY_IDENTITY_ALIASES")
    if isinstance(aliases, str):
        alias_tuple = tuple(a.strip() for a in aliases.split(",") if a.strip())
    elif aliases:
        alias_tuple = tuple(str(a) for a in aliases)
    else:
        alias_tuple = () if get("SECRETARY_IDENTITY_EMAIL") else DEMO_IDENTITY_ALIASES
    return Settings(
        database_url=get("DATABASE_URL"),
        data_dir=Path(get("SECRETARY_DATA_DIR", ".data")),
        imap=imap,
        identity_email=str(get("SECRETARY_IDENTITY_EMAIL", DEMO_IDENTITY_EMAIL)),
        identity_name=str(
            get(
                "SECRETARY_IDENTITY_NAME",
                "" if get("SECRETARY_IDENTITY_EMAIL") else DEMO_IDENTITY_NAME,
            )
        ),
        identity_aliases=alias_tuple,
        web_host=str(get("SECRETARY_WEB_HOST", "127.0.0.1")),
        web_port=int(get("SECRETARY_WEB_PORT", 8000)),
        web_token=get("SECRETARY_WEB_TOKEN"),
        lease_seconds=float(get("SECRETARY_LEASE_SECONDS", 30)),
        max_attempts=int(get("SECRETARY_MAX_ATTEMPTS", 3)),
        poll_seconds=float(get("SECRETARY_POLL_SECONDS", 2.0)),
        sync_batch_size=int(get("SECRETARY_SYNC_BATCH_SIZE", 200)),
        parse_processes=int(get("SECRETARY_PARSE_PROCESSES", Settings.parse_processes)),
        sse_heartbeat_seconds=float(get("SECRETARY_SSE_HEARTBEAT_SECONDS", 15)),
        sse_poll_seconds=float(get("SECRETARY_SSE_POLL_SECONDS", 1.0)),
        chat_model=get("SECRETARY_CHAT_MODEL"),
        timezone=str(get("SECRETARY_TIMEZONE", "UTC")),
        extra=file_values,
    )
