"""OAuth2 sign-in (SPEC §9, issue 12 items 1 and 4) against the Gmail double
(hoodiecrow with XOAUTH2, tests/support/gmail_double.py) and a local OAuth2
server (tests/support/fake_oauth.py) whose access tokens are valid at the
double from issue until they expire, as Google's are at Gmail."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import stat
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from pydantic import SecretStr

from app.config import ImapAccount
from app.jobs.models import JobStatus
from app.jobs.store import JobStore
from app.oauth2.store import StoredSignIn, read_status, save_sign_in, status_path, token_path
from executor.app import Executor
from executor.imap_auth import TokenProvider
from tests.support.executor_harness import executor_settings, running_executor, wait_for_job
from tests.support.fake_oauth import (
    SECRET_MARK,
    FakeOAuthServer,
    GmailGrants,
    secret_value,
)
from tests.support.gmail_double import GmailDouble, GmailMessage, gmail_storage, node_available

pytestmark = pytest.mark.skipif(
    not node_available(), reason="the Gmail double needs node_modules: run ./scripts/setup.sh"
)

ROOT = Path(__file__).resolve().parents[2]
USER = "piper@gmail.test"
CLIENT_ID = "piper-desktop.apps.example"
PUBLIC_CLIENT_ID = "piper-public-client"
CLIENT_SECRET = secret_value("cs")
PASSWORD = secret_value("pw")


def _raw(n: int) -> str:
    return (
        f"From: Sender {n} <s{n}@example.com>\r\nTo: {USER}\r\nSubject: message {n}\r\n"
        f"Message-ID: <m{n}@example.com>\r\nDate: Fri, 13 Sep 2024 15:01:00 +0300\r\n\r\n"
        f"hello {n}\r\n"
    )


@pytest.fixture
def double() -> Iterator[GmailDouble]:
    messages = [GmailMessage(_raw(n), labels=["\\Inbox"]) for n in range(1, 6)]
    users = {USER: {"password": PASSWORD, "tokens": []}}
    with GmailDouble(gmail_storage(messages), users=users) as d:
        yield d


@pytest.fixture
def oauth(double: GmailDouble) -> Iterator[tuple[FakeOAuthServer, GmailGrants]]:
    grants = GmailGrants(double, USER)
    server = FakeOAuthServer(
        clients={CLIENT_ID: CLIENT_SECRET, PUBLIC_CLIENT_ID: None}, expires_in=3, on_issue=grants
    )
    with server:
        yield server, grants
    grants.cancel()


def xoauth2_account(double: GmailDouble, fake: FakeOAuthServer, **overrides: Any) -> ImapAccount:
    values: dict[str, Any] = {
        "auth": "xoauth2",
        "oauth2_client_id": CLIENT_ID,
        "oauth2_client_secret": CLIENT_SECRET,
        "oauth2_token_url": fake.token_url,
    }
    values.update(overrides)
    return ImapAccount(double.host, double.port, USER, "", False, **values)


@asynccontextmanager
async def executor_for(
    database_url: str, account: ImapAccount, data_dir: Path
) -> AsyncIterator[Executor]:
    # One worker: logins happen one after another, so each is attributable.
    settings = executor_settings(data_dir=data_dir)
    async with running_executor(database_url, account, workers=1, settings=settings) as ex:
        yield ex


async def sync_inbox(store: JobStore) -> Any:
    job = await store.enqueue("sync", {"folders": ["INBOX"]})
    return await wait_for_job(store, job.job_id, timeout=60)


async def reconnect(executor: Executor) -> None:
    """Close the worker's connection, so the next job signs in anew."""
    for slot in executor.slots:
        await slot.imap.discard()


def attempts(double: GmailDouble) -> list[bool]:
    return [a["ok"] for a in double.stats()["authAttempts"]]


async def test_a_sync_over_xoauth2_completes_and_an_expired_token_is_refreshed_before_login(
    store: JobStore, pool: Any, double: GmailDouble, oauth: Any, tmp_path: Path
) -> None:
    fake, _ = oauth
    account = xoauth2_account(double, fake, oauth2_refresh_token=fake.new_refresh_token())
    async with executor_for(str(pool.conninfo), account, tmp_path) as ex:
        first = await sync_inbox(store)
        assert first.status is JobStatus.COMPLETED, first.error
        assert first.processed == 5
        assert fake.refreshes == 1 and attempts(double) == [True]
        # Within the margin before expiry (a quarter of 3 s here): refreshed first.
        await asyncio.sleep(2.5)
        await reconnect(ex)
        second = await sync_inbox(store)
        assert second.status is JobStatus.COMPLETED, second.error
        assert fake.refreshes == 2
        # Past the expiry the double refuses the token; the provider knows and refreshes first.
        await asyncio.sleep(3.3)
        await reconnect(ex)
        third = await sync_inbox(store)
        assert third.status is JobStatus.COMPLETED, third.error
    assert fake.refreshes == 3
    assert attempts(double) == [True, True, True]  # no login was ever refused
    status = read_status(tmp_path)
    assert status["account"] == USER and status["last_error"] is None
    assert status["refresh_token_from"] == "IMAP_OAUTH2_REFRESH_TOKEN"


async def test_a_token_refused_by_the_server_is_refreshed_and_the_login_retried_once(
    store: JobStore, pool: Any, double: GmailDouble, oauth: Any, tmp_path: Path
) -> None:
    fake, grants = oauth
    fake.expires_in = 3600
    account = xoauth2_account(double, fake, oauth2_refresh_token=fake.new_refresh_token())
    async with executor_for(str(pool.conninfo), account, tmp_path) as ex:
        assert (await sync_inbox(store)).status is JobStatus.COMPLETED
        grants.revoke_all()  # revoked at the IMAP side only; the cached token looks valid
        await reconnect(ex)
        again = await sync_inbox(store)
    assert again.status is JobStatus.COMPLETED, again.error
    assert attempts(double) == [True, False, True]
    assert fake.refreshes == 2


async def test_a_revoked_refresh_token_fails_the_job_with_sign_in_again_and_a_new_sign_in_is_used(
    store: JobStore, pool: Any, double: GmailDouble, oauth: Any, tmp_path: Path
) -> None:
    fake, grants = oauth
    # The refresh token comes from the file `secretary auth google` writes.
    signed_in = StoredSignIn(
        provider="google",
        account=USER,
        token_url=fake.token_url,
        client_id=CLIENT_ID,
        client_secret=SecretStr(CLIENT_SECRET),
        refresh_token=SecretStr(fake.new_refresh_token()),
    )
    save_sign_in(tmp_path, signed_in)
    account = xoauth2_account(double, fake, oauth2_client_id="", oauth2_client_secret=None)
    async with executor_for(str(pool.conninfo), account, tmp_path) as ex:
        assert (await sync_inbox(store)).status is JobStatus.COMPLETED
        fake.revoke_refresh_token()  # the person removed Piper's access
        grants.revoke_all()
        await reconnect(ex)
        failed = await sync_inbox(store)
        assert failed.status is JobStatus.FAILED
        assert failed.attempt == 1  # not retried
        assert "sign in again" in failed.error and "secretary auth google" in failed.error
        refused = fake.refused
        # The dead token is not sent again: the next job fails at once.
        assert (await sync_inbox(store)).status is JobStatus.FAILED
        assert fake.refused == refused
        assert read_status(tmp_path)["last_error"].startswith("invalid_grant")
        # The executor kept running: a new sign-in is picked up without a restart.
        save_sign_in(
            tmp_path,
            StoredSignIn(
                **{**signed_in.__dict__, "refresh_token": SecretStr(fake.new_refresh_token())}
            ),
        )
        healed = await sync_inbox(store)
    assert healed.status is JobStatus.COMPLETED, healed.error


async def test_a_managed_access_token_is_used_as_given_and_a_refused_one_fails_the_job(
    store: JobStore, pool: Any, double: GmailDouble, tmp_path: Path
) -> None:
    token = secret_value("at")
    double.grant(USER, token)
    account = ImapAccount(
        double.host, double.port, USER, "", False, auth="xoauth2", oauth2_access_token=token
    )
    async with executor_for(str(pool.conninfo), account, tmp_path) as ex:
        assert (await sync_inbox(store)).status is JobStatus.COMPLETED
        double.revoke(USER)
        await reconnect(ex)
        failed = await sync_inbox(store)
    assert failed.status is JobStatus.FAILED
    assert "sign in again" in failed.error and "IMAP_OAUTH2_ACCESS_TOKEN" in failed.error
    assert attempts(double) == [True, False]  # nothing to refresh: no second try


def test_concurrent_callers_share_one_refresh(
    double: GmailDouble, oauth: Any, tmp_path: Path
) -> None:
    fake, _ = oauth
    fake.expires_in = 3600
    provider = TokenProvider(
        xoauth2_account(double, fake, oauth2_refresh_token=fake.new_refresh_token()), tmp_path
    )
    barrier = threading.Barrier(8)
    got: list[str] = []

    def take(reject: str | None = None) -> None:
        barrier.wait()
        if reject is not None:
            provider.rejected(reject)
        got.append(provider.access_token())

    def together(reject: str | None = None) -> None:
        threads = [threading.Thread(target=take, args=(reject,)) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)

    together()
    assert fake.refreshes == 1 and len(set(got)) == 1
    first = got[0]
    got.clear()
    together(reject=first)  # eight connections saw the same token refused
    assert fake.refreshes == 2 and len(set(got)) == 1 and got[0] != first


def test_a_rotated_refresh_token_replaces_the_stored_one(
    double: GmailDouble, oauth: Any, tmp_path: Path
) -> None:
    fake, _ = oauth
    fake.expires_in, fake.rotate_refresh_tokens = 3600, True  # as Entra does
    first = fake.new_refresh_token()
    save_sign_in(
        tmp_path,
        StoredSignIn("microsoft", USER, fake.token_url, PUBLIC_CLIENT_ID, SecretStr(first)),
    )
    account = xoauth2_account(double, fake, oauth2_client_id="", oauth2_client_secret=None)
    provider = TokenProvider(account, tmp_path)
    token = provider.access_token()
    stored = json.loads(token_path(tmp_path).read_text())
    assert stored["refresh_token"] != first and stored["client_id"] == PUBLIC_CLIENT_ID
    assert stat.S_IMODE(token_path(tmp_path).stat().st_mode) == 0o600
    fake.revoke_refresh_token(first)  # only the newer one works from now on
    provider.rejected(token)
    assert provider.access_token() != token and fake.refreshes == 2


# -- the installed-app flow -------------------------------------------------------------------


def _cli_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IMAP_", "SECRETARY_"))}
    env.update(
        SECRETARY_CONFIG=str(tmp_path / "no-config.yaml"),
        SECRETARY_DATA_DIR=str(tmp_path / "data"),
        PYTHONPATH=str(ROOT),
    )
    env.update(extra)
    return env


@pytest.mark.parametrize(
    ("provider", "client_id", "redirect_host"),
    [("google", CLIENT_ID, "127.0.0.1"), ("microsoft", PUBLIC_CLIENT_ID, "localhost")],
)
def test_the_loopback_flow_stores_the_refresh_token_owner_readable_only(
    double: GmailDouble,
    oauth: Any,
    tmp_path: Path,
    provider: str,
    client_id: str,
    redirect_host: str,
) -> None:
    fake, _ = oauth
    fake.expires_in = 3600  # `auth status` below says "valid until", however slow the machine
    env = _cli_env(
        tmp_path,
        IMAP_USERNAME=USER,
        IMAP_OAUTH2_CLIENT_ID=client_id,
        **({"IMAP_OAUTH2_CLIENT_SECRET": CLIENT_SECRET} if provider == "google" else {}),
    )
    command = [sys.executable, "-m", "app.cli", "auth", provider, "--no-browser"]
    command += ["--auth-url", fake.auth_url, "--token-url", fake.token_url, "--timeout", "60"]
    proc = subprocess.Popen(
        command, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        url = ""
        for line in proc.stdout:
            if line.startswith("http"):
                url = line.strip()
                break
        query = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
        assert query["code_challenge_method"] == "S256" and len(query["code_challenge"]) >= 43
        assert query["redirect_uri"].startswith(f"http://{redirect_host}:")
        expected_scope = {
            "google": "https://mail.google.com/",
            "microsoft": "https://outlook.office.com/IMAP.AccessAsUser.All offline_access",
        }[provider]
        assert query["scope"] == expected_scope
        listener = f"http://127.0.0.1:{urlsplit(query['redirect_uri']).port}/"
        # An answer that does not carry this run's state is refused, and the wait goes on.
        forged = httpx.get(listener, params={"code": "attacker-code", "state": "forged"})
        assert forged.status_code == 400
        # The person signs in: the provider redirects the browser to the loopback listener.
        answer = httpx.get(url, follow_redirects=True, timeout=30)
        assert answer.status_code == 200 and "signed in" in answer.text
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert fake.code_exchanges == 1
    path = token_path(tmp_path / "data")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    stored = json.loads(path.read_text())
    assert fake.refresh_tokens.get(stored["refresh_token"]) is True
    assert stored["provider"] == provider and stored["account"] == USER
    assert SECRET_MARK not in out + err  # nothing secret printed
    assert SECRET_MARK not in status_path(tmp_path / "data").read_text()

    status = subprocess.run(
        [sys.executable, "-m", "app.cli", "auth", "status"],
        env={**env, "IMAP_AUTH": "xoauth2"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert status.returncode == 0, status.stderr
    assert f"signed in: {provider} as {USER}" in status.stdout
    assert "(mode 0600)" in status.stdout
    assert re.search(r"access token: valid until \S+", status.stdout)
    assert SECRET_MARK not in status.stdout + status.stderr


def test_auth_status_says_sign_in_again_after_a_refused_refresh(tmp_path: Path) -> None:
    from app.oauth2.store import update_status

    data = tmp_path / "data"
    update_status(
        data,
        last_refreshed_at="2026-01-01T10:00:00+00:00",
        access_token_expires_at="2026-01-01T11:00:00+00:00",
        last_error="invalid_grant: Token has been expired or revoked.",
        last_error_at="2026-01-01T12:00:00+00:00",
    )
    status = subprocess.run(
        [sys.executable, "-m", "app.cli", "auth", "status"],
        env=_cli_env(tmp_path, IMAP_AUTH="xoauth2", IMAP_HOST="imap.gmail.com", IMAP_USERNAME=USER),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert status.returncode == 1
    assert "access token: not valid" in status.stdout and "sign in again" in status.stdout


@asynccontextmanager
async def executor_process(env: dict[str, str], stderr: Path) -> AsyncIterator[None]:
    """`python -m executor` with `env`, its stderr appended to a file, stopped by SIGTERM."""
    with stderr.open("a") as err:
        proc = await asyncio.create_subprocess_exec(
            *[sys.executable, "-m", "executor", "--workers", "1", "--log-level", "DEBUG"],
            env=env,
            cwd=stderr.parent,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
        try:
            yield
        finally:
            proc.terminate()
            await asyncio.wait_for(proc.wait(), 60)


# -- secrets stay secret ----------------------------------------------------------------------


class _Everything(logging.Handler):
    """Every record, formatted with its traceback, as the executor's stderr would show it."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def every_log_line() -> Iterator[_Everything]:
    handler = _Everything()
    root = logging.getLogger()
    old_level = root.level
    noisy = {name: logging.getLogger(name).level for name in ("imapclient", "urllib3", "httpx")}
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    for name in noisy:  # imapclient's protocol log too: the AUTHENTICATE/LOGIN lines
        logging.getLogger(name).setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
        for name, level in noisy.items():
            logging.getLogger(name).setLevel(level)


async def test_no_secret_appears_in_logs_payloads_events_or_errors(
    store: JobStore,
    pool: Any,
    double: GmailDouble,
    oauth: Any,
    tmp_path: Path,
    every_log_line: _Everything,
) -> None:
    fake, grants = oauth
    refresh_token = fake.new_refresh_token()
    account = xoauth2_account(double, fake, oauth2_refresh_token=refresh_token)
    async with executor_for(str(pool.conninfo), account, tmp_path) as ex:
        assert (await sync_inbox(store)).status is JobStatus.COMPLETED
        grants.revoke_all()  # a refused token, a refresh, a retried login
        await reconnect(ex)
        assert (await sync_inbox(store)).status is JobStatus.COMPLETED
        fake.revoke_refresh_token()  # then a refused refresh...
        fake.echo_requests = True  # ...whose error repeats the request, secrets and all
        grants.revoke_all()
        await reconnect(ex)
        assert (await sync_inbox(store)).status is JobStatus.FAILED
    # The password path, with a distinctive password, through the same logs.
    password_account = ImapAccount(double.host, double.port, USER, PASSWORD, False)
    async with executor_for(str(pool.conninfo), password_account, tmp_path):
        assert (await sync_inbox(store)).status is JobStatus.COMPLETED
    secrets_used = [refresh_token, CLIENT_SECRET, PASSWORD, *fake.access_tokens]
    assert len(fake.access_tokens) == 2
    logs = "\n".join(every_log_line.lines)
    assert "AUTHENTICATE" in logs and "LOGIN" in logs  # the protocol log was on
    async with pool.connection() as conn:
        rows = await (
            await conn.execute(
                "SELECT (SELECT json_agg(j)::text FROM imap_jobs j) AS jobs, "
                "(SELECT json_agg(e)::text FROM imap_job_events e) AS events"
            )
        ).fetchone()
    places = {
        "logs": logs,
        "imap_jobs": rows["jobs"],
        "imap_job_events": rows["events"],
        "status file": status_path(tmp_path).read_text(),
        "settings repr": repr(account) + repr(password_account),
    }
    assert "sign in again" in rows["jobs"]
    for where, text in places.items():
        assert SECRET_MARK not in text, f"a secret leaked into {where}"
        for secret in secrets_used:
            assert secret not in text, f"a secret leaked into {where}"


async def test_the_watcher_backs_off_with_the_same_advice_when_sign_in_is_needed(
    pool: Any,
    store: JobStore,
    double: GmailDouble,
    oauth: Any,
    tmp_path: Path,
    every_log_line: _Everything,
) -> None:
    fake, _ = oauth
    refresh_token = fake.new_refresh_token()
    fake.revoke_refresh_token(refresh_token)
    account = xoauth2_account(double, fake, oauth2_refresh_token=refresh_token)
    settings = executor_settings(data_dir=tmp_path, live_mirror=True)
    async with running_executor(str(pool.conninfo), account, workers=1, settings=settings) as ex:
        deadline = asyncio.get_running_loop().time() + 20
        while asyncio.get_running_loop().time() < deadline:
            if ex.watcher is not None and ex.watcher.sign_in_failures:
                break
            await asyncio.sleep(0.05)
        watcher = ex.watcher
        assert watcher is not None
        # It waits before trying again instead of hammering the token endpoint.
        await asyncio.sleep(1.0)
        assert watcher.sign_in_failures == 1 and watcher.running
        assert watcher.restarts == 0
        # The executor keeps taking other work meanwhile (this job fails for the same reason).
        failed = await sync_inbox(store)
        assert failed.status is JobStatus.FAILED and "sign in again" in failed.error
    assert fake.refused == 1  # one refusal, then the dead token was never sent again
    [advice] = [line for line in every_log_line.lines if "cannot watch INBOX" in line]
    assert "sign in again" in advice and "secretary auth" in advice


async def test_the_executor_process_signs_in_from_its_settings_and_its_stderr_keeps_secrets(
    store: JobStore, pool: Any, double: GmailDouble, oauth: Any, tmp_path: Path
) -> None:
    fake, grants = oauth
    fake.expires_in = 3600
    refresh_token = fake.new_refresh_token()
    env = _cli_env(
        tmp_path,
        DATABASE_URL=str(pool.conninfo),
        IMAP_HOST=double.host,
        IMAP_PORT=str(double.port),
        IMAP_SSL="false",
        IMAP_USERNAME=USER,
        IMAP_AUTH="xoauth2",
        IMAP_OAUTH2_CLIENT_ID=CLIENT_ID,
        IMAP_OAUTH2_CLIENT_SECRET=CLIENT_SECRET,
        IMAP_OAUTH2_REFRESH_TOKEN=refresh_token,
        IMAP_OAUTH2_TOKEN_URL=fake.token_url,
        SECRETARY_LIVE_MIRROR="false",
        SECRETARY_POLL_SECONDS="0.2",
    )
    log = tmp_path / "executor.stderr"
    async with executor_process(env, log):
        done = await sync_inbox(store)
        assert done.status is JobStatus.COMPLETED, done.error
    fake.revoke_refresh_token()
    grants.revoke_all()
    async with executor_process(env, log):  # a new process signs in anew
        failed = await sync_inbox(store)
    assert failed.status is JobStatus.FAILED and "sign in again" in failed.error
    stderr = log.read_text()
    assert "access token refreshed" in stderr and "sign in again" in stderr
    for secret in [SECRET_MARK, refresh_token, CLIENT_SECRET, *fake.access_tokens]:
        assert secret not in stderr
