"""Every error is `{"error": "..."}` with a 4xx status; bad input never yields a 500."""

from __future__ import annotations

import logging

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.graph.service import ChatError

log = logging.getLogger(__name__)


def _describe(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body",))
        if err.get("type") == "json_invalid":
            return "request body is not valid JSON"
        parts.append(f"{where}: {err.get('msg')}" if where else str(err.get("msg")))
    return "; ".join(parts) or "invalid request"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"error": _describe(exc)}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        return JSONResponse(
            {"error": detail}, status_code=exc.status_code, headers=getattr(exc, "headers", None)
        )

    @app.exception_handler(ChatError)
    async def chat_error(_: Request, exc: ChatError) -> JSONResponse:
        return JSONResponse({"error": exc.message}, status_code=exc.status)

    @app.exception_handler(psycopg.DataError)
    async def data_error(request: Request, exc: psycopg.DataError) -> JSONResponse:
        # Postgres refused a value the request carried (a NUL character, a number
        # out of range): that is bad input, not a server fault.
        log.info("rejected input on %s %s: %s", request.method, request.url.path, exc)
        return JSONResponse(
            {"error": "the request contains a value the database cannot store"}, status_code=422
        )

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse({"error": "internal error; see the server log"}, status_code=500)
