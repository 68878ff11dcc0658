"""Chat with Piper: the JSON API (SPEC §6) and the page's HTMX endpoints drive
the same ChatService."""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, Field

from app.graph.service import MAX_MESSAGE_CHARS, ChatError, ChatTurn
from app.web.deps import ChatDep, StoreDep, TemplatesDep
from app.web.routes.jobs import ERRORS

router = APIRouter(tags=["chat"])
THREAD_COOKIE = "piper_thread"


class ChatRequest(BaseModel):
    thread_id: str | None = Field(default=None, min_length=1, max_length=200)
    message: str = Field(min_length=1, max_length=MAX_MESSAGE_CHARS)


class ResumeRequest(BaseModel):
    interrupt_id: str = Field(min_length=1, max_length=200)
    decision: Literal["approve", "reject"]
    selection: list[str] | None = Field(default=None, max_length=5000)


class ChatMessage(BaseModel):
    role: str
    content: str


class ChatResponse(BaseModel):
    thread_id: str
    messages: list[ChatMessage]
    interrupt: dict[str, Any] | None
    job_ids: list[str]


def _response(turn: ChatTurn) -> ChatResponse:
    return ChatResponse.model_validate(turn.as_dict())


@router.post("/api/chat", response_model=ChatResponse, responses=ERRORS)
async def chat(body: ChatRequest, service: ChatDep) -> ChatResponse:
    return _response(await service.send(body.thread_id, body.message))


@router.post("/api/chat/{thread_id}/resume", response_model=ChatResponse, responses=ERRORS)
async def resume(thread_id: str, body: ResumeRequest, service: ChatDep) -> ChatResponse:
    return _response(
        await service.resume(thread_id, body.interrupt_id, body.decision, body.selection)
    )


@router.get("/api/chat/{thread_id}", response_model=ChatResponse, responses=ERRORS)
async def view(thread_id: str, service: ChatDep) -> ChatResponse:
    return _response(await service.view(thread_id))


# -- the page -----------------------------------------------------------------


async def render_chat(
    request: Request,
    templates: Any,
    store: Any,
    turn: ChatTurn | None,
    thread_id: str,
    error: str | None = None,
) -> HTMLResponse:
    jobs = []
    for job_id in turn.job_ids if turn else []:
        job = await store.get(uuid.UUID(job_id))
        if job is not None:
            jobs.append(job.snapshot())
    html = templates.get_template("partials/chat_log.html").render(
        turn=turn, error=error, new_jobs=jobs, request=request
    )
    response = HTMLResponse(html)
    response.set_cookie(
        THREAD_COOKIE, thread_id, httponly=True, samesite="strict", max_age=30 * 86400
    )
    return response


@router.post("/ui/chat", response_class=HTMLResponse, include_in_schema=False)
async def ui_chat(
    request: Request,
    message: Annotated[str, Form()],
    service: ChatDep,
    store: StoreDep,
    templates: TemplatesDep,
) -> HTMLResponse:
    thread_id = request.cookies.get(THREAD_COOKIE) or uuid.uuid4().hex
    try:
        turn = await service.send(thread_id, message)
    except ChatError as exc:  # shown in the page, never a bare error status
        existing = await service.view(thread_id) if await service.exists(thread_id) else None
        return await render_chat(request, templates, store, existing, thread_id, error=exc.message)
    return await render_chat(request, templates, store, turn, thread_id)


@router.post("/ui/chat/resume", response_class=HTMLResponse, include_in_schema=False)
async def ui_resume(
    request: Request,
    interrupt_id: Annotated[str, Form()],
    decision: Annotated[str, Form()],
    service: ChatDep,
    store: StoreDep,
    templates: TemplatesDep,
    selection: Annotated[list[str] | None, Form()] = None,
) -> HTMLResponse:
    thread_id = request.cookies.get(THREAD_COOKIE, "")
    try:
        turn = await service.resume(thread_id, interrupt_id, decision, selection or [])
    except ChatError as exc:
        existing = (
            await service.view(thread_id) if thread_id and await service.exists(thread_id) else None
        )
        return await render_chat(request, templates, store, existing, thread_id, error=exc.message)
    return await render_chat(request, templates, store, turn, thread_id)
