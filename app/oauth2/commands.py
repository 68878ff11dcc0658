"""`secretary auth google|microsoft|other` and `secretary auth status`.

Sign-in runs the loopback flow (app/oauth2/loopback.py) and stores the refresh
token owner-readable only (app/oauth2/store.py); nothing secret is printed.
Client id and secret come from flags, else IMAP_OAUTH2_CLIENT_ID /
IMAP_OAUTH2_CLIENT_SECRET (environment or config.yaml).
"""

from __future__ import annotations

import argparse
import os
import stat
import sys
from datetime import UTC, datetime
from typing import Any

from pydantic import SecretStr

from app.config import IMAP_ENV, Settings
from app.oauth2.loopback import DEFAULT_TIMEOUT, SignInFailed, run_loopback_flow
from app.oauth2.providers import PROVIDERS, Provider, resolve_token_url
from app.oauth2.store import (
    SignInFileError,
    StoredSignIn,
    load_sign_in,
    now_iso,
    read_status,
    save_sign_in,
    token_path,
    update_status,
)


def _setting(settings: Settings, field: str) -> Any:
    """An IMAP_* setting even when IMAP_HOST is unset (one signs in before configuring)."""
    if settings.imap is not None:
        return getattr(settings.imap, field)
    name = IMAP_ENV[field]
    return os.environ.get(name) or settings.extra.get(name) or None


def _provider(args: argparse.Namespace) -> Provider:
    base = PROVIDERS.get(args.provider)
    auth_url = args.auth_url or (base.auth_url if base else None)
    token_url = args.token_url or (base.token_url if base else None)
    scope = args.scope or (base.scope if base else None)
    if not (auth_url and token_url and scope):
        raise SystemExit("error: `secretary auth other` needs --auth-url, --token-url and --scope")
    try:
        token_url = resolve_token_url(token_url)
    except ValueError as exc:
        raise SystemExit(f"error: --token-url: {exc}") from None
    return Provider(
        name=args.provider,
        auth_url=auth_url,
        token_url=token_url,
        scope=scope,
        redirect_host=base.redirect_host if base else "127.0.0.1",
        extra_params=dict(base.extra_params) if base else {},
    )


def cmd_auth_login(settings: Settings, args: argparse.Namespace) -> int:
    provider = _provider(args)
    client_id = args.client_id or _setting(settings, "oauth2_client_id")
    if not client_id:
        print(
            "error: IMAP_OAUTH2_CLIENT_ID: set it (or pass --client-id) to the OAuth client "
            "registered for Piper (see README, Connect a real account)",
            file=sys.stderr,
        )
        return 2
    secret = args.client_secret or _setting(settings, "oauth2_client_secret")
    client_secret = SecretStr(secret) if isinstance(secret, str) and secret else secret or None
    account = args.account or _setting(settings, "username") or ""
    try:
        issued = run_loopback_flow(
            provider,
            client_id=str(client_id),
            client_secret=client_secret,
            listen_host=args.listen_host,
            port=args.port,
            timeout=args.timeout,
            open_browser=not args.no_browser,
            announce=lambda line: print(line, flush=True),
        )
    except SignInFailed as exc:
        print(f"error: sign-in failed: {exc}", file=sys.stderr)
        return 1
    assert issued.refresh_token is not None
    now = now_iso()
    path = save_sign_in(
        settings.data_dir,
        StoredSignIn(
            provider=provider.name,
            account=account,
            token_url=provider.token_url,
            client_id=str(client_id),
            refresh_token=issued.refresh_token,
            client_secret=client_secret,
            scope=issued.scope or provider.scope,
            signed_in_at=now,
        ),
    )
    expires = datetime.fromtimestamp(issued.expires_at, UTC).isoformat(timespec="seconds")
    update_status(
        settings.data_dir,
        account=account,
        provider=provider.name,
        token_url=provider.token_url,
        signed_in_at=now,
        last_refreshed_at=now,
        access_token_expires_at=expires,
        refresh_token_from=str(path),
        last_error=None,
        last_error_at=None,
    )
    print(f"signed in with {provider.name}" + (f" as {account}" if account else ""))
    print(f"refresh token stored in {path} (readable by its owner only)")
    if _setting(settings, "oauth2_refresh_token"):
        print("note: IMAP_OAUTH2_REFRESH_TOKEN is set and wins over this file; unset it")
    if _setting(settings, "auth") != "xoauth2":
        print("next: set IMAP_AUTH=xoauth2 for the executor")
    return 0


def _when(iso: str | None) -> datetime | None:
    try:
        return datetime.fromisoformat(iso) if iso else None
    except ValueError:
        return None


def cmd_auth_status(settings: Settings, args: argparse.Namespace) -> int:
    """Who is signed in, when the access token was last refreshed, whether it is valid now.

    Exit 0 when a sign-in is usable as far as this machine knows, else 1.
    """
    auth = _setting(settings, "auth") or "password"
    user = _setting(settings, "username") or "(IMAP_USERNAME not set)"
    print(f"account: {user}, IMAP_AUTH={auth}")
    status = read_status(settings.data_dir)
    path = token_path(settings.data_dir)
    usable = auth == "password"
    try:
        stored = load_sign_in(settings.data_dir)
    except SignInFileError as exc:
        stored = None
        print(f"sign-in: unusable ({exc})")
    if _setting(settings, "oauth2_access_token"):
        print("access token: IMAP_OAUTH2_ACCESS_TOKEN (managed outside, never refreshed here)")
        usable = True
    if stored is not None:
        mode = stat.S_IMODE(path.stat().st_mode)
        print(
            f"signed in: {stored.provider} as {stored.account or '?'} at {stored.signed_in_at}, "
            f"refresh token in {path} (mode {mode:04o})"
        )
        if mode & 0o077:
            print(f"warning: {path} is readable by others: chmod 600 it")
    if _setting(settings, "oauth2_refresh_token"):
        print("refresh token: IMAP_OAUTH2_REFRESH_TOKEN (wins over the file)")
    elif stored is None and not _setting(settings, "oauth2_access_token"):
        print("signed in: no (run `secretary auth google` or `secretary auth microsoft`)")
    refreshed = _when(status.get("last_refreshed_at"))
    expires = _when(status.get("access_token_expires_at"))
    if refreshed is not None:
        print(f"last refreshed: {status['last_refreshed_at']} by {status.get('refreshed_by', '?')}")
    now = datetime.now(UTC)
    failed = _when(status.get("last_error_at"))
    if failed is not None and (refreshed is None or failed >= refreshed):
        print(f"access token: not valid; the last refresh failed at {status['last_error_at']}")
        print(f"last error: {status.get('last_error')}: sign in again with `secretary auth`")
    elif expires is not None and expires > now:
        minutes = int((expires - now).total_seconds() // 60)
        print(f"access token: valid until {status['access_token_expires_at']} ({minutes} min left)")
        usable = True
    elif expires is not None:
        print(
            f"access token: expired at {status['access_token_expires_at']} (refreshed when next needed)"
        )
        usable = usable or stored is not None or bool(_setting(settings, "oauth2_refresh_token"))
    elif stored is not None or _setting(settings, "oauth2_refresh_token"):
        print("access token: none yet (refreshed when next needed)")
        usable = True
    return 0 if usable else 1


def add_auth_parser(sub: Any) -> None:
    auth = sub.add_parser("auth", help="OAuth2 sign-in for the IMAP account").add_subparsers(
        dest="auth_command", required=True
    )
    for name in (*PROVIDERS, "other"):
        p = auth.add_parser(
            name,
            help=f"sign in with {name} (installed-app flow; stores a refresh token)"
            if name != "other"
            else "sign in with another provider (give --auth-url, --token-url, --scope)",
        )
        p.set_defaults(fn=cmd_auth_login, provider=name)
        p.add_argument("--client-id", help="OAuth client id (default IMAP_OAUTH2_CLIENT_ID)")
        p.add_argument(
            "--client-secret",
            help="OAuth client secret (default IMAP_OAUTH2_CLIENT_SECRET; prefer the setting)",
        )
        p.add_argument("--auth-url", help="authorization endpoint (overrides the preset)")
        p.add_argument("--token-url", help="token endpoint (overrides the preset)")
        p.add_argument("--scope", help="space-separated scopes (overrides the preset)")
        p.add_argument("--account", help="the mailbox address (default IMAP_USERNAME)")
        p.add_argument("--no-browser", action="store_true", help="only print the address")
        p.add_argument("--listen-host", default="127.0.0.1", help="loopback listener address")
        p.add_argument("--port", type=int, default=0, help="loopback listener port (default: free)")
        p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT)
    auth.add_parser("status", help="who is signed in and whether the token is valid").set_defaults(
        fn=cmd_auth_status
    )
