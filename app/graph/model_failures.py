"""What the person reads when the chat model fails: one sentence per kind of
failure (timeout, rate limit, provider error, unreachable, refused key,
malformed tool call), the same for every provider. The provider clients
already retried what is worth retrying (bounded, with backoff) before this."""

from __future__ import annotations

NOTHING_CHANGED = "Nothing was changed; you can send your message again."
MALFORMED = (
    "The model asked for an action in a form I could not read (a malformed tool call), "
    f"so I did nothing. {NOTHING_CHANGED}"
)
EMPTY = f"The model sent an empty answer. {NOTHING_CHANGED}"
TOO_MANY_STEPS = (
    "The model kept calling tools without finishing, so I stopped it. " + NOTHING_CHANGED
)


def status_of(exc: BaseException) -> int | None:
    for source in (exc, getattr(exc, "response", None)):
        status = getattr(source, "status_code", None)
        if isinstance(status, int):
            return status
    return None


def describe_failure(exc: BaseException) -> str:
    """A readable account of a provider failure; never the raw error text, which
    may quote the request (and so mail) or a key's prefix."""
    name = type(exc).__name__
    status = status_of(exc)
    if status == 429 or "RateLimit" in name:
        what = (
            "The model provider is limiting requests (HTTP 429) and was still busy after retrying."
        )
    elif isinstance(exc, TimeoutError) or "Timeout" in name:
        what = "The model provider did not answer in time."
    elif status in (401, 403) or "Authentication" in name or "PermissionDenied" in name:
        what = "The model provider refused the API key (check the provider's key setting)."
    elif status is not None and status >= 500:
        what = f"The model provider had an error (HTTP {status})."
    elif status is not None and status < 300:  # a 2xx the client could not read
        what = f"The model provider sent an answer I could not read (HTTP {status})."
    elif status is not None:
        what = f"The model provider refused the request (HTTP {status})."
    elif "Connection" in name or isinstance(exc, ConnectionError | OSError):
        what = "I could not reach the model provider."
    else:
        what = f"The model failed ({name})."
    return f"{what} {NOTHING_CHANGED}"
