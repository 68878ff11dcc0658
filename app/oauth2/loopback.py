"""The installed-app sign-in (RFC 8252 §7.3): a loopback redirect with PKCE.

A one-shot HTTP listener on 127.0.0.1 (a free port unless one is asked for)
receives the provider's redirect. Only a redirect carrying the `state` this run
made is accepted (anything else gets a 400 and the wait goes on), the code is
exchanged together with the PKCE verifier, and the tokens go to the caller,
which stores them. The listener logs nothing: the query carries the code.
"""

from __future__ import annotations

import contextlib
import hmac
import secrets
import threading
import webbrowser
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, HTTPServer
from urllib.parse import parse_qs, urlsplit

from pydantic import SecretStr

from app.oauth2 import grants
from app.oauth2.providers import Provider

DEFAULT_TIMEOUT = 300.0


class SignInFailed(Exception):
    """The sign-in did not complete; the message says why and what to do."""


@dataclass
class _Outcome:
    code: str | None = None
    error: str | None = None


class _LoopbackServer(HTTPServer):
    expected_state: str
    outcome: _Outcome | None = None
    done: threading.Event


class _RedirectHandler(BaseHTTPRequestHandler):
    server: _LoopbackServer

    def do_GET(self) -> None:  # noqa: N802 - the http.server protocol
        params = {k: v[0] for k, v in parse_qs(urlsplit(self.path).query).items()}
        state = params.get("state", "")
        if not hmac.compare_digest(state.encode(), self.server.expected_state.encode()):
            self._page(400, "This sign-in answer does not belong to the running `secretary auth`.")
            return
        if "error" in params:
            self.server.outcome = _Outcome(
                error=f"{params['error']}: {params.get('error_description', '')}".strip(": ")
            )
            self._page(200, "Sign-in was not completed. See the terminal for details.")
        elif params.get("code"):
            self.server.outcome = _Outcome(code=params["code"])
            self._page(200, "Piper is signed in. You can close this window.")
        else:
            self._page(400, "No authorization code in this answer.")
            return
        self.server.done.set()

    def _page(self, status: int, text: str) -> None:
        body = f"<!doctype html><title>Piper sign-in</title><p>{text}</p>\n".encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        """Silent: the request line holds the authorization code."""


def run_loopback_flow(
    provider: Provider,
    *,
    client_id: str,
    client_secret: SecretStr | None,
    listen_host: str = "127.0.0.1",
    port: int = 0,
    timeout: float = DEFAULT_TIMEOUT,
    open_browser: bool = True,
    announce: Callable[[str], None] = print,
) -> grants.IssuedToken:
    """Sign in with `provider` and return the tokens (with a refresh token).

    `announce` receives the lines to show the person, the authorization URL
    among them; the URL is also opened in a browser when `open_browser`.
    """
    server = _LoopbackServer((listen_host, port), _RedirectHandler)
    server.expected_state = secrets.token_urlsafe(32)
    server.done = threading.Event()
    redirect_uri = f"http://{provider.redirect_host}:{server.server_address[1]}"
    verifier = grants.new_code_verifier()
    url = grants.authorization_url(
        provider.auth_url,
        client_id=client_id,
        redirect_uri=redirect_uri,
        scope=provider.scope,
        state=server.expected_state,
        code_verifier=verifier,
        extra=provider.extra_params,
    )
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2})
    thread.daemon = True
    thread.start()
    try:
        announce("Open this address in a browser to sign in (waiting for the answer):")
        announce(url)
        if open_browser:
            # No browser here: the printed address is enough.
            with contextlib.suppress(Exception):
                webbrowser.open(url)
        if not server.done.wait(timeout):
            raise SignInFailed(f"no answer from the browser within {timeout:.0f} s; run it again")
    finally:
        server.shutdown()
        server.server_close()
    outcome = server.outcome
    assert outcome is not None
    if outcome.error is not None or outcome.code is None:
        raise SignInFailed(f"the provider did not sign you in ({outcome.error})")
    try:
        issued = grants.exchange_code(
            provider.token_url,
            outcome.code,
            client_id=client_id,
            client_secret=client_secret,
            redirect_uri=redirect_uri,
            code_verifier=verifier,
        )
    except (grants.GrantRefused, grants.GrantUnavailable) as exc:
        raise SignInFailed(f"the token endpoint did not accept the sign-in: {exc}") from None
    if issued.refresh_token is None:
        raise SignInFailed(
            "the provider issued no refresh token (Google: access_type=offline was refused; "
            "Microsoft: the offline_access permission is missing)"
        )
    return issued
