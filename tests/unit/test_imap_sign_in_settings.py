"""IMAP sign-in settings (SPEC §9): IMAP_AUTH and the IMAP_OAUTH2_* values load
as typed, secret-keeping settings; a wrong or incomplete sign-in stops the
executor at start with one line naming the setting."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import SecretStr

from app.config import ImapAccount, Settings, SettingsError, load_settings
from app.oauth2.providers import GOOGLE_TOKEN_URL, MICROSOFT_AUTHORITY
from app.oauth2.store import StoredSignIn, load_sign_in, save_sign_in, token_path, write_private
from executor.account import NoAccountConfigured, configured_account

NO_FILE = "/nonexistent/config.yaml"
ROOT = Path(__file__).resolve().parents[2]
GMAIL = {"IMAP_HOST": "imap.gmail.com", "IMAP_USERNAME": "me@gmail.com"}


def load(env: dict[str, str], tmp_path: Path | None = None) -> Settings:
    extra = {"SECRETARY_DATA_DIR": str(tmp_path)} if tmp_path else {}
    return load_settings(env={**GMAIL, **extra, **env}, config_path=NO_FILE)


def start_error(env: dict[str, str], tmp_path: Path) -> str:
    with pytest.raises(NoAccountConfigured) as caught:
        configured_account(load(env, tmp_path))
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_password_is_the_default_and_xoauth2_values_load_as_secrets() -> None:
    assert load({}).imap.auth == "password"  # type: ignore[union-attr]
    imap = load(
        {
            "IMAP_AUTH": "xoauth2",
            "IMAP_OAUTH2_CLIENT_ID": "cid",
            "IMAP_OAUTH2_CLIENT_SECRET": "cs-value",
            "IMAP_OAUTH2_REFRESH_TOKEN": "rt-value",
        }
    ).imap
    assert imap is not None and imap.auth == "xoauth2" and imap.oauth2_client_id == "cid"
    assert isinstance(imap.oauth2_refresh_token, SecretStr)
    assert imap.oauth2_refresh_token.get_secret_value() == "rt-value"
    assert imap.oauth2_token_url is None  # the stored sign-in's, else Google's


@pytest.mark.parametrize(
    ("value", "url"),
    [
        ("google", GOOGLE_TOKEN_URL),
        ("Microsoft", f"{MICROSOFT_AUTHORITY}/token"),
        ("https://idp.example.org/token", "https://idp.example.org/token"),
    ],
)
def test_the_token_url_is_a_url_or_a_preset(value: str, url: str) -> None:
    assert load({"IMAP_OAUTH2_TOKEN_URL": value}).imap.oauth2_token_url == url  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        (
            {"IMAP_AUTH": "oauth"},
            "IMAP_AUTH (from environment): should be 'password' or 'xoauth2', got 'oauth'",
        ),
        (
            {"IMAP_OAUTH2_TOKEN_URL": "ftp://idp.example.org/token"},
            "IMAP_OAUTH2_TOKEN_URL (from environment): expected an https URL or one of google, microsoft",
        ),
    ],
)
def test_a_wrong_sign_in_setting_is_one_line_naming_it(env: dict[str, str], expected: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load(env)
    assert str(caught.value).startswith(expected) and "\n" not in str(caught.value)


def test_secret_values_stay_out_of_repr_and_errors(tmp_path: Path) -> None:
    values = {
        "IMAP_PASSWORD": "pw-SECRETVALUE",
        "IMAP_OAUTH2_CLIENT_SECRET": "cs-SECRETVALUE",
        "IMAP_OAUTH2_REFRESH_TOKEN": "rt-SECRETVALUE",
        "IMAP_OAUTH2_ACCESS_TOKEN": "at-SECRETVALUE",
        "SECRETARY_WEB_TOKEN": "wt-SECRETVALUE",
        "DATABASE_URL": "postgresql://piper:db-SECRETVALUE@db/piper",
    }
    assert "SECRETVALUE" not in repr(load(values))
    config = tmp_path / "config.yaml"
    config.write_text(
        "imap_oauth2_refresh_token: 918273645\nimap_oauth2_client_secret: 5647382910\n"
    )
    with pytest.raises(SettingsError) as caught:
        load_settings(env=GMAIL, config_path=config)
    message = str(caught.value)
    assert "IMAP_OAUTH2_REFRESH_TOKEN" in message and "IMAP_OAUTH2_CLIENT_SECRET" in message
    assert "918273645" not in message and "5647382910" not in message
    direct = ImapAccount(
        "h", 993, "u", "pw-SECRETVALUE", True, oauth2_refresh_token="rt-SECRETVALUE"
    )
    assert "SECRETVALUE" not in repr(direct)
    assert isinstance(direct.oauth2_refresh_token, SecretStr)


def test_xoauth2_without_a_refresh_or_access_token_is_one_start_error(tmp_path: Path) -> None:
    message = start_error({"IMAP_AUTH": "xoauth2", "IMAP_OAUTH2_CLIENT_ID": "cid"}, tmp_path)
    assert message.startswith("IMAP_OAUTH2_REFRESH_TOKEN: IMAP_AUTH=xoauth2 needs a refresh token")
    assert "secretary auth google" in message and "IMAP_OAUTH2_ACCESS_TOKEN" in message


def test_a_refresh_token_without_a_client_id_starts_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    env = {"IMAP_AUTH": "xoauth2", "IMAP_OAUTH2_REFRESH_TOKEN": "rt"}
    assert configured_account(load(env, tmp_path)).auth == "xoauth2"
    assert "IMAP_OAUTH2_CLIENT_ID is not set" in caplog.text


def test_an_access_token_or_a_stored_sign_in_is_enough(tmp_path: Path) -> None:
    managed = {"IMAP_AUTH": "xoauth2", "IMAP_OAUTH2_ACCESS_TOKEN": "at"}
    assert configured_account(load(managed, tmp_path)).auth == "xoauth2"
    save_sign_in(
        tmp_path,
        StoredSignIn("google", "me@gmail.com", GOOGLE_TOKEN_URL, "cid", SecretStr("rt")),
    )
    assert configured_account(load({"IMAP_AUTH": "xoauth2"}, tmp_path)).auth == "xoauth2"


def test_an_unreadable_token_file_is_named_in_the_start_error(tmp_path: Path) -> None:
    write_private(token_path(tmp_path), "not json")
    message = start_error({"IMAP_AUTH": "xoauth2"}, tmp_path)
    assert str(token_path(tmp_path)) in message and "sign in again" in message


def test_the_token_file_is_owner_only_even_under_a_permissive_umask(tmp_path: Path) -> None:
    path = token_path(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_text("{}")
    path.chmod(0o644)  # an old, too open file is replaced, not rewritten in place
    old = os.umask(0)
    try:
        save_sign_in(
            tmp_path, StoredSignIn("microsoft", "me", "https://x/token", "cid", SecretStr("rt"))
        )
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["token.json"]  # no temporary left
    stored = load_sign_in(tmp_path)
    assert stored is not None and stored.refresh_token.get_secret_value() == "rt"


def test_the_executor_exits_2_with_one_line_when_xoauth2_has_no_token(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IMAP_", "SECRETARY_"))}
    env.update(
        GMAIL,
        IMAP_AUTH="xoauth2",
        SECRETARY_CONFIG=NO_FILE,
        SECRETARY_DATA_DIR=str(tmp_path),
        DATABASE_URL="postgresql://nobody@127.0.0.1:1/none",  # never reached
        PYTHONPATH=str(ROOT),
    )
    r = subprocess.run(
        [sys.executable, "-m", "executor"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    [line] = r.stderr.strip().splitlines()
    assert "IMAP_OAUTH2_REFRESH_TOKEN: IMAP_AUTH=xoauth2 needs a refresh token" in line
