"""The web process: page, JSON API and SSE. It never talks to IMAP; it
enqueues jobs and streams what the executor writes."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from app.config import Settings, SettingsError, load_settings
from app.db.connect import resolve_database_url
from app.db.migrate import MigrationMismatch, migrate
from app.db.pool import open_pool
from app.graph.chat_model import load_chat_model
from app.graph.deps import GraphDeps
from app.graph.service import ChatService
from app.jobs.store import JobStore
from app.web.body_limit import BodyLimitMiddleware
from app.web.chat_runs import ChatRuns
from app.web.errors import install_error_handlers
from app.web.hub import EventHub
from app.web.routes import chat, events, jobs, mirror, pages
from app.web.security import (
    HostAllowlistMiddleware,
    SecurityMiddleware,
    allowed_hosts,
    check_bind,
    resolve_token_file,
)

HERE = Path(__file__).resolve().parent.parent
log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; raises SettingsError for wrong settings or an unsafe bind."""
    settings = resolve_token_file(settings or load_settings())
    check_bind(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        conninfo = await asyncio.to_thread(resolve_database_url, settings)
        try:
            await asyncio.to_thread(migrate, conninfo)
        except MigrationMismatch as exc:
            # One line, not the traceback uvicorn prints for any lifespan error:
            # the person has to restore a file, nothing else helps.
            print(f"error: refusing to start: {exc}", file=sys.stderr, flush=True)
            os._exit(3)
        pool = await open_pool(conninfo, min_size=2, max_size=20)
        store = JobStore(pool)
        hub = EventHub(store, conninfo, poll_seconds=settings.sse_poll_seconds)
        await hub.start()
        chat_service = ChatService(
            GraphDeps(pool=pool, store=store, settings=settings),
            load_chat_model(settings),
        )
        await chat_service.setup()
        app.state.chat_runs = chat_runs = ChatRuns()
        app.state.settings = settings
        app.state.store = store
        app.state.hub = hub
        app.state.chat = chat_service
        _freeze_startup_heap()
        try:
            yield
        finally:
            await chat_runs.aclose()
            await hub.stop()
            await pool.close()

    app = FastAPI(
        title="Piper — workspace secretary",
        version="0.1.0",
        lifespan=lifespan,
        description="Chat, job and progress-stream API of Piper, the email secretary.",
    )
    app.state.templates = Jinja2Templates(directory=str(HERE / "templates"))
    app.state.settings = settings
    install_error_handlers(app)
    app.add_middleware(BodyLimitMiddleware)
    app.add_middleware(SecurityMiddleware, token=settings.web_token)
    # Added last, so it runs first: a foreign Host is refused before anything else.
    app.add_middleware(HostAllowlistMiddleware, allowed=allowed_hosts(settings))
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    app.include_router(jobs.router)
    app.include_router(events.router)
    app.include_router(mirror.router)
    app.include_router(chat.router)
    app.include_router(pages.router)
    return app


_heap_frozen = False
# Young objects allowed before a collection (CPython's default is 700). Every
# stream step allocates and frees futures, chunks and frames; with the default,
# collections come often and catch in-flight objects alive, which then age
# into the old generation until a full collection walks every open stream's
# objects (about 270 a stream). Rarer young collections promote less.
GC_YOUNG_THRESHOLD = 10_000


def _freeze_startup_heap() -> None:
    """Take what start-up built out of the garbage collector's sight, and
    collect the young generation less often.

    Modules, the app, the chat graph and the templates are some 150,000
    objects that live as long as the process, and a full collection walks
    every one of them on the event loop: 50-200 ms pauses were measured with
    500 streams open (bench/sse.py). Frozen, a full collection walks only what
    was made since. Once per process (tests start many apps in one)."""
    global _heap_frozen
    if not _heap_frozen:
        gc.collect()
        gc.freeze()
        _, older, oldest = gc.get_threshold()
        gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)
        _heap_frozen = True


def __getattr__(name: str) -> FastAPI:
    # `uvicorn app.web.main:app` builds the app on first access, so importing
    # this module (tests, tools) does not read the environment.
    if name == "app":
        try:
            application = create_app()
        except SettingsError as exc:
            # uvicorn imports us at start: one clear line, exit 2, no traceback.
            print(f"error: {exc}", file=sys.stderr, flush=True)
            raise SystemExit(2) from None
        globals()["app"] = application
        return application
    raise AttributeError(name)
