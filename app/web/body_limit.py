"""A cap on request bodies, before anything reads them.

Why: every body this product takes is small (a chat message is at most
10,000 characters, job parameters a few folder names), yet without a cap a
20 MB body was read, parsed and stored (a job whose error text repeated it).
A declared Content-Length over the cap is refused before the body is read; a
body sent without one is counted as it streams and refused when it passes.
(Starlette's own RequestBodyLimitMiddleware answers in plain text; the API
answers every error as `{"error": ...}`, SPEC §6.)
"""

from __future__ import annotations

from fastapi import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

MAX_BODY_BYTES = 1 << 20


class BodyTooLarge(HTTPException):
    """Raised from `receive`: a route reading the body answers 413 through the
    app's error handlers; one that escapes them is answered here."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body over {limit // 1024} KiB")


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, limit: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_large = BodyTooLarge(self.limit)
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                declared = int(value) if value.isdigit() else None
                if declared is None or declared > self.limit:
                    status, error = (
                        (400, "bad Content-Length")
                        if declared is None
                        else (
                            413,
                            too_large.detail,
                        )
                    )
                    await JSONResponse({"error": error}, status_code=status)(scope, receive, send)
                    return
        seen = 0
        started = False

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise too_large
            return message

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except BodyTooLarge:
            if started:
                raise
            await JSONResponse({"error": too_large.detail}, status_code=413)(scope, receive, send)
