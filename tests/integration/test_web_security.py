"""The web process lets no one in (issue 10, items 2 and 4; SPEC §6).

DNS rebinding (a foreign Host) is refused on page and API; tokens are compared
as bytes so hostile headers get 401, never 500; a token never travels in a URL;
a non-loopback bind without a token is refused at start; and when Postgres
drops the web's connections, requests get 503 at worst and the pool heals.
Real uvicorn, real Postgres.
"""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import psycopg
import pytest

from app.config import Settings, SettingsError
from app.web.main import create_app
from app.web.security import (
    SecurityMiddleware,
    allowed_hosts,
    check_bind,
    host_name,
    is_loopback,
    resolve_token_file,
)
from tests.support.uvicorn_server import serve

EVIL = "evil.example"


def port_of(url: str) -> int:
    port = urlsplit(url).port
    assert port is not None
    return port


async def raw_request(url: str, head: bytes) -> tuple[int, bytes]:
    """Send bytes no well-behaved client would send; return (status, body)."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    try:
        writer.write(head)
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), timeout=10)
    finally:
        writer.close()
    status_line, _, rest = data.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


# -- names ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "name"),
    [
        ("127.0.0.1:8000", "127.0.0.1"),
        ("LOCALHOST:8000", "localhost"),
        ("localhost", "localhost"),
        ("[::1]:8000", "[::1]"),
        ("[::1]", "[::1]"),
        ("evil.example:8000", "evil.example"),
        ("127.0.0.1:80:80", None),
        ("127.0.0.1:port", None),
        ("[::1", None),
        ("127.0.0.1@evil.example", None),
        ("localhost/evil", None),
        ("", None),
    ],
)
def test_host_header_parsing(header: str, name: str | None) -> None:
    assert host_name(header) == name


def test_allowed_names_are_loopback_plus_configured_plus_a_specific_bind_address() -> None:
    assert allowed_hosts(Settings()) == {"127.0.0.1", "localhost", "[::1]", "::1"}
    extra = allowed_hosts(Settings(web_hosts=("workspace-secretary",), web_host="0.0.0.0"))
    assert "workspace-secretary" in extra and "0.0.0.0" not in extra
    assert "192.0.2.4" in allowed_hosts(Settings(web_host="192.0.2.4", web_token="t"))
    assert "[fe80::1]" in allowed_hosts(Settings(web_host="fe80::1", web_token="t"))


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.0.0.5", True),
        ("localhost", True),
        ("::1", True),
        ("[::1]", True),
        ("::ffff:127.0.0.1", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.10", False),
        ("piper.lan", False),
    ],
)
def test_loopback_addresses(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


# -- DNS rebinding ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/", None),
        ("POST", "/api/chat", {"message": "/clean"}),
        ("GET", "/api/jobs", None),
        ("POST", "/api/jobs", {"job_type": "sync"}),
        ("GET", "/openapi.json", None),
        ("GET", "/static/app.css", None),
        ("GET", "/healthz", None),
        ("GET", "/login", None),
        ("GET", "/no/such/page", None),
    ],
)
async def test_a_foreign_host_is_refused_on_page_and_api(
    web: Any, method: str, path: str, body: Any
) -> None:
    async with httpx.AsyncClient(base_url=web.url) as client:
        r = await client.request(method, path, json=body, headers={"Host": EVIL})
        assert r.status_code in (400, 421)
        assert r.json()["error"]
        assert (await client.get("/api/jobs")).json() == []  # nothing was enqueued


@pytest.mark.parametrize(
    "host",
    [
        "evil.example:{port}",
        "127.0.0.1.evil.example:{port}",
        "localhost.evil.example",
        "127.0.0.1:{port}@evil.example",
        "[::1].evil.example",
        "127.0.0.1:{port}:{port}",
        "",
    ],
)
async def test_lookalike_hosts_are_refused(web: Any, host: str) -> None:
    async with httpx.AsyncClient(base_url=web.url) as client:
        r = await client.get("/api/jobs", headers={"Host": host.format(port=port_of(web.url))})
        assert r.status_code == 400 and r.json()["error"]


async def test_the_rebinding_attack_cannot_clean_approve_or_read(web: Any) -> None:
    """The attack the issue describes: the hostile page's name resolves to
    127.0.0.1, so its Origin and the Host its requests carry agree with each
    other. Same-origin checks alone let that through; the Host allowlist does not."""
    port = port_of(web.url)
    attacker = {"Host": f"{EVIL}:{port}", "Origin": f"http://{EVIL}:{port}"}
    async with httpx.AsyncClient(base_url=web.url) as client:
        chat = await client.post("/api/chat", json={"message": "/clean"}, headers=attacker)
        assert chat.status_code == 400
        resume = await client.post(
            f"/api/chat/{uuid.uuid4()}/resume",
            json={"interrupt_id": "x", "decision": "approve"},
            headers=attacker,
        )
        assert resume.status_code == 400
        jobs = await client.get("/api/jobs", headers={"Host": f"{EVIL}:{port}"})
        assert jobs.status_code == 400 and "job_id" not in jobs.text


@pytest.mark.parametrize(
    "host",
    ["127.0.0.1:{port}", "localhost:{port}", "LocalHost:{port}", "[::1]:{port}", "127.0.0.1"],
)
async def test_loopback_names_still_work(web: Any, host: str) -> None:
    host = host.format(port=port_of(web.url))
    async with httpx.AsyncClient(base_url=web.url, headers={"Host": host}) as client:
        assert (await client.get("/api/jobs")).status_code == 200
        assert (await client.get("/")).status_code == 200
        made = await client.post(
            "/api/jobs", json={"job_type": "sync"}, headers={"Origin": f"http://{host}"}
        )
        assert made.status_code == 201


async def test_names_from_secretary_web_hosts_are_served(database_url: str) -> None:
    with serve(database_url, web_hosts=("workspace-secretary",)) as running:
        async with httpx.AsyncClient(base_url=running.url) as client:
            port = port_of(running.url)
            ok = await client.get("/api/jobs", headers={"Host": f"workspace-secretary:{port}"})
            assert ok.status_code == 200
            assert (await client.get("/api/jobs", headers={"Host": EVIL})).status_code == 400


@pytest.mark.parametrize(
    "head",
    [
        b"GET /api/jobs HTTP/1.0\r\n\r\n",  # no Host at all
        b"GET /api/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n",
        b"GET /api/jobs HTTP/1.1\r\nHost: 127.0.0.1\xff\r\nConnection: close\r\n\r\n",
        b"GET /api/jobs HTTP/1.1\r\nHost: l\xc3\xb6calhost\r\nConnection: close\r\n\r\n",
    ],
    ids=["missing", "doubled", "latin1", "utf8"],
)
async def test_a_missing_doubled_or_non_ascii_host_is_refused(web: Any, head: bytes) -> None:
    status, body = await raw_request(web.url, head)
    assert status == 400, body


# -- tokens -------------------------------------------------------------------------


@pytest.fixture
def guarded(database_url: str) -> Any:
    with serve(database_url, web_token="s3cret") as running:
        yield running


@pytest.mark.parametrize(
    "value",
    [
        b"Bearer \xc3\xa9t\xc3\xa9",
        b"Bearer \xff\xfe",
        b"Bearer s3cr\xe9t",
        b"Basic czNjcmV0",
        b"Bearer",
        b"Bearer s3cret s3cret",
        b"s3cret",
        b"Bearer s3cret2",
        b"Bearer s3cre",
    ],
)
async def test_a_bad_authorization_header_is_401_never_500(guarded: Any, value: bytes) -> None:
    async with httpx.AsyncClient(base_url=guarded.url) as client:
        r = await client.get("/api/jobs", headers={"Authorization": value})
        assert r.status_code == 401 and r.json()["error"]
        assert r.headers["www-authenticate"] == "Bearer"


async def test_the_bearer_scheme_is_case_insensitive(guarded: Any) -> None:
    async with httpx.AsyncClient(base_url=guarded.url) as client:
        for value in ("Bearer s3cret", "bearer s3cret", "BEARER  s3cret"):
            assert (
                await client.get("/api/jobs", headers={"Authorization": value})
            ).status_code == 200


async def test_non_ascii_cookies_and_csrf_headers_are_refused_not_500(guarded: Any) -> None:
    status, _ = await raw_request(
        guarded.url,
        b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: piper_session=\xc3\xa9\xff\r\n"
        b"Connection: close\r\n\r\n",
    )
    assert status == 303  # to the login form
    async with httpx.AsyncClient(base_url=guarded.url) as client:
        assert (await client.post("/login", data={"token": "s3cret"})).status_code == 303
        await client.get("/")  # sets the CSRF cookie
        r = await client.post("/ui/jobs/sync", headers={"X-CSRF-Token": b"\xc3\xa9\xff"})
        assert r.status_code == 403 and r.json()["error"]


async def test_a_token_in_the_url_never_logs_in(guarded: Any) -> None:
    async with httpx.AsyncClient(base_url=guarded.url) as client:
        link = await client.get("/login", params={"token": "s3cret"})
        assert link.status_code == 400 and "set-cookie" not in link.headers
        assert 'method="post"' in link.text and "s3cret" not in link.text
        assert (await client.get("/")).status_code == 303
        posted = await client.post("/login", params={"token": "s3cret"})
        assert posted.status_code == 422 and "set-cookie" not in posted.headers
        form = await client.get("/login")
        assert form.headers["cache-control"] == "no-store"
        assert form.headers["referrer-policy"] == "no-referrer"
        login = await client.post("/login", data={"token": "s3cret"})
        assert login.status_code == 303 and login.headers["location"] == "/"
        assert (await client.get("/")).status_code == 200


async def test_a_wrong_token_in_the_login_form_is_401_whatever_its_bytes(guarded: Any) -> None:
    async with httpx.AsyncClient(base_url=guarded.url) as client:
        for token in ("nope", "s3cret\u0000", "s3crét", "\U0001f600"):
            r = await client.post("/login", data={"token": token})
            assert r.status_code == 401 and "piper_session" not in client.cookies


# -- binding ------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.4", "piper.lan"])
def test_a_non_loopback_bind_without_token_is_refused_at_start(host: str) -> None:
    with pytest.raises(SettingsError, match="SECRETARY_WEB_HOST: refusing to listen"):
        create_app(Settings(web_host=host))
    create_app(Settings(web_host=host, web_token="s3cret"))  # with a token it builds


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "localhost", "::1"])
def test_a_loopback_bind_needs_no_token(host: str) -> None:
    check_bind(Settings(web_host=host))


def _run(args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("SECRETARY_", "IMAP_"))}
    return subprocess.run(
        [sys.executable, *args],
        env={**clean, "SECRETARY_CONFIG": "/nonexistent/config.yaml", **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_secretary_run_refuses_a_non_loopback_host_without_token() -> None:
    r = _run(["-m", "app.cli", "run", "--host", "0.0.0.0"])
    assert r.returncode == 2
    assert r.stderr.startswith("error: SECRETARY_WEB_HOST: refusing to listen on '0.0.0.0'")
    assert "Piper is at" not in r.stdout


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SECRETARY_WEB_HOST": "0.0.0.0"}, "error: SECRETARY_WEB_HOST: refusing to listen"),
        (
            {"SECRETARY_WEB_PORT": "eighty"},
            "error: SECRETARY_WEB_PORT (from environment): expected an integer, got 'eighty'",
        ),
    ],
)
def test_uvicorn_started_directly_stops_with_one_line_and_exit_2(
    env: dict[str, str], message: str
) -> None:
    r = _run(["-m", "uvicorn", "app.web.main:app", "--port", "0"], **env)
    assert r.returncode == 2, r.stderr
    assert message in r.stderr and "Traceback" not in r.stderr


async def _through(middleware: SecurityMiddleware, server: tuple[str, int], path: str) -> int:
    scope = {
        "type": "http",
        "method": "GET",
        "path": path,
        "headers": [(b"host", b"localhost")],
        "server": server,
        "query_string": b"",
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await middleware(scope, receive, send)
    return int(sent[0]["status"])


async def test_without_token_only_loopback_connections_are_answered() -> None:
    """However the server was started (`uvicorn --host 0.0.0.0` too), a request
    that reached it on a non-loopback address is refused when there is no token."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    open_app = SecurityMiddleware(app, token=None)
    assert await _through(open_app, ("192.0.2.10", 8000), "/api/jobs") == 403
    assert await _through(open_app, ("::ffff:10.1.2.3", 8000), "/") == 403
    assert await _through(open_app, ("127.0.0.1", 8000), "/api/jobs") == 204
    assert await _through(open_app, ("::1", 8000), "/api/jobs") == 204
    guarded = SecurityMiddleware(app, token="s3cret")
    assert await _through(guarded, ("192.0.2.10", 8000), "/api/jobs") == 401


# -- the compose way: a generated token file ---------------------------------------


def test_the_token_file_is_made_once_owner_only_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "secrets" / "web-token"
    first = resolve_token_file(Settings(web_token_file=path, web_host="0.0.0.0"))
    assert first.web_token and len(first.web_token) >= 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = resolve_token_file(Settings(web_token_file=path))
    assert again.web_token == first.web_token
    explicit = resolve_token_file(Settings(web_token_file=path, web_token="mine"))
    assert explicit.web_token == "mine"
    check_bind(first)  # 0.0.0.0 with the generated token is allowed
    create_app(Settings(web_host="0.0.0.0", web_token_file=path))


def test_a_token_file_with_a_bad_token_is_one_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "web-token"
    path.write_text("two words\n")
    with pytest.raises(SettingsError, match="SECRETARY_WEB_TOKEN_FILE"):
        resolve_token_file(Settings(web_token_file=path))


async def test_a_server_with_a_token_file_wants_that_token(
    database_url: str, tmp_path: Path
) -> None:
    path = tmp_path / "web-token"
    with serve(database_url, web_token_file=path) as running:
        token = path.read_text().strip()
        async with httpx.AsyncClient(base_url=running.url) as client:
            assert (await client.get("/api/jobs")).status_code == 401
            ok = await client.get("/api/jobs", headers={"Authorization": f"Bearer {token}"})
            assert ok.status_code == 200


# -- the pool heals --------------------------------------------------------------------


def kill_backends(database_url: str) -> int:
    """What a Postgres restart or failover does to the web: every connection dies."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchall()
    return len(rows)


async def test_after_its_connections_are_killed_the_pool_hands_out_only_live_ones(
    web: Any,
) -> None:
    async with httpx.AsyncClient(base_url=web.url, timeout=20) as client:
        job = (await client.post("/api/jobs", json={"job_type": "sync"})).json()
        for _ in range(3):
            # Warm several idle connections, then kill them all while idle.
            await asyncio.gather(*(client.get(f"/api/jobs/{job['job_id']}") for _ in range(8)))
            assert kill_backends(web.database_url) >= 2
            started = time.monotonic()
            first = await client.get(f"/api/jobs/{job['job_id']}")
            # No back-off per dead connection (psycopg-pool's own check waits 1 s, 2 s, ...).
            assert first.status_code == 200 and time.monotonic() - started < 2.5
            statuses = [
                (await client.get(f"/api/jobs/{job['job_id']}")).status_code for _ in range(20)
            ]
            assert statuses == [200] * 20


async def test_killed_connections_under_load_give_503_at_worst_then_200(web: Any) -> None:
    async with httpx.AsyncClient(base_url=web.url, timeout=30) as client:
        job = (await client.post("/api/jobs", json={"job_type": "sync"})).json()
        url = f"/api/jobs/{job['job_id']}"
        statuses: Counter[int] = Counter()
        stop = asyncio.Event()

        async def reader() -> None:
            while not stop.is_set():
                r = await client.get(url)
                statuses[r.status_code] += 1
                if r.status_code == 503:
                    assert r.json()["error"] and r.headers["retry-after"]

        async def killer() -> None:
            for _ in range(3):
                await asyncio.sleep(0.4)
                await asyncio.to_thread(kill_backends, web.database_url)
            await asyncio.sleep(0.4)
            stop.set()

        deadline = time.monotonic() + 60
        await asyncio.wait_for(asyncio.gather(killer(), *(reader() for _ in range(6))), 60)
        assert time.monotonic() < deadline
        assert set(statuses) <= {200, 503}, statuses
        assert statuses[200] > 50, statuses
        after = [(await client.get(url)).status_code for _ in range(20)]
        assert after == [200] * 20
