"""The sign-in files under the data dir (SPEC §9).

* `oauth2/token.json` holds the secrets `secretary auth` obtained: the refresh
  token and the client id and secret it was issued to. It is written to a new
  file created with mode 0600 and renamed into place, so it is never readable
  by anyone but its owner, not even for a moment.
* `oauth2/status.json` holds no secrets: who signed in with which provider and
  when, when an access token was last refreshed and until when it is valid,
  and the last refresh error. `secretary auth status` reads it; executors
  write it after each refresh.

`IMAP_OAUTH2_REFRESH_TOKEN` (and the client settings), when set, win over the
file: a setting someone wrote down on purpose beats what a sign-in stored.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import SecretStr

TOKEN_FILE = "oauth2/token.json"
STATUS_FILE = "oauth2/status.json"


class SignInFileError(Exception):
    """The token file exists but cannot be used; the message says which file and why."""


@dataclass(frozen=True)
class StoredSignIn:
    provider: str
    account: str
    token_url: str
    client_id: str
    refresh_token: SecretStr = field(repr=False)
    client_secret: SecretStr | None = field(default=None, repr=False)
    scope: str = ""
    signed_in_at: str = ""


def token_path(data_dir: Path) -> Path:
    return Path(data_dir) / TOKEN_FILE


def status_path(data_dir: Path) -> Path:
    return Path(data_dir) / STATUS_FILE


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def write_private(path: Path, text: str) -> None:
    """Replace `path` atomically with `text`, readable and writable by its owner only.

    The temporary file is created with O_EXCL and mode 0600 (umask can only
    narrow it), so the content is never in a file others can read.
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def save_sign_in(data_dir: Path, stored: StoredSignIn) -> Path:
    path = token_path(data_dir)
    record = {
        "provider": stored.provider,
        "account": stored.account,
        "token_url": stored.token_url,
        "client_id": stored.client_id,
        "client_secret": stored.client_secret.get_secret_value() if stored.client_secret else None,
        "refresh_token": stored.refresh_token.get_secret_value(),
        "scope": stored.scope,
        "signed_in_at": stored.signed_in_at or now_iso(),
    }
    write_private(path, json.dumps(record, indent=2) + "\n")
    return path


def load_sign_in(data_dir: Path) -> StoredSignIn | None:
    """The stored sign-in, or None when nobody signed in here."""
    path = token_path(data_dir)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(record, dict) or not record.get("refresh_token"):
            raise ValueError("no refresh_token in it")
        secret = record.get("client_secret")
        return StoredSignIn(
            provider=str(record.get("provider") or "other"),
            account=str(record.get("account") or ""),
            token_url=str(record["token_url"]),
            client_id=str(record.get("client_id") or ""),
            refresh_token=SecretStr(str(record["refresh_token"])),
            client_secret=SecretStr(str(secret)) if secret else None,
            scope=str(record.get("scope") or ""),
            signed_in_at=str(record.get("signed_in_at") or ""),
        )
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise SignInFileError(f"cannot read {path}: {exc.strerror}") from None
    except (ValueError, KeyError, TypeError) as exc:
        # The message names the file and the problem, never its content.
        raise SignInFileError(f"{path} is not a usable sign-in ({type(exc).__name__})") from None


def read_status(data_dir: Path) -> dict[str, Any]:
    try:
        status = json.loads(status_path(data_dir).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return status if isinstance(status, dict) else {}


def update_status(data_dir: Path, **changes: Any) -> None:
    """Merge `changes` into the status file (no secrets go here)."""
    status = read_status(data_dir)
    status.update(changes)
    write_private(status_path(data_dir), json.dumps(status, indent=2) + "\n")
