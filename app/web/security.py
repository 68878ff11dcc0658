"""Access control: optional token, same-origin checks for state changes, CSRF.

- With `SECRETARY_WEB_TOKEN` set, `/api` needs `Authorization: Bearer <token>`
  and the page needs a session cookie made from the token (via /login).
- A state-changing request whose Origin (or, lacking it, Referer) names
  another site is refused; clients that send neither (curl, httpx) pass.
- The page's own forms carry a CSRF token (double-submit cookie) on /ui posts.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.responses import JSONResponse, RedirectResponse
from starlette.types import ASGIApp, Receive, Scope, Send

SESSION_COOKIE = "piper_session"
CSRF_COOKIE = "piper_csrf"
CSRF_HEADER = "x-csrf-token"
UNSAFE = {"POST", "PUT", "PATCH", "DELETE"}
OPEN_PATHS = ("/static/", "/login", "/healthz")


def session_value(token: str) -> str:
    return hmac.new(token.encode(), b"piper-session", hashlib.sha256).hexdigest()


def new_csrf_token() -> str:
    return secrets.token_urlsafe(24)


def _same_origin(source: str, host: str) -> bool:
    parts = urlsplit(source)
    return bool(parts.netloc) and parts.netloc.lower() == host.lower()


def _cookies(headers: Headers) -> dict[str, str]:
    jar: dict[str, str] = {}
    for chunk in headers.get("cookie", "").split(";"):
        if "=" in chunk:
            k, v = chunk.split("=", 1)
            jar[k.strip()] = v.strip()
    return jar


class SecurityMiddleware:
    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app = app
        self.token = token or None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        method = scope["method"]
        path: str = scope["path"]
        host = headers.get("host", "")
        if method in UNSAFE:
            source = headers.get("origin") or headers.get("referer")
            if source and source != "null" and not _same_origin(source, host):
                await JSONResponse({"error": "cross-site request refused"}, status_code=403)(
                    scope, receive, send
                )
                return
            if source == "null":
                await JSONResponse({"error": "cross-site request refused"}, status_code=403)(
                    scope, receive, send
                )
                return
        cookies = _cookies(headers)
        if self.token and not path.startswith(OPEN_PATHS):
            bearer = headers.get("authorization", "")
            has_bearer = hmac.compare_digest(bearer, f"Bearer {self.token}")
            has_session = hmac.compare_digest(
                cookies.get(SESSION_COOKIE, ""), session_value(self.token)
            )
            if path.startswith("/api"):
                if not has_bearer:
                    await JSONResponse(
                        {"error": "missing or wrong bearer token"},
                        status_code=401,
                        headers={"WWW-Authenticate": "Bearer"},
                    )(scope, receive, send)
                    return
            elif not (has_session or has_bearer):
                if method == "GET" and not path.startswith("/ui/"):
                    await RedirectResponse("/login", status_code=303)(scope, receive, send)
                else:
                    await JSONResponse({"error": "log in first"}, status_code=401)(
                        scope, receive, send
                    )
                return
        if path.startswith("/ui/") and method in UNSAFE:
            sent = headers.get(CSRF_HEADER, "")
            expected = cookies.get(CSRF_COOKIE, "")
            if not expected or not hmac.compare_digest(sent, expected):
                await JSONResponse({"error": "missing or wrong CSRF token"}, status_code=403)(
                    scope, receive, send
                )
                return
        await self.app(scope, receive, send)
