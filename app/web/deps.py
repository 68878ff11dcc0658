"""FastAPI dependencies: the objects the lifespan put on app.state."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.templating import Jinja2Templates

from app.config import Settings
from app.graph.service import ChatService
from app.jobs.store import JobStore
from app.web.hub import EventHub


def get_store(request: Request) -> JobStore:
    return request.app.state.store


def get_hub(request: Request) -> EventHub:
    return request.app.state.hub


def get_chat(request: Request) -> ChatService:
    return request.app.state.chat


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_templates(request: Request) -> Jinja2Templates:
    return request.app.state.templates


StoreDep = Annotated[JobStore, Depends(get_store)]
HubDep = Annotated[EventHub, Depends(get_hub)]
ChatDep = Annotated[ChatService, Depends(get_chat)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
TemplatesDep = Annotated[Jinja2Templates, Depends(get_templates)]
