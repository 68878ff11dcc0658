"""Settings: environment variables over `config.yaml`, over defaults, checked at start.

One frozen, typed object is built at process start and passed down, so every
module reads the same values. A wrong type or value (`SECRETARY_WEB_PORT=abc`,
a number in `config.yaml` where a string belongs) stops the process at start
with one line naming the setting, instead of breaking requests later.

`Settings(**kwargs)` reads nothing but its arguments (tests build their own
without touching os.environ); only `load_settings()` reads the environment and
`config.yaml`, through a pydantic-settings source of its own.
"""

from __future__ import annotations

import os
import re
import zoneinfo
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, Field, SecretStr, ValidationError, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from app.oauth2.providers import resolve_token_url

DEMO_IDENTITY_EMAIL = "alex.roy@example.com"
DEMO_IDENTITY_NAME = "Alex Roy"
DEMO_IDENTITY_ALIASES = ("aroy@example.com",)

# Values of these settings never appear in an error message (SPEC §9: no token
# or password is logged); the message says only what kind of value was found.
_SECRET_SUFFIXES = ("_PASSWORD", "_TOKEN", "_SECRET", "DATABASE_URL")
_TOKEN_SHAPE = re.compile(r"[\x21-\x7e]+")  # what an HTTP header carries unmangled
_HOST_SHAPE = re.compile(r"\[[0-9a-f:.]+\]|[a-z0-9_](?:[a-z0-9_.-]*[a-z0-9_])?")


class SettingsError(ValueError):
    """One or more settings are wrong; `str(exc)` is one line naming each of them."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


Port = Annotated[int, Field(ge=1, le=65535)]


def _token_url(value: str | None) -> str | None:
    return None if value is None or not value.strip() else resolve_token_url(value)


@dataclass(frozen=True)
class ImapAccount:
    """One IMAP account and how to sign in to it (SPEC §3, §9).

    Secrets never show in `repr`: the password is left out of it and the OAuth2
    values are SecretStr (plain strings given directly are wrapped).
    """

    host: Annotated[str, Field(min_length=1)]
    port: Port
    username: str
    password: str = field(repr=False)
    ssl: bool
    # `password`: LOGIN. `xoauth2`: AUTHENTICATE XOAUTH2 with an access token,
    # from IMAP_OAUTH2_ACCESS_TOKEN as given, or refreshed from a refresh token
    # (IMAP_OAUTH2_REFRESH_TOKEN, else the one `secretary auth` stored).
    auth: Literal["password", "xoauth2"] = "password"
    oauth2_client_id: str = ""
    oauth2_client_secret: SecretStr | None = None
    oauth2_refresh_token: SecretStr | None = None
    # A URL or a preset (`google`, `microsoft`); None: the stored sign-in's, else Google's.
    oauth2_token_url: Annotated[str | None, AfterValidator(_token_url)] = None
    oauth2_access_token: SecretStr | None = None

    def __post_init__(self) -> None:
        for name in ("oauth2_client_secret", "oauth2_refresh_token", "oauth2_access_token"):
            value = getattr(self, name)
            if isinstance(value, str):
                object.__setattr__(self, name, SecretStr(value) if value else None)


def _default_parse_processes() -> int:
    cpus = os.cpu_count() or 1
    return min(2, cpus) if cpus > 1 else 0


# Field name -> the environment variable (and upper-cased config.yaml key) it comes from.
IMAP_ENV = {
    "host": "IMAP_HOST",
    "port": "IMAP_PORT",
    "username": "IMAP_USERNAME",
    "password": "IMAP_PASSWORD",
    "ssl": "IMAP_SSL",
    "auth": "IMAP_AUTH",
    "oauth2_client_id": "IMAP_OAUTH2_CLIENT_ID",
    "oauth2_client_secret": "IMAP_OAUTH2_CLIENT_SECRET",
    "oauth2_refresh_token": "IMAP_OAUTH2_REFRESH_TOKEN",
    "oauth2_token_url": "IMAP_OAUTH2_TOKEN_URL",
    "oauth2_access_token": "IMAP_OAUTH2_ACCESS_TOKEN",
}


# Settings whose variable is not SECRETARY_<FIELD> (the spec names them so).
_ENV_NAMES = {"database_url": "DATABASE_URL", "imap_max_connections": "IMAP_MAX_CONNECTIONS"}


def env_name(field_name: str) -> str:
    return _ENV_NAMES.get(field_name, f"SECRETARY_{field_name.upper()}")


def _split_list(value: Any) -> Any:
    """A comma-separated string (env) or a YAML list, as a tuple of trimmed strings."""
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    if isinstance(value, list):
        return tuple(value)
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(frozen=True, extra="forbid")

    # Secrets (a URL may carry a password) stay out of repr.
    database_url: str | None = Field(default=None, repr=False)
    data_dir: Path = Path(".data")
    imap: ImapAccount | None = None
    identity_email: str = DEMO_IDENTITY_EMAIL
    identity_name: str = DEMO_IDENTITY_NAME
    identity_aliases: tuple[str, ...] = DEMO_IDENTITY_ALIASES
    web_host: Annotated[str, Field(min_length=1)] = "127.0.0.1"
    web_port: Port = 8000
    web_token: str | None = Field(default=None, repr=False)
    # A file holding the web token (Docker-secret style); created with a fresh
    # token, readable by its owner only, when missing. See app/web/security.py.
    web_token_file: Path | None = None
    # Extra names the web page is served under (SPEC §6), besides the loopback ones.
    web_hosts: tuple[str, ...] = ()
    lease_seconds: Annotated[float, Field(gt=0)] = 30.0
    max_attempts: Annotated[int, Field(ge=1)] = 3
    poll_seconds: Annotated[float, Field(gt=0)] = 2.0
    sync_batch_size: Annotated[int, Field(ge=1)] = 200
    # IMAP connections a big folder's first sync may use at once (its worker's
    # own plus borrowed ones), within IMAP_MAX_CONNECTIONS (executor/sync_parallel.py).
    sync_first_connections: Annotated[int, Field(ge=1)] = 3
    # The live mirror (SPEC §5, §9): IMAP connections per account across all
    # executors (workers and the INBOX watcher), the sweep interval of the other
    # folders, and a switch for the watcher and sweeps (tests turn them off).
    imap_max_connections: Annotated[int, Field(ge=1)] = 5
    sync_interval: Annotated[float, Field(gt=0)] = 300.0
    live_mirror: bool = True
    # Gmail (SPEC §9): INBOX and Sent are mirrored; these labels (folders) too.
    # Other servers mirror every folder but Trash, Junk and All Mail anyway.
    sync_folders: tuple[str, ...] = ()
    # Bounded growth (executor/cleaner.py): finished read-only jobs and their
    # events are deleted this many days after they finished (mutation jobs are
    # kept with their approval and change record; only their events go), checked
    # every cleaner_interval seconds.
    retention_days: Annotated[float, Field(gt=0)] = 30.0
    cleaner_interval: Annotated[float, Field(gt=0)] = 300.0
    parse_processes: Annotated[int, Field(ge=0)] = _default_parse_processes()
    sse_heartbeat_seconds: Annotated[float, Field(gt=0)] = 15.0
    sse_poll_seconds: Annotated[float, Field(gt=0)] = 1.0
    chat_model: str | None = None
    # A chat model request's timeout (seconds) and how often the provider's client
    # retries a 429, timeout or 5xx (exponential backoff) before the chat says so.
    chat_timeout: Annotated[float, Field(gt=0)] = 60.0
    chat_max_retries: Annotated[int, Field(ge=0, le=10)] = 2
    timezone: str = "UTC"
    extra: Mapping[str, Any] = Field(default_factory=dict, repr=False)  # raw config.yaml

    @property
    def demo_mode(self) -> bool:
        """No account configured: run against the private demo Dovecot."""
        return self.imap is None

    @field_validator("identity_aliases", "web_hosts", "sync_folders", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        return _split_list(value)

    @field_validator("web_hosts")
    @classmethod
    def _bare_host_names(cls, hosts: tuple[str, ...]) -> tuple[str, ...]:
        names = tuple(h.lower().rstrip(".") for h in hosts)
        for name in names:
            if not _HOST_SHAPE.fullmatch(name):
                raise ValueError(
                    f"{name!r} is not a bare host name (no scheme, port or path; IPv6 in brackets)"
                )
        return names

    @field_validator("web_token")
    @classmethod
    def _token_shape(cls, token: str | None) -> str | None:
        if token is not None and not _TOKEN_SHAPE.fullmatch(token):
            raise ValueError("use printable ASCII characters without spaces")
        return token

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, name: str) -> str:
        try:
            zoneinfo.ZoneInfo(name)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {name!r} (e.g. UTC, Europe/Paris)") from None
        return name

    @field_validator("identity_email")
    @classmethod
    def _looks_like_an_address(cls, email: str) -> str:
        if email.count("@") != 1 or any(c.isspace() for c in email):
            raise ValueError(f"{email!r} is not an email address")
        return email

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        layers = _LOADING.get()
        if layers is None:
            return (init_settings,)  # Settings(...) built directly: its arguments only
        return (init_settings, _LayeredSource(settings_cls, layers))


# -- loading ------------------------------------------------------------------


@dataclass(frozen=True)
class _Layers:
    """The raw values, by environment name: non-empty env values, then config.yaml."""

    env: Mapping[str, str]
    file: Mapping[str, Any]
    file_path: Path

    def get(self, name: str) -> Any:
        if self.env.get(name, "") != "":
            return self.env[name]
        value = self.file.get(name)
        return value

    def origin(self, name: str) -> str:
        if self.env.get(name, "") != "":
            return "environment"
        return str(self.file_path) if self.file.get(name) is not None else "default"


_LOADING: ContextVar[_Layers | None] = ContextVar("settings_layers", default=None)


class _LayeredSource(PydanticBaseSettingsSource):
    """Environment over `config.yaml`, as raw values for pydantic to check."""

    def __init__(self, settings_cls: type[BaseSettings], layers: _Layers) -> None:
        super().__init__(settings_cls)
        self.layers = layers

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self.layers.get(env_name(field_name)), field_name, False

    def __call__(self) -> dict[str, Any]:
        get = self.layers.get
        values: dict[str, Any] = {}
        for name in self.settings_cls.model_fields:
            if name in ("imap", "extra"):
                continue
            value = get(env_name(name))
            if value is not None:
                values[name] = value
        if get("IMAP_HOST") is not None:
            imap = {k: get(v) for k, v in IMAP_ENV.items() if get(v) is not None}
            imap.setdefault("username", "")
            imap.setdefault("password", "")
            imap.setdefault("ssl", True)
            if "port" not in imap:
                off = str(imap["ssl"]).strip().lower() in {"false", "0", "no", "off", "f", "n"}
                imap["port"] = 143 if off else 993
            values["imap"] = imap
        if get("SECRETARY_IDENTITY_EMAIL") is not None:
            # Someone else's mailbox: the demo person's name and alias do not apply.
            values.setdefault("identity_name", "")
            values.setdefault("identity_aliases", ())
        values["extra"] = dict(self.layers.file)
        return values


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        loaded = yaml.safe_load(path.read_text()) or {}
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsError([f"{path}: cannot be read ({exc})"]) from None
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" at line {where.line + 1}" if where is not None else ""
        raise SettingsError([f"{path}: not valid YAML{line}"]) from None
    if not isinstance(loaded, dict):
        raise SettingsError([f"{path}: expected a mapping of settings at the top level"])
    return {str(k).upper(): v for k, v in loaded.items()}


_EXPECTED = {
    "int_parsing": "expected an integer",
    "int_type": "expected an integer",
    "int_from_float": "expected an integer",
    "float_parsing": "expected a number",
    "float_type": "expected a number",
    "bool_parsing": "expected true or false",
    "bool_type": "expected true or false",
    "string_type": "expected a string (quote it in config.yaml)",
    "tuple_type": "expected a comma-separated string or a list",
    "path_type": "expected a path",
    "dataclass_type": "expected a mapping",
}


def _setting_of(loc: tuple[Any, ...]) -> str:
    if not loc:
        return "settings"
    if loc[0] == "imap":
        return IMAP_ENV.get(str(loc[1]), "IMAP_HOST") if len(loc) > 1 else "IMAP_HOST"
    return env_name(str(loc[0]))


def _describe(error: Mapping[str, Any], layers: _Layers) -> str:
    name = _setting_of(tuple(error.get("loc", ())))
    kind = error.get("type", "")
    if kind in _EXPECTED:
        what = _EXPECTED[kind]
    else:
        what = str(error.get("msg", "invalid value"))
        what = what.removeprefix("Value error, ").removeprefix("Input ")
    value = error.get("input")
    if name.endswith(_SECRET_SUFFIXES):
        got = f"got a value of type {type(value).__name__}" if kind in _EXPECTED else ""
    else:
        shown = repr(value)
        got = f"got {shown if len(shown) <= 60 else shown[:57] + '...'}"
    origin = layers.origin(name)
    where = f" (from {origin})" if origin != "default" else ""
    return f"{name}{where}: {what}" + (f", {got}" if got and kind != "value_error" else "")


@contextmanager
def _loading(layers: _Layers) -> Iterator[None]:
    token = _LOADING.set(layers)
    try:
        yield
    finally:
        _LOADING.reset(token)


def load_settings(
    env: Mapping[str, str] | None = None, config_path: Path | str | None = None
) -> Settings:
    """Build settings; `config.yaml` keys are the lower-cased env names.

    Raises SettingsError, whose text is one line naming every wrong setting.
    """
    env = dict(os.environ if env is None else env)
    path = Path(config_path or env.get("SECRETARY_CONFIG") or "config.yaml")
    layers = _Layers(env=env, file=_read_yaml(path), file_path=path)
    try:
        with _loading(layers):
            return Settings()
    except ValidationError as exc:
        raise SettingsError([_describe(e, layers) for e in exc.errors()]) from None
