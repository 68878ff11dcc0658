"""Chat with Piper: the JSON API (SPEC §6) and the page's HTMX endpoints drive
the same ChatService. With `Accept: text/event-stream` the API answers as SSE
(`token`, `tool`, then `chat_done` carrying the JSON answer); the page starts
a turn with a POST and streams it through the htmx sse extension."""

from __future__ import annotations

import asyncio
import html
import json
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel, Field
from sse_starlette import EventSourceResponse

from app.graph.service import MAX_MESSAGE_CHARS, ChatError, ChatService, ChatTurn, TurnStarted
from app.web.chat_runs import ChatRun, ChatRuns
from app.web.chat_view import page_turn, turn_json
from app.web.deps import ChatDep, StoreDep, TemplatesDep
from app.web.routes.jobs import ERRORS

router = APIRouter(tags=["chat"])
THREAD_COOKIE = "piper_thread"
TOKEN_EVERY_SECONDS = 0.08
STREAM = {200: {"content": {"text/event-stream": {}}, "description": "JSON, or SSE on request"}}


def get_runs(request: Request) -> ChatRuns:
    return request.app.state.chat_runs


RunsDep = Annotated[ChatRuns, Depends(get_runs)]


class Edit(BaseModel):
    target: str = Field(
        max_length=200, description="The folder of a move, the label of a label job."
    )


class ChatRequest(BaseModel):
    # A thread id goes into URL paths (`/api/chat/{thread_id}/resume`): one
    # with a slash, a space or a control character could be started but
    # never resumed, so only URL-safe characters are taken.
    thread_id: str | None = Field(
        default=None, min_length=1, max_length=200, pattern=r"^[A-Za-z0-9._~-]+$"
    )
    message: str = Field(min_length=1, max_length=MAX_MESSAGE_CHARS)


class ResumeRequest(BaseModel):
    interrupt_id: str = Field(min_length=1, max_length=200)
    decision: Literal["approve", "reject"]
    selection: list[str] | None = Field(default=None, max_length=5000)
    edit: Edit | None = None


class ChatMessage(BaseModel):
    role: str
    content: str


class ChatResponse(BaseModel):
    thread_id: str
    messages: list[ChatMessage]
    interrupt: dict[str, Any] | None
    job_ids: list[str]


def _response(turn: ChatTurn) -> ChatResponse:
    return ChatResponse.model_validate(turn_json(turn))


def _wants_stream(request: Request) -> bool:
    return "text/event-stream" in request.headers.get("accept", "").lower()


def _dumps(value: Any) -> str:
    return json.dumps(value, default=str)


async def _api_events(run: ChatRun, service: ChatService) -> AsyncIterator[dict[str, str]]:
    """SPEC §6: every event's data is JSON whose `type` is the event's name; the
    last is `chat_done` with the JSON answer (after an `error`, the thread as it is)."""
    async for item in run.follow():
        if isinstance(item, ChatTurn):
            yield _chat_done(item)
            return
        yield {"event": item["type"], "data": _dumps(item)}
    exists = await service.exists(run.thread_id)
    turn = await service.view(run.thread_id) if exists else ChatTurn(run.thread_id, [], None)
    yield _chat_done(turn)


def _chat_done(turn: ChatTurn) -> dict[str, str]:
    return {"event": "chat_done", "data": _dumps({"type": "chat_done", **turn_json(turn)})}


@router.post("/api/chat", response_model=ChatResponse, responses={**ERRORS, **STREAM})
async def chat(
    body: ChatRequest, request: Request, service: ChatDep, runs: RunsDep
) -> ChatResponse | EventSourceResponse:
    if _wants_stream(request):
        run = await runs.start(service.stream_send(body.thread_id, body.message))
        return EventSourceResponse(_api_events(run, service))
    return _response(await service.send(body.thread_id, body.message))


@router.post(
    "/api/chat/{thread_id}/resume", response_model=ChatResponse, responses={**ERRORS, **STREAM}
)
async def resume(
    thread_id: str, body: ResumeRequest, request: Request, service: ChatDep, runs: RunsDep
) -> ChatResponse | EventSourceResponse:
    edit = body.edit.model_dump() if body.edit else None
    args = (thread_id, body.interrupt_id, body.decision, body.selection, edit)
    if _wants_stream(request):
        run = await runs.start(service.stream_resume(*args))
        return EventSourceResponse(_api_events(run, service))
    return _response(await service.resume(*args))


@router.get("/api/chat/{thread_id}", response_model=ChatResponse, responses=ERRORS)
async def view(thread_id: str, service: ChatDep) -> ChatResponse:
    return _response(await service.view(thread_id))


# -- the page -----------------------------------------------------------------


async def chat_log_html(
    request: Request,
    templates: Any,
    store: Any,
    turn: ChatTurn | None,
    error: str | None = None,
    *,
    started: TurnStarted | None = None,
) -> str:
    """The whole chat log, or with `started` only what that turn added (the
    page puts it in place of the live turn and drops what the turn set aside:
    old turns are never rendered or laid out again), and, out of band, cards
    for the jobs the turn started."""
    jobs = []
    for job_id in turn.job_ids if turn else []:
        job = await store.get(uuid.UUID(job_id))
        if job is not None:
            jobs.append(job.snapshot())
    shown = page_turn(turn, since=started.before if started else 0) if turn else None
    return templates.get_template("partials/chat_log.html").render(
        turn=shown, error=error, new_jobs=jobs, started=started, request=request
    )


def _with_thread(response: Response, thread_id: str) -> Response:
    response.set_cookie(
        THREAD_COOKIE, thread_id, httponly=True, samesite="strict", max_age=30 * 86400
    )
    return response


async def _error_log(
    request: Request, templates: Any, store: Any, service: Any, thread_id: str, error: str
) -> Response:
    """A refused request, shown in the page (never a bare error status): the
    whole log again, with the message, in place of the log."""
    existing = (
        await service.view(thread_id) if thread_id and await service.exists(thread_id) else None
    )
    content = await chat_log_html(request, templates, store, existing, error=error)
    response = HTMLResponse(content, headers={"HX-Retarget": "#chat-log", "HX-Reswap": "innerHTML"})
    return _with_thread(response, thread_id) if thread_id else response


def _live(templates: Any, run: ChatRun, **context: Any) -> HTMLResponse:
    html_text = templates.get_template("partials/chat_live.html").render(run_id=run.id, **context)
    return HTMLResponse(html_text)


@router.post("/ui/chat", response_class=HTMLResponse, include_in_schema=False)
async def ui_chat(
    request: Request,
    message: Annotated[str, Form()],
    service: ChatDep,
    runs: RunsDep,
    store: StoreDep,
    templates: TemplatesDep,
) -> Response:
    thread_id = request.cookies.get(THREAD_COOKIE) or uuid.uuid4().hex
    try:
        run = await runs.start(service.stream_send(thread_id, message))
    except ChatError as exc:
        return await _error_log(request, templates, store, service, thread_id, exc.message)
    return _with_thread(_live(templates, run, user_text=message.strip()), run.thread_id)


@router.post("/ui/chat/resume", response_class=HTMLResponse, include_in_schema=False)
async def ui_resume(
    request: Request,
    interrupt_id: Annotated[str, Form()],
    decision: Annotated[str, Form()],
    service: ChatDep,
    runs: RunsDep,
    store: StoreDep,
    templates: TemplatesDep,
    selection: Annotated[list[str] | None, Form()] = None,
    target: Annotated[str | None, Form(max_length=200)] = None,
) -> Response:
    thread_id = request.cookies.get(THREAD_COOKIE, "")
    edit = {"target": target} if target is not None else None
    try:
        run = await runs.start(
            service.stream_resume(thread_id, interrupt_id, decision, selection or [], edit)
        )
    except ChatError as exc:
        return await _error_log(request, templates, store, service, thread_id, exc.message)
    note = "Approved" if decision == "approve" else "Rejected"
    return _live(templates, run, note=note)


@router.get("/ui/chat/runs/{run_id}", include_in_schema=False)
async def ui_run_stream(
    run_id: str,
    request: Request,
    runs: RunsDep,
    service: ChatDep,
    store: StoreDep,
    templates: TemplatesDep,
) -> Response:
    """The page's view of a running turn: escaped text (what the model wrote
    since the last event, at most every TOKEN_EVERY_SECONDS), tool lines, then
    the turn's messages in place of the live turn. A run that is gone answers
    204, so the browser stops asking."""
    run = runs.get(run_id)
    if run is None:
        return Response(status_code=204)

    async def events() -> AsyncIterator[dict[str, str]]:
        error: str | None = None
        async for batch in run.batches():
            text: list[str] = []
            for item in batch:
                if isinstance(item, ChatTurn):
                    content = await chat_log_html(
                        request, templates, store, item, started=run.started
                    )
                    yield {"event": "chat_done", "data": content}
                    return
                if item["type"] == "token":
                    text.append(item["text"])
                    continue
                if text:
                    yield _token(text)
                    text = []
                if item["type"] == "tool":
                    yield {"event": "tool", "data": _tool_line(item)}
                else:
                    error = str(item.get("error"))
            if text:
                yield _token(text)
                # What the model writes meanwhile goes out as one swap: a swap
                # per token kept the browser busy for tens of ms at a time.
                await asyncio.sleep(TOKEN_EVERY_SECONDS)
        # The turn failed: what the thread has of it now, with the error.
        exists = await service.exists(run.thread_id)
        turn = await service.view(run.thread_id) if exists else ChatTurn(run.thread_id, [], None)
        content = await chat_log_html(request, templates, store, turn, error, started=run.started)
        yield {"event": "chat_done", "data": content}

    return EventSourceResponse(events())


def _token(text: list[str]) -> dict[str, str]:
    return {"event": "token", "data": html.escape("".join(text))}


TOOL_STATUS = {"start": "…", "end": "✓", "error": "failed"}


def _tool_line(event: dict[str, Any]) -> str:
    name = html.escape(str(event["name"]))
    status = TOOL_STATUS.get(str(event["status"]), html.escape(str(event["status"])))
    return f'<div class="msg tool live-tool">⚙ {name} {status}</div>'
