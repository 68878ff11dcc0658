"""The token endpoint, through Authlib: the refresh-token grant, and the
authorization-code grant with PKCE that `secretary auth` uses.

Errors come back as two kinds, because they call for different actions:
`GrantRefused` (the provider said no: the refresh token was revoked or expired,
the client is wrong; only a new sign-in helps) and `GrantUnavailable` (the
endpoint could not be reached or answered garbage; try again later). Neither
message carries a token or a client secret.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import requests
from authlib.common.security import generate_token
from authlib.integrations.base_client import OAuthError
from authlib.integrations.requests_client import OAuth2Session
from pydantic import SecretStr

TIMEOUT = 30.0
# A token response without expires_in is trusted for this long.
DEFAULT_LIFETIME = 3600.0
# Error codes (RFC 6749 §5.2 and common extensions) that mean "try again later".
TRANSIENT_ERRORS = frozenset({"temporarily_unavailable", "server_error", "slow_down"})


class GrantRefused(Exception):
    """The endpoint refused the grant (e.g. invalid_grant): sign in again."""

    def __init__(self, error: str, description: str = "") -> None:
        self.error = error
        self.description = description[:200]
        super().__init__(f"{error}: {self.description}" if self.description else error)


class GrantUnavailable(Exception):
    """The endpoint could not be reached or gave no usable answer: try later."""


@dataclass(frozen=True)
class IssuedToken:
    access_token: SecretStr = field(repr=False)
    expires_at: float  # seconds since the epoch (time.time())
    lifetime: float
    refresh_token: SecretStr | None = field(default=None, repr=False)
    scope: str = ""


def new_code_verifier() -> str:
    """A PKCE code verifier (RFC 7636: 43 to 128 unreserved characters)."""
    return generate_token(64)


def _secret(value: SecretStr | None) -> str | None:
    return value.get_secret_value() if value is not None else None


def session(
    client_id: str,
    client_secret: SecretStr | None = None,
    *,
    redirect_uri: str | None = None,
    scope: str | None = None,
) -> OAuth2Session:
    # Client id (and secret, when the client has one) go in the form body: Google
    # and Entra take that, and so does every token endpoint we know; a client
    # without a secret (Entra public clients) sends its id alone.
    secret = _secret(client_secret)
    return OAuth2Session(
        client_id=client_id,
        client_secret=secret,
        token_endpoint_auth_method="client_secret_post" if secret else "none",
        redirect_uri=redirect_uri,
        scope=scope,
        code_challenge_method="S256",
    )


def _issued(token: dict[str, object], sent_at: float) -> IssuedToken:
    access = token.get("access_token")
    if not isinstance(access, str) or not access:
        raise GrantUnavailable("the token endpoint answered without an access_token")
    try:
        lifetime = float(token.get("expires_in") or DEFAULT_LIFETIME)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        lifetime = DEFAULT_LIFETIME
    refresh = token.get("refresh_token")
    return IssuedToken(
        access_token=SecretStr(access),
        # Counted from when the request was sent: the token cannot outlive that.
        expires_at=sent_at + lifetime,
        lifetime=lifetime,
        refresh_token=SecretStr(refresh) if isinstance(refresh, str) and refresh else None,
        scope=str(token.get("scope") or ""),
    )


# RFC 6749 §5.2 error codes are short ASCII words; anything else in `error` is
# the provider's free text and is not repeated.
_ERROR_CODE = re.compile(r"[a-z_]{1,64}")
# `refresh_token=...`, `"client_secret": "..."` and the like, as a provider may
# echo the request back in its error description.
_SECRET_FIELD = re.compile(
    r"""(refresh_token|access_token|client_secret|code_verifier|code|password|assertion)"""
    r"""(["']?\s*[=:]\s*["']?)[^&\s"',}]+""",
    re.IGNORECASE,
)


def _scrubbed(text: str, secrets: Sequence[str]) -> str:
    """The provider's words without any secret the request carried: the error
    text ends up in job errors, events and logs (SPEC §9: never a token)."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[redacted]")
    return _SECRET_FIELD.sub(r"\1\2[redacted]", text)


def _call(fn: object, *args: object, secrets: Sequence[str] = (), **kwargs: object) -> IssuedToken:
    sent_at = time.time()
    try:
        token = fn(*args, timeout=TIMEOUT, **kwargs)  # type: ignore[operator]
    except OAuthError as exc:
        error = str(exc.error or "oauth_error")
        if not _ERROR_CODE.fullmatch(error):
            error = "oauth_error"
        if error in TRANSIENT_ERRORS:
            raise GrantUnavailable(f"the token endpoint said {error}") from None
        raise GrantRefused(error, _scrubbed(str(exc.description or ""), secrets)) from None
    except requests.HTTPError as exc:
        status = exc.response.status_code if exc.response is not None else "?"
        raise GrantUnavailable(f"the token endpoint answered HTTP {status}") from None
    except (requests.RequestException, ValueError) as exc:
        raise GrantUnavailable(f"cannot reach the token endpoint ({type(exc).__name__})") from None
    return _issued(dict(token), sent_at)


def _plain(secret: SecretStr | None) -> str:
    return secret.get_secret_value() if secret is not None else ""


def refresh(
    token_url: str,
    refresh_token: SecretStr,
    client_id: str,
    client_secret: SecretStr | None = None,
) -> IssuedToken:
    """A fresh access token for `refresh_token` (RFC 6749 §6)."""
    secrets = (refresh_token.get_secret_value(), _plain(client_secret))
    with session(client_id, client_secret) as s:
        return _call(
            s.refresh_token,
            token_url,
            secrets=secrets,
            refresh_token=refresh_token.get_secret_value(),
        )


def exchange_code(
    token_url: str,
    code: str,
    *,
    client_id: str,
    client_secret: SecretStr | None,
    redirect_uri: str,
    code_verifier: str,
) -> IssuedToken:
    """Tokens for an authorization code (RFC 6749 §4.1.3, with the PKCE verifier)."""
    with session(client_id, client_secret, redirect_uri=redirect_uri) as s:
        return _call(
            s.fetch_token,
            token_url,
            secrets=(code, code_verifier, _plain(client_secret)),
            grant_type="authorization_code",
            code=code,
            code_verifier=code_verifier,
        )


def authorization_url(
    auth_url: str,
    *,
    client_id: str,
    redirect_uri: str,
    scope: str,
    state: str,
    code_verifier: str,
    extra: dict[str, str] | None = None,
) -> str:
    """The URL the person opens to sign in (RFC 6749 §4.1.1 with an S256 challenge)."""
    with session(client_id, redirect_uri=redirect_uri, scope=scope) as s:
        url, _ = s.create_authorization_url(
            auth_url, state=state, code_verifier=code_verifier, **(extra or {})
        )
    return str(url)
