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
FASTAPI_BODY_PARSE_ERROR = "There was an error parsing the body"


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
        status = exc.status_code
        if status == 400 and detail == FASTAPI_BODY_PARSE_ERROR:
            # A body that is not even text (bad UTF-8): the same answer as
            # malformed JSON, so every endpoint documents one status for it.
            status, detail = 422, "request body is not valid JSON (nor UTF-8 text)"
        return JSONResponse(
            {"error": detail}, status_code=status, headers=getattr(exc, "headers", None)
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

    @app.exception_handler(psycopg.OperationalError)
    async def database_unavailable(request: Request, exc: psycopg.OperationalError) -> JSONResponse:
        # The database went away under this request (a restart, a failover, a
        # killed backend) or no connection came free in time (PoolTimeout is an
        # OperationalError). The pool replaces dead connections by itself, so a
        # retry shortly after succeeds: that is a 503, not a 500.
        log.warning(
            "database unavailable on %s %s: %s: %s",
            request.method,
            request.url.path,
            type(exc).__name__,
            str(exc).strip().splitlines()[0] if str(exc).strip() else "",
        )
        return JSONResponse(
            {"error": "the database is unavailable; try again shortly"},
            status_code=503,
            headers={"Retry-After": "1"},
        )

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse({"error": "internal error; see the server log"}, status_code=500)
