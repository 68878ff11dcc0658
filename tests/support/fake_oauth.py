"""A local OAuth2 authorization server for tests: authorization endpoint with
PKCE (S256) and loopback redirects, token endpoint with the authorization-code
and refresh-token grants, short-lived access tokens and revocation.

`on_issue(access_token, expires_in)` is called for each new access token, so a
test can make it valid at an IMAP server (`gmail_grants` wires it to the Gmail
double: each token is valid there from issue until it expires, like Google's).
Every token it makes contains `SECRET_MARK`, so a test can grep for leaks.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

SECRET_MARK = "ZQXSECRET"


def secret_value(kind: str) -> str:
    return f"{kind}-{SECRET_MARK}-{secrets.token_hex(8)}"


@dataclass
class _Code:
    client_id: str
    redirect_uri: str
    challenge: str
    scope: str


@dataclass
class FakeOAuthServer:
    clients: dict[str, str | None] = field(default_factory=dict)  # client id -> secret
    expires_in: int = 3600
    rotate_refresh_tokens: bool = False
    on_issue: Callable[[str, int], None] | None = None
    host: str = "127.0.0.1"
    port: int = 0
    refreshes: int = 0  # refresh-token grants answered with a token
    refused: int = 0  # grants answered with an error
    code_exchanges: int = 0
    # Like some real endpoints: a refusal repeats the request (its secrets
    # included) in its error_description, which must never be passed on.
    echo_requests: bool = False
    _last_request: str = ""
    refresh_tokens: dict[str, bool] = field(default_factory=dict)  # token -> still valid
    access_tokens: list[str] = field(default_factory=list)
    _codes: dict[str, _Code] = field(default_factory=dict)
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def base(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def auth_url(self) -> str:
        return f"{self.base}/authorize"

    @property
    def token_url(self) -> str:
        return f"{self.base}/token"

    def start(self) -> FakeOAuthServer:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                owner._authorize(self)

            def do_POST(self) -> None:  # noqa: N802
                owner._token(self)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

        self._server = ThreadingHTTPServer((self.host, 0), Handler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeOAuthServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- what tests do -------------------------------------------------------------------

    def new_refresh_token(self) -> str:
        """A refresh token as if the person had signed in earlier."""
        token = secret_value("rt")
        with self._lock:
            self.refresh_tokens[token] = True
        return token

    def revoke_refresh_token(self, token: str | None = None) -> None:
        """Revoke one refresh token, or all of them (the person removed the app's access)."""
        with self._lock:
            for t in [token] if token else list(self.refresh_tokens):
                self.refresh_tokens[t] = False

    # -- endpoints -------------------------------------------------------------------------

    def _authorize(self, h: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(h.path)
        q = {k: v[0] for k, v in parse_qs(parts.query).items()}
        if parts.path != "/authorize":
            return _send(h, 404, {"error": "not_found"})
        redirect = q.get("redirect_uri", "")
        target = urlsplit(redirect)
        problems = []
        if q.get("client_id") not in self.clients:
            problems.append("unknown client_id")
        if target.scheme != "http" or target.hostname not in ("127.0.0.1", "localhost"):
            problems.append("redirect_uri is not a loopback address")
        if q.get("response_type") != "code":
            problems.append("response_type must be code")
        if q.get("code_challenge_method") != "S256" or not q.get("code_challenge"):
            problems.append("PKCE with S256 is required")
        if not q.get("state"):
            problems.append("state is required")
        if problems:
            return _send(
                h, 400, {"error": "invalid_request", "error_description": "; ".join(problems)}
            )
        code = secrets.token_urlsafe(16)
        with self._lock:
            self._codes[code] = _Code(
                q["client_id"], redirect, q["code_challenge"], q.get("scope", "")
            )
        # The browser is sent back to the loopback listener, which sees 127.0.0.1 either way.
        location = f"http://127.0.0.1:{target.port}{target.path or '/'}?" + urlencode(
            {"code": code, "state": q["state"]}
        )
        h.send_response(302)
        h.send_header("Location", location)
        h.send_header("Content-Length", "0")
        h.end_headers()

    def _client(self, h: BaseHTTPRequestHandler, form: dict[str, str]) -> str | None:
        client_id, secret = form.get("client_id"), form.get("client_secret")
        header = h.headers.get("Authorization", "")
        if header.startswith("Basic "):
            client_id, _, secret = base64.b64decode(header[6:]).decode().partition(":")
        if client_id not in self.clients:
            return None
        expected = self.clients[client_id]
        return client_id if expected is None or expected == secret else None

    def _token(self, h: BaseHTTPRequestHandler) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length).decode()
        self._last_request = body
        form = {k: v[0] for k, v in parse_qs(body).items()}
        client = self._client(h, form)
        if client is None:
            return self._refuse(h, 401, "invalid_client", "Unauthorized")
        grant = form.get("grant_type")
        with self._lock:
            if grant == "authorization_code":
                code = self._codes.pop(form.get("code", ""), None)
                verifier = form.get("code_verifier", "")
                if code is None or code.client_id != client:
                    return self._refuse(h, 400, "invalid_grant", "Bad code")
                if code.redirect_uri != form.get("redirect_uri"):
                    return self._refuse(h, 400, "invalid_grant", "redirect_uri mismatch")
                challenge = (
                    base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
                    .rstrip(b"=")
                    .decode()
                )
                if challenge != code.challenge:
                    return self._refuse(h, 400, "invalid_grant", "PKCE verification failed")
                refresh = secret_value("rt")
                self.refresh_tokens[refresh] = True
                self.code_exchanges += 1
                return self._issue(h, refresh, code.scope)
            if grant == "refresh_token":
                refresh = form.get("refresh_token", "")
                if not self.refresh_tokens.get(refresh):
                    return self._refuse(
                        h, 400, "invalid_grant", "Token has been expired or revoked."
                    )
                self.refreshes += 1
                new_refresh = None
                if self.rotate_refresh_tokens:
                    new_refresh = secret_value("rt")
                    self.refresh_tokens[new_refresh] = True
                return self._issue(h, new_refresh, "")
        return self._refuse(h, 400, "unsupported_grant_type", "")

    def _issue(self, h: BaseHTTPRequestHandler, refresh: str | None, scope: str) -> None:
        access = secret_value("at")
        self.access_tokens.append(access)
        if self.on_issue is not None:
            self.on_issue(access, self.expires_in)
        body: dict[str, Any] = {
            "access_token": access,
            "token_type": "Bearer",
            "expires_in": self.expires_in,
        }
        if refresh:
            body["refresh_token"] = refresh
        if scope:
            body["scope"] = scope
        _send(h, 200, body)

    def _refuse(self, h: BaseHTTPRequestHandler, status: int, error: str, text: str) -> None:
        if self.echo_requests:
            text = f"{text} Bad request: {self._last_request}"
        self.refused += 1
        _send(h, status, {"error": error, "error_description": text})


def _send(h: BaseHTTPRequestHandler, status: int, body: dict[str, Any]) -> None:
    data = json.dumps(body).encode()
    h.send_response(status)
    h.send_header("Content-Type", "application/json")
    h.send_header("Content-Length", str(len(data)))
    h.end_headers()
    h.wfile.write(data)


class GmailGrants:
    """Makes each issued access token valid at the Gmail double until it expires.

    The double can only revoke all of a user's tokens, so an expiry revokes
    all and grants back those still valid.
    """

    def __init__(self, double: Any, user: str) -> None:
        self.double = double
        self.user = user
        self.valid: dict[str, float] = {}
        self._lock = threading.Lock()
        self._timers: list[threading.Timer] = []

    def __call__(self, token: str, expires_in: int) -> None:
        with self._lock:
            self.valid[token] = time.monotonic() + expires_in
            self.double.grant(self.user, token)
        timer = threading.Timer(expires_in, self._expire, args=(token,))
        timer.daemon = True
        self._timers.append(timer)
        timer.start()

    def _expire(self, token: str) -> None:
        with self._lock:
            if self.valid.pop(token, None) is None:
                return
            self.double.revoke(self.user)
            for other in self.valid:
                self.double.grant(self.user, other)

    def revoke_all(self) -> None:
        """Revoked at the IMAP side only (the token endpoint still refreshes)."""
        with self._lock:
            self.valid.clear()
            self.double.revoke(self.user)

    def cancel(self) -> None:
        for timer in self._timers:
            timer.cancel()
