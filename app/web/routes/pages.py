"""The chat page, login, and the page's job actions."""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, Form, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from markupsafe import Markup

from app.jobs.models import JobStatus, JobType
from app.web import lag_probe
from app.web.chat_view import page_turn
from app.web.deps import ChatDep, SettingsDep, StoreDep, TemplatesDep
from app.web.fragments import render_card
from app.web.progress import Progress
from app.web.progress_cache import CACHE as PROGRESS
from app.web.routes.chat import THREAD_COOKIE
from app.web.routes.jobs import load_job
from app.web.security import (
    CSRF_COOKIE,
    SESSION_COOKIE,
    new_csrf_token,
    same_bytes,
    session_value,
)

router = APIRouter(include_in_schema=False)
CSRF_SHAPE = re.compile(r"[A-Za-z0-9_-]{16,64}")


@router.get("/healthz")
async def healthz(request: Request) -> dict[str, object]:
    """Liveness plus the stream hub's load figures (used by bench/sse.py)."""
    hub = request.app.state.hub
    return {
        "status": "ok",
        "streams": sum(len(s) for s in hub.subs.values()),
        "hub_queries": hub.queries,
    }


@router.get("/healthz/lag")
async def healthz_lag(
    seconds: Annotated[float, Query(ge=0.1, le=60)] = 5.0, raw: bool = False
) -> dict[str, object]:
    """The event loop's lag over `seconds` (bench/sse.py reads it while it loads
    the process): one probe at a time; `raw` adds every sample."""
    try:
        return await lag_probe.measure(seconds, raw=raw)
    except lag_probe.ProbeBusy as exc:
        raise HTTPException(409, str(exc)) from None


@router.get("/", response_class=HTMLResponse)
async def index(
    request: Request, store: StoreDep, chat: ChatDep, templates: TemplatesDep, settings: SettingsDep
) -> Response:
    csrf = request.cookies.get(CSRF_COOKIE, "")
    if not CSRF_SHAPE.fullmatch(csrf):  # only our own tokens go into the page's markup
        csrf = new_csrf_token()
    thread_id = request.cookies.get(THREAD_COOKIE)
    turn = await chat.view(thread_id) if thread_id and await chat.exists(thread_id) else None
    shown_turn = page_turn(turn) if turn else None
    recent = await store.list(limit=12)
    shown = {j.job_id for j in recent}
    # Unfinished jobs always get a live card, however many jobs came after them.
    running = [
        j
        for status in (JobStatus.RUNNING, JobStatus.PENDING)
        for j in await store.list(status, limit=50)
        if j.job_id not in shown
    ]
    # Every card from the one fold (app/web/progress.py), as the live stream
    # renders it: a finished card here is the live card's last state, and a live
    # card streams on from the seq it was rendered at.
    states = await PROGRESS.current(store, running + recent)
    cards = [Markup(render_card(templates, s, live=not s.finished)) for s in states]
    response = templates.TemplateResponse(
        request,
        "index.html",
        {
            "csrf": csrf,
            "turn": shown_turn,
            "cards": cards,
            "identity": settings.identity_email,
            "demo": settings.demo_mode,
        },
    )
    response.set_cookie(CSRF_COOKIE, csrf, samesite="strict", httponly=True, max_age=30 * 86400)
    return response


# The login page must not be cached, nor leak its address to other sites.
LOGIN_HEADERS = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}


@router.get("/login", response_class=HTMLResponse)
async def login_page(request: Request, templates: TemplatesDep) -> Response:
    """The form only. A token in the URL never logs anyone in: URLs end up in
    the browser history, in proxy and server logs and in Referer headers."""
    if "token" in request.query_params:
        return templates.TemplateResponse(
            request,
            "login.html",
            {"error": "A token in the address is not accepted. Type it into the form."},
            status_code=400,
            headers=LOGIN_HEADERS,
        )
    return templates.TemplateResponse(request, "login.html", {"error": None}, headers=LOGIN_HEADERS)


@router.post("/login")
async def login(
    request: Request, token: Annotated[str, Form()], settings: SettingsDep, templates: TemplatesDep
) -> Response:
    expected = settings.web_token
    if expected and not same_bytes(token, expected):
        return templates.TemplateResponse(
            request,
            "login.html",
            {"error": "That token is not right."},
            status_code=401,
            headers=LOGIN_HEADERS,
        )
    response = RedirectResponse("/", status_code=303)  # never carries the token
    if expected:
        # Lax, so a link to the page from elsewhere opens it logged in; state
        # changes are guarded by the Origin check and the CSRF token instead.
        response.set_cookie(SESSION_COOKIE, session_value(expected), httponly=True, samesite="lax")
    return response


@router.post("/ui/jobs/sync", response_class=HTMLResponse)
async def ui_sync(request: Request, store: StoreDep, templates: TemplatesDep) -> HTMLResponse:
    job = await store.enqueue(JobType.SYNC, {})
    return HTMLResponse(render_card(templates, Progress.start(job), live=True), status_code=201)


@router.post("/ui/jobs/{job_id}/cancel", response_class=HTMLResponse)
async def ui_cancel(job_id: str, store: StoreDep) -> HTMLResponse:
    job = await load_job(store, job_id)
    if await store.request_cancel(job.job_id) is None:
        return HTMLResponse("finished")
    return HTMLResponse("cancelling…", status_code=202)
