"""The JSON API, chat API and page security against a real uvicorn and Postgres."""

from __future__ import annotations

import re
import uuid
from typing import Any

import httpx
import pytest

from app.jobs.models import JobStatus, Lease
from app.jobs.store import JobStore
from tests.support.mirror_fixtures import github, insert_emails
from tests.support.uvicorn_server import serve


@pytest.fixture
async def client(web: Any) -> Any:
    async with httpx.AsyncClient(base_url=web.url, timeout=20) as c:
        yield c


async def test_create_list_get_cancel(client: httpx.AsyncClient) -> None:
    r = await client.post("/api/jobs", json={"job_type": "sync", "params": {"folders": ["INBOX"]}})
    assert r.status_code == 201
    snap = r.json()
    assert set(snap) == {
        "job_id",
        "job_type",
        "status",
        "processed",
        "total_estimate",
        "error",
        "cancel_requested",
        "attempt",
        "created_at",
        "started_at",
        "finished_at",
    }
    assert snap["status"] == "pending" and snap["job_type"] == "sync"
    listed = (await client.get("/api/jobs")).json()
    assert [j["job_id"] for j in listed] == [snap["job_id"]]
    assert (await client.get("/api/jobs", params={"status": "completed"})).json() == []
    assert (await client.get(f"/api/jobs/{snap['job_id']}")).json()["job_id"] == snap["job_id"]
    cancel = await client.post(f"/api/jobs/{snap['job_id']}/cancel")
    assert cancel.status_code == 202 and cancel.json()["status"] == "cancelled"
    again = await client.post(f"/api/jobs/{snap['job_id']}/cancel")
    assert again.status_code == 409 and "error" in again.json()


@pytest.mark.parametrize("job_type", ["clean", "mark_read", "mark_unread", "move", "label", "undo"])
async def test_mutation_types_are_forbidden(client: httpx.AsyncClient, job_type: str) -> None:
    r = await client.post("/api/jobs", json={"job_type": job_type, "params": {}})
    assert r.status_code == 403 and r.json()["error"]


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("post", "/api/jobs", {"job_type": "nonsense"}, 422),
        ("post", "/api/jobs", {"params": {}}, 422),
        ("post", "/api/jobs", {"job_type": "sync", "params": {"folders": "INBOX"}}, 422),
        ("post", "/api/jobs", {"job_type": "sync", "params": {"bogus": 1}}, 422),
        ("get", "/api/jobs/not-a-uuid", None, 422),
        ("get", f"/api/jobs/{uuid.uuid4()}", None, 404),
        ("post", f"/api/jobs/{uuid.uuid4()}/cancel", None, 404),
        ("get", "/api/jobs?status=bogus", None, 422),
        ("get", f"/api/jobs/{uuid.uuid4()}/events", None, 404),
        ("get", "/api/jobs/xyz/events", None, 422),
        ("post", "/api/jobs", {"job_type": "sync", "params": {"folders": ["a\u0000b"]}}, 422),
        ("post", "/api/jobs", {"job_type": "sync", "params": {"folders": [""]}}, 422),
        ("post", "/api/jobs", {"job_type": "sync", "params": {"batch_size": 0}}, 422),
        ("post", "/api/jobs", {"job_type": "sync", "params": {"folders": ["A" * 1001]}}, 422),
        ("post", "/api/jobs", {"job_type": "sync", "params": {"folders": ["A"] * 1001}}, 422),
        ("post", "/api/jobs", {"job_type": "sync", "params": {"folders": ["A" * 2_000_000]}}, 413),
        ("post", "/api/chat", {"message": "x" * 2_000_000}, 413),
        ("post", "/api/chat", {"thread_id": "a/b", "message": "/clean"}, 422),
        ("post", "/api/jobs", {"job_type": "sync", "params": None}, 422),
        ("post", "/api/jobs", [1, 2], 422),
        ("get", "/api/jobs?limit=0", None, 422),
        ("delete", "/api/jobs", None, 405),
        ("get", "/api/nowhere", None, 404),
    ],
)
async def test_bad_input_gets_a_clear_4xx(
    client: httpx.AsyncClient, method: str, path: str, body: Any, status: int
) -> None:
    r = await client.request(method.upper(), path, json=body)
    assert r.status_code == status
    assert isinstance(r.json()["error"], str) and r.json()["error"]


async def test_malformed_json_is_a_4xx_json_error(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/api/jobs", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert r.status_code == 422 and "JSON" in r.json()["error"]
    r = await client.post(
        "/api/chat", content=b"[1,2", headers={"content-type": "application/json"}
    )
    assert r.status_code == 422


async def test_a_body_streamed_past_the_cap_is_refused(client: httpx.AsyncClient) -> None:
    """No Content-Length (chunked): the body is counted as it arrives."""

    async def chunks() -> Any:
        yield b'{"job_type": "sync", "params": {"folders": ["'
        for _ in range(40):
            yield b"A" * 65536
        yield b'"]}}'

    r = await client.post(
        "/api/jobs", content=chunks(), headers={"content-type": "application/json"}
    )
    assert r.status_code == 413 and "KiB" in r.json()["error"]
    assert (await client.get("/api/jobs")).json() == []


async def test_cross_site_post_is_refused_but_same_site_and_no_origin_pass(
    client: httpx.AsyncClient, web: Any
) -> None:
    evil = await client.post(
        "/api/jobs", json={"job_type": "sync"}, headers={"Origin": "https://evil.example"}
    )
    assert evil.status_code == 403
    referer = await client.post(
        "/api/jobs", json={"job_type": "sync"}, headers={"Referer": "https://evil.example/page"}
    )
    assert referer.status_code == 403
    same = await client.post("/api/jobs", json={"job_type": "sync"}, headers={"Origin": web.url})
    assert same.status_code == 201


async def test_page_forms_need_the_csrf_token(client: httpx.AsyncClient) -> None:
    page = await client.get("/")
    assert page.status_code == 200 and "X-CSRF-Token" in page.text
    token = client.cookies.get("piper_csrf")
    assert token
    refused = await client.post("/ui/jobs/sync", headers={"X-CSRF-Token": "wrong"})
    assert refused.status_code == 403
    ok = await client.post("/ui/jobs/sync", headers={"X-CSRF-Token": token})
    assert ok.status_code == 201 and "job-card" in ok.text


async def test_token_protects_api_and_page(database_url: str) -> None:
    with serve(database_url, web_token="s3cret") as running:
        async with httpx.AsyncClient(base_url=running.url) as c:
            assert (await c.get("/api/jobs")).status_code == 401
            assert (
                await c.get("/api/jobs", headers={"Authorization": "Bearer nope"})
            ).status_code == 401
            assert (
                await c.get("/api/jobs", headers={"Authorization": "Bearer s3cret"})
            ).status_code == 200
            page = await c.get("/")
            assert page.status_code == 303 and page.headers["location"] == "/login"
            wrong = await c.post("/login", data={"token": "nope"})
            assert wrong.status_code == 401 and "not right" in wrong.text
            assert (await c.post("/ui/jobs/sync")).status_code == 401
            login = await c.post("/login", data={"token": "s3cret"})
            assert login.status_code == 303
            assert (await c.get("/")).status_code == 200
            cookie = login.headers["set-cookie"].lower()
            assert "httponly" in cookie and "s3cret" not in cookie
        async with httpx.AsyncClient(base_url=running.url) as c:
            # A token in the URL (history, logs, Referer) never logs anyone in.
            link = await c.get("/login", params={"token": "s3cret"})
            assert link.status_code == 400 and "piper_session" not in c.cookies
            assert (await c.get("/")).status_code == 303


async def test_mail_text_is_escaped_in_fragments(
    client: httpx.AsyncClient, store: JobStore
) -> None:
    job = await store.enqueue("sync")
    [claimed] = await store.claim(["w"], lease_seconds=30)
    await store.progress(
        Lease.of(claimed), "<script>alert(1)</script>", processed=1, total_estimate=2
    )
    await store.finish(
        Lease.of(claimed),
        JobStatus.FAILED,
        "<script>alert(3)</script>",
        error="<img src=x onerror=alert(2)>",
    )
    async with client.stream("GET", f"/ui/jobs/{job.job_id}/stream") as r:
        body = "".join([chunk async for chunk in r.aiter_text()])
    assert "<script>" not in body and "&lt;script&gt;alert(3)" in body
    assert "<img src=x" not in body and "&lt;img src=x" in body


async def test_chat_api_flow_and_errors(
    client: httpx.AsyncClient, pool: Any, store: JobStore
) -> None:
    await insert_emails(pool, [github(1), github(2)])
    r = await client.post("/api/chat", json={"message": "mark the GitHub notifications as read"})
    assert r.status_code == 200
    turn = r.json()
    assert set(turn) == {"thread_id", "messages", "interrupt", "job_ids"}
    assert (
        turn["interrupt"]["kind"] == "approval"
        and turn["interrupt"]["id"]
        and turn["job_ids"] == []
    )
    assert all(set(m) == {"role", "content"} for m in turn["messages"])
    tid, iid = turn["thread_id"], turn["interrupt"]["id"]
    bad = await client.post(
        f"/api/chat/{tid}/resume", json={"interrupt_id": iid, "decision": "maybe"}
    )
    assert bad.status_code == 422
    stale = await client.post(
        f"/api/chat/{tid}/resume", json={"interrupt_id": "nope", "decision": "approve"}
    )
    assert stale.status_code == 409
    unknown = await client.post(
        "/api/chat/no-such-thread/resume", json={"interrupt_id": iid, "decision": "approve"}
    )
    assert unknown.status_code == 404
    # A selection that picks nothing, or names messages the card does not show,
    # is refused and the approval stays pending (it used to be used up on an error).
    for selection in ([], ["no-such-message"]):
        refused = await client.post(
            f"/api/chat/{tid}/resume",
            json={"interrupt_id": iid, "decision": "approve", "selection": selection},
        )
        assert refused.status_code == 422, refused.text
        assert "selection" in refused.json()["error"]
    assert (await client.get(f"/api/chat/{tid}")).json()["interrupt"]["id"] == iid
    assert [j for j in await store.list() if j.job_type.value == "mark_read"] == []
    ok = await client.post(
        f"/api/chat/{tid}/resume", json={"interrupt_id": iid, "decision": "approve"}
    )
    assert (
        ok.status_code == 200 and len(ok.json()["job_ids"]) == 1 and ok.json()["interrupt"] is None
    )
    twice = await client.post(
        f"/api/chat/{tid}/resume", json={"interrupt_id": iid, "decision": "approve"}
    )
    assert twice.status_code == 409
    assert len([j for j in await store.list() if j.job_type.value == "mark_read"]) == 1
    assert (await client.post("/api/chat", json={"message": ""})).status_code == 422
    assert (await client.post("/api/chat", json={"message": "   "})).status_code == 422
    assert (await client.post("/api/chat", json={"message": "x" * 10_001})).status_code in (
        413,
        422,
    )


async def test_openapi_schema_documents_the_api(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()
    for path in (
        "/api/jobs",
        "/api/jobs/{job_id}",
        "/api/jobs/{job_id}/cancel",
        "/api/chat",
        "/api/chat/{thread_id}/resume",
    ):
        assert path in schema["paths"]


async def test_resume_point_out_of_range_is_422(client: httpx.AsyncClient, store: JobStore) -> None:
    job = await store.enqueue("sync")
    for params in ({"after": -1}, {"after": 2**40}):
        r = await client.get(f"/api/jobs/{job.job_id}/events", params=params)
        assert r.status_code == 422 and r.json()["error"]


async def test_page_lists_running_jobs_with_live_cards(
    client: httpx.AsyncClient, store: JobStore
) -> None:
    """A reload re-attaches: running jobs come back as cards that subscribe again."""
    running = await store.enqueue("sync")
    await store.claim(["w"], lease_seconds=30)
    page = await client.get("/")
    # ... from the event seq the page rendered (the claim is seq 1), not from 0.
    assert f'sse-connect="/ui/jobs/{running.job_id}/stream?after=1"' in page.text
    assert 'id="chat-input"' in page.text and 'hx-post="/ui/chat"' in page.text
    scripts = re.findall(r'<script src="([^"]+)"', page.text)
    assert scripts and all(src.startswith("/static/") for src in scripts)  # no CDN
