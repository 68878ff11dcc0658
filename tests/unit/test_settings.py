"""Typed settings (issue 10, item 3): env over config.yaml over defaults, and a
wrong type or value stops the process at start with one line naming the setting."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from app.config import (
    DEMO_IDENTITY_ALIASES,
    DEMO_IDENTITY_NAME,
    ImapAccount,
    Settings,
    SettingsError,
    load_settings,
)

NO_FILE = "/nonexistent/config.yaml"


def load(
    env: dict[str, str], yaml_text: str | None = None, tmp_path: Path | None = None
) -> Settings:
    if yaml_text is None:
        return load_settings(env=env, config_path=NO_FILE)
    assert tmp_path is not None
    path = tmp_path / "config.yaml"
    path.write_text(yaml_text)
    return load_settings(env=env, config_path=path)


def error_of(
    env: dict[str, str], yaml_text: str | None = None, tmp_path: Path | None = None
) -> str:
    with pytest.raises(SettingsError) as caught:
        load(env, yaml_text, tmp_path)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_defaults_without_env_or_file() -> None:
    s = load({})
    assert s == Settings()
    assert s.web_host == "127.0.0.1" and s.web_port == 8000 and s.web_token is None
    assert s.imap is None and s.demo_mode
    assert s.identity_aliases == DEMO_IDENTITY_ALIASES and s.identity_name == DEMO_IDENTITY_NAME
    assert s.web_hosts == ()


def test_environment_wins_over_config_yaml_and_yaml_keys_are_lower_cased_env_names(
    tmp_path: Path,
) -> None:
    yaml_text = (
        "secretary_web_port: 9001\nsecretary_lease_seconds: 12\nsecretary_timezone: Europe/Paris\n"
    )
    s = load({"SECRETARY_WEB_PORT": "9002"}, yaml_text, tmp_path)
    assert s.web_port == 9002  # env wins
    assert s.lease_seconds == 12.0 and s.timezone == "Europe/Paris"  # file fills the rest
    assert s.extra["SECRETARY_WEB_PORT"] == 9001


def test_an_empty_environment_value_counts_as_unset(tmp_path: Path) -> None:
    s = load(
        {"SECRETARY_WEB_PORT": "", "SECRETARY_WEB_TOKEN": ""},
        "secretary_web_port: 9001\n",
        tmp_path,
    )
    assert s.web_port == 9001 and s.web_token is None


def test_config_file_named_by_secretary_config(tmp_path: Path) -> None:
    path = tmp_path / "piper.yaml"
    path.write_text("secretary_max_attempts: 7\n")
    assert load_settings(env={"SECRETARY_CONFIG": str(path)}).max_attempts == 7


def test_imap_account_from_imap_variables_with_port_following_ssl() -> None:
    s = load({"IMAP_HOST": "mail.example.org", "IMAP_USERNAME": "me", "IMAP_PASSWORD": "pw"})
    assert s.imap == ImapAccount("mail.example.org", 993, "me", "pw", True)
    assert not s.demo_mode
    plain = load({"IMAP_HOST": "h", "IMAP_SSL": "false"})
    assert plain.imap is not None and plain.imap.port == 143 and plain.imap.ssl is False
    assert load({"IMAP_HOST": "h", "IMAP_SSL": "no", "IMAP_PORT": "1143"}).imap == ImapAccount(
        "h", 1143, "", "", False
    )


def test_own_identity_drops_the_demo_name_and_alias() -> None:
    s = load({"SECRETARY_IDENTITY_EMAIL": "me@example.org"})
    assert s.identity_email == "me@example.org"
    assert s.identity_name == "" and s.identity_aliases == ()


def test_aliases_and_hosts_from_comma_separated_env_or_yaml_list(tmp_path: Path) -> None:
    s = load(
        {
            "SECRETARY_IDENTITY_ALIASES": " a@x.org, b@x.org ,",
            "SECRETARY_WEB_HOSTS": "Piper.LAN,[::2]",
        }
    )
    assert s.identity_aliases == ("a@x.org", "b@x.org")
    assert s.web_hosts == ("piper.lan", "[::2]")
    listed = load(
        {}, "secretary_identity_aliases: [c@x.org]\nsecretary_web_hosts: [box]\n", tmp_path
    )
    assert listed.identity_aliases == ("c@x.org",) and listed.web_hosts == ("box",)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        (
            {"SECRETARY_WEB_PORT": "abc"},
            "SECRETARY_WEB_PORT (from environment): expected an integer, got 'abc'",
        ),
        (
            {"SECRETARY_WEB_PORT": "70000"},
            "SECRETARY_WEB_PORT (from environment): should be less than or equal to 65535",
        ),
        (
            {"SECRETARY_LEASE_SECONDS": "-1"},
            "SECRETARY_LEASE_SECONDS (from environment): should be greater than 0",
        ),
        (
            {"SECRETARY_MAX_ATTEMPTS": "0"},
            "SECRETARY_MAX_ATTEMPTS (from environment): should be greater than or equal to 1",
        ),
        (
            {"SECRETARY_POLL_SECONDS": "soon"},
            "SECRETARY_POLL_SECONDS (from environment): expected a number",
        ),
        (
            {"IMAP_HOST": "h", "IMAP_SSL": "maybe"},
            "IMAP_SSL (from environment): expected true or false, got 'maybe'",
        ),
        (
            {"IMAP_HOST": "h", "IMAP_PORT": "imap"},
            "IMAP_PORT (from environment): expected an integer",
        ),
        (
            {"SECRETARY_TIMEZONE": "Mars/Olympus"},
            "SECRETARY_TIMEZONE (from environment): unknown time zone 'Mars/Olympus'",
        ),
        (
            {"SECRETARY_IDENTITY_EMAIL": "nobody"},
            "SECRETARY_IDENTITY_EMAIL (from environment): 'nobody' is not an email address",
        ),
        (
            {"SECRETARY_WEB_HOSTS": "http://piper.lan:8000"},
            "SECRETARY_WEB_HOSTS (from environment): 'http://piper.lan:8000' is not a bare host name",
        ),
        (
            {"SECRETARY_WEB_TOKEN": "two words"},
            "SECRETARY_WEB_TOKEN (from environment): use printable ASCII",
        ),
        (
            {"SECRETARY_WEB_TOKEN": "jalapeño"},
            "SECRETARY_WEB_TOKEN (from environment): use printable ASCII",
        ),
    ],
)
def test_a_wrong_value_fails_with_one_line_naming_the_setting(
    env: dict[str, str], expected: str
) -> None:
    assert error_of(env).startswith(expected)


@pytest.mark.parametrize(
    ("yaml_text", "expected"),
    [
        ("secretary_web_token: 12345\n", "SECRETARY_WEB_TOKEN"),
        ("secretary_identity_name: 42\n", "SECRETARY_IDENTITY_NAME"),
        ("imap_host: mail.example.org\nimap_username: 1001\n", "IMAP_USERNAME"),
        ("database_url: 5432\n", "DATABASE_URL"),
    ],
)
def test_a_number_in_config_yaml_where_a_string_belongs_fails_at_start(
    tmp_path: Path, yaml_text: str, expected: str
) -> None:
    message = error_of({}, yaml_text, tmp_path)
    assert message.startswith(f"{expected} (from {tmp_path / 'config.yaml'}): expected a string")


def test_every_wrong_setting_is_named_on_the_same_line() -> None:
    message = error_of({"SECRETARY_WEB_PORT": "x", "SECRETARY_MAX_ATTEMPTS": "y"})
    assert "SECRETARY_WEB_PORT" in message and "SECRETARY_MAX_ATTEMPTS" in message


def test_secret_values_never_appear_in_an_error(tmp_path: Path) -> None:
    message = error_of(
        {"IMAP_HOST": "h", "SECRETARY_WEB_TOKEN": "sécret-value"},
        "imap_password: 918273645\n",
        tmp_path,
    )
    assert "IMAP_PASSWORD" in message and "SECRETARY_WEB_TOKEN" in message
    assert "918273645" not in message and "sécret-value" not in message


@pytest.mark.parametrize(
    ("yaml_text", "expected"),
    [("a: [1,\n", "not valid YAML at line 2"), ("- a\n- b\n", "expected a mapping")],
)
def test_a_broken_config_file_is_one_clear_line(
    tmp_path: Path, yaml_text: str, expected: str
) -> None:
    assert expected in error_of({}, yaml_text, tmp_path)


def test_settings_built_directly_read_only_their_arguments(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SECRETARY_WEB_PORT", "1234")
    monkeypatch.setenv("IMAP_HOST", "elsewhere.example")
    s = Settings(lease_seconds=5.0, poll_seconds=0.2)
    assert s.web_port == 8000 and s.imap is None and s.lease_seconds == 5.0
    account = ImapAccount("127.0.0.1", 1143, "u", "p", ssl=False)
    assert Settings(imap=account).imap == account


def test_settings_are_frozen() -> None:
    s = Settings()
    with pytest.raises(Exception):  # noqa: B017 - pydantic's ValidationError for frozen models
        s.web_port = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    "command",
    [["-m", "app.cli", "jobs", "list"], ["-m", "executor"]],
    ids=["secretary", "executor"],
)
def test_each_entry_point_prints_the_one_line_and_exits_2(command: list[str]) -> None:
    env = {**os.environ, "SECRETARY_WEB_PORT": "abc", "SECRETARY_CONFIG": NO_FILE}
    r = subprocess.run(
        [sys.executable, *command],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert r.returncode == 2
    assert r.stderr.strip() == (
        "error: SECRETARY_WEB_PORT (from environment): expected an integer, got 'abc'"
    )
