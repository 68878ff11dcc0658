"""Access control: Host allowlist, optional token, same-origin checks, CSRF.

- DNS rebinding is refused (SPEC §6): a request whose `Host` is not a name the
  product serves gets 400, page and API alike. Without this, a hostile page
  whose own name resolves to 127.0.0.1 would be "same-origin" with itself and
  could drive the API. A request with no Host at all (HTTP/1.0) is refused
  too: every real browser and HTTP/1.1 client sends one, and trusting an
  absent claim would be the one gap left.
- Without `SECRETARY_WEB_TOKEN` the product is open on loopback only: a
  request that arrived on any other local address is refused (403), however
  the server was started (`uvicorn --host 0.0.0.0` included).
- With `SECRETARY_WEB_TOKEN` set, `/api` needs `Authorization: Bearer <token>`
  and the page needs a session cookie made from the token (via POST /login).
  Tokens are compared as bytes in constant time: a header that is not ASCII,
  or not a bearer token at all, is a 401, never a 500.
- A state-changing request whose Origin (or, lacking it, Referer) names
  another site is refused; clients that send neither (curl, httpx) pass.
- The page's own forms carry a CSRF token (double-submit cookie) on /ui posts.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import os
import secrets
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import ValidationError
from starlette.datastructures import Headers
from starlette.responses import JSONResponse, RedirectResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from app.config import Settings, SettingsError

log = logging.getLogger(__name__)

SESSION_COOKIE = "piper_session"
CSRF_COOKIE = "piper_csrf"
CSRF_HEADER = "x-csrf-token"
UNSAFE = {"POST", "PUT", "PATCH", "DELETE"}
OPEN_PATHS = ("/static/", "/login", "/healthz")
LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "[::1]", "::1"})
WILDCARD_BINDS = frozenset({"", "0.0.0.0", "::", "[::]", "*"})


# -- names and addresses -------------------------------------------------------


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def is_loopback(host: str) -> bool:
    """True for `localhost` and loopback addresses (127.0.0.0/8, ::1)."""
    if host.lower().rstrip(".") == "localhost":
        return True
    ip = _ip(host)
    return ip is not None and ip.is_loopback


def allowed_hosts(settings: Settings) -> frozenset[str]:
    """Loopback names, `SECRETARY_WEB_HOSTS`, and the bind address itself.

    The bind address is safe to add: a rebinding page's requests carry the
    attacker's name in Host, never our literal address or chosen name.
    """
    names = set(LOOPBACK_NAMES) | set(settings.web_hosts)
    bind = settings.web_host.strip().lower()
    if bind not in WILDCARD_BINDS:
        ip = _ip(bind)
        names.add(f"[{ip}]" if isinstance(ip, ipaddress.IPv6Address) else bind)
    return frozenset(names)


def host_name(value: str) -> str | None:
    """The name in a Host header, lower-cased and without its port; None if malformed."""
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            return None
        name, rest = value[: end + 1], value[end + 1 :]
    else:
        name, sep, port = value.partition(":")
        rest = sep + port
    if rest and not (rest.startswith(":") and rest[1:].isdigit() and len(rest) <= 6):
        return None
    if not name or any(c in name for c in "/@ \\?#"):
        return None
    return name


def check_bind(settings: Settings, host: str | None = None) -> None:
    """Refuse to serve a non-loopback address without a token (SPEC §6)."""
    host = settings.web_host if host is None else host
    if not is_loopback(host) and not settings.web_token:
        raise SettingsError(
            [
                f"SECRETARY_WEB_HOST: refusing to listen on {host!r} without SECRETARY_WEB_TOKEN "
                "(set a token, or SECRETARY_WEB_TOKEN_FILE to have one generated)"
            ]
        )


def resolve_token_file(settings: Settings) -> Settings:
    """Read the web token from `SECRETARY_WEB_TOKEN_FILE`, creating it when missing.

    This is the deliberate way to serve beyond loopback (compose): the token is
    made once, stored readable by its owner only, and never printed; the log
    says where it is. An explicit `SECRETARY_WEB_TOKEN` wins over the file.
    """
    path = settings.web_token_file
    if settings.web_token or path is None:
        return settings
    path = Path(path)
    try:
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_urlsafe(32) + "\n")
            log.warning("generated a web access token in %s (readable by its owner only)", path)
        token = path.read_text().strip()
    except FileExistsError:  # another process made it between our two calls
        token = path.read_text().strip()
    except OSError as exc:
        raise SettingsError(
            [f"SECRETARY_WEB_TOKEN_FILE: cannot use {path} ({exc.strerror})"]
        ) from None
    values = settings.model_dump()
    values["web_token"] = token or None
    try:
        return Settings(**values)
    except ValidationError:
        raise SettingsError(
            [f"SECRETARY_WEB_TOKEN_FILE: {path} must hold printable ASCII without spaces"]
        ) from None


# -- tokens --------------------------------------------------------------------


def session_value(token: str) -> str:
    return hmac.new(token.encode(), b"piper-session", hashlib.sha256).hexdigest()


def new_csrf_token() -> str:
    return secrets.token_urlsafe(24)


def same_bytes(given: bytes | str | None, expected: bytes | str) -> bool:
    """Constant-time equality on bytes; str is taken as UTF-8, so no input raises."""
    if given is None:
        return False
    if isinstance(given, str):
        given = given.encode("utf-8", "surrogatepass")
    if isinstance(expected, str):
        expected = expected.encode("utf-8", "surrogatepass")
    return hmac.compare_digest(given, expected)


def _raw_headers(scope: Scope, name: bytes) -> list[bytes]:
    return [v for k, v in scope.get("headers", ()) if k.lower() == name]


def bearer_matches(scope: Scope, token: str) -> bool:
    values = _raw_headers(scope, b"authorization")
    if len(values) != 1:
        return False
    scheme, _, credentials = values[0].strip().partition(b" ")
    return scheme.lower() == b"bearer" and same_bytes(credentials.strip(), token)


def _cookies(headers: Headers) -> dict[str, str]:
    jar: dict[str, str] = {}
    for chunk in headers.get("cookie", "").split(";"):
        if "=" in chunk:
            k, v = chunk.split("=", 1)
            jar.setdefault(k.strip(), v.strip())
    return jar


def _same_origin(source: str, host: str) -> bool:
    try:
        netloc = urlsplit(source).netloc
    except ValueError:  # e.g. an unbalanced "[" in a hostile Referer
        return False
    return bool(netloc) and netloc.lower() == host.lower()


async def _refuse(scope: Scope, receive: Receive, send: Send, status: int, error: str) -> None:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    await JSONResponse({"error": error}, status_code=status, headers=headers)(scope, receive, send)


# -- middleware ----------------------------------------------------------------


class HostAllowlistMiddleware:
    """Outermost layer: a request for a name we do not serve gets 400, even for errors."""

    def __init__(self, app: ASGIApp, allowed: Iterable[str]) -> None:
        self.app = app
        self.allowed = frozenset(h.lower() for h in allowed)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        values = _raw_headers(scope, b"host")
        name = None
        if len(values) == 1:
            try:
                name = host_name(values[0].decode("ascii"))
            except UnicodeDecodeError:
                name = None
        if name is None or name not in self.allowed:
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
                return
            await _refuse(
                scope, receive, send, 400, "unknown Host: this server answers only its own names"
            )
            return
        await self.app(scope, receive, send)


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
        if not self.token:
            server = scope.get("server")
            ip = _ip(str(server[0])) if server else None
            if ip is not None and not ip.is_loopback:
                await _refuse(
                    scope,
                    receive,
                    send,
                    403,
                    "without SECRETARY_WEB_TOKEN this server answers on loopback only",
                )
                return
        if method in UNSAFE:
            source = headers.get("origin") or headers.get("referer")
            if source and (source == "null" or not _same_origin(source, headers.get("host", ""))):
                await _refuse(scope, receive, send, 403, "cross-site request refused")
                return
        cookies = _cookies(headers)
        if self.token and not path.startswith(OPEN_PATHS):
            has_bearer = bearer_matches(scope, self.token)
            if path.startswith("/api"):
                if not has_bearer:
                    await _refuse(scope, receive, send, 401, "missing or wrong bearer token")
                    return
            elif not (
                has_bearer or same_bytes(cookies.get(SESSION_COOKIE), session_value(self.token))
            ):
                if method == "GET" and not path.startswith("/ui/"):
                    await RedirectResponse("/login", status_code=303)(scope, receive, send)
                else:
                    await _refuse(scope, receive, send, 401, "log in first")
                return
        if path.startswith("/ui/") and method in UNSAFE:
            expected = cookies.get(CSRF_COOKIE, "")
            if not expected or not same_bytes(headers.get(CSRF_HEADER, ""), expected):
                await _refuse(scope, receive, send, 403, "missing or wrong CSRF token")
                return
        await self.app(scope, receive, send)
