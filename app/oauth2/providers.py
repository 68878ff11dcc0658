"""What differs between OAuth2 providers for IMAP: endpoints, scopes, redirect host.

A preset is named by `secretary auth <name>` and may stand for a token URL in
`IMAP_OAUTH2_TOKEN_URL` (`google`, `microsoft`), so a setting never needs a
provider's endpoint spelled out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit

GOOGLE_TOKEN_URL = "https://oauth2.googleapis.com/token"
MICROSOFT_AUTHORITY = "https://login.microsoftonline.com/common/oauth2/v2.0"


@dataclass(frozen=True)
class Provider:
    name: str
    auth_url: str
    token_url: str
    scope: str
    # Google's desktop clients take the loopback IP; Entra registers
    # `http://localhost` (any port), so the browser is sent there.
    redirect_host: str = "127.0.0.1"
    # Extra authorization parameters: Google issues a refresh token only with
    # access_type=offline, and again on a later sign-in only with prompt=consent.
    extra_params: dict[str, str] = field(default_factory=dict)


PROVIDERS = {
    "google": Provider(
        "google",
        auth_url="https://accounts.google.com/o/oauth2/v2/auth",
        token_url=GOOGLE_TOKEN_URL,
        scope="https://mail.google.com/",
        extra_params={"access_type": "offline", "prompt": "consent"},
    ),
    "microsoft": Provider(
        "microsoft",
        auth_url=f"{MICROSOFT_AUTHORITY}/authorize",
        token_url=f"{MICROSOFT_AUTHORITY}/token",
        scope="https://outlook.office.com/IMAP.AccessAsUser.All offline_access",
        redirect_host="localhost",
    ),
}


def resolve_token_url(value: str) -> str:
    """A preset name (`google`, `microsoft`) or an http(s) URL, as a URL.

    Raises ValueError with a message fit for a settings error.
    """
    preset = PROVIDERS.get(value.strip().lower())
    if preset is not None:
        return preset.token_url
    parts = urlsplit(value.strip())
    if parts.scheme not in ("https", "http") or not parts.netloc:
        raise ValueError(
            f"expected an https URL or one of {', '.join(PROVIDERS)}, got {value.strip()[:60]!r}"
        )
    return value.strip()


def provider_of_token_url(url: str) -> str:
    """The preset a token URL belongs to, for the advice in errors ("other" if none)."""
    for provider in PROVIDERS.values():
        if provider.token_url == url:
            return provider.name
    return "other"
