"""Which chat model answers: the offline planner by default, or any LangChain
provider named by `SECRETARY_CHAT_MODEL=provider:model` through
`init_chat_model`, configured by the provider's own settings (`OPENAI_API_KEY`,
`OPENAI_BASE_URL`, `ANTHROPIC_API_KEY`, `OLLAMA_BASE_URL`, …).

Providers with an extra in pyproject.toml are installed by `./scripts/run.sh`
(`python -m app.graph.chat_model` prints the extra a configured provider still
needs). Each request has a timeout, and the provider's client retries rate
limits, timeouts and 5xx a bounded number of times with exponential backoff
(`SECRETARY_CHAT_TIMEOUT`, `SECRETARY_CHAT_MAX_RETRIES`).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from typing import Any

from langchain_core.language_models import BaseChatModel

from app.config import Settings, SettingsError, load_settings
from app.graph.offline_model import ScriptedPlanner

OFFLINE = ("", "offline", "scripted")
# provider -> (pyproject extra, the module it installs)
EXTRAS = {
    "openai": ("openai", "langchain_openai"),
    "anthropic": ("anthropic", "langchain_anthropic"),
    "ollama": ("ollama", "langchain_ollama"),
}
# init_chat_model's guesses for a bare model name, for the ones Piper installs.
_PREFIXES = {
    "gpt-": "openai",
    "o1": "openai",
    "o3": "openai",
    "chatgpt": "openai",
    "claude": "anthropic",
}


def provider_of(spec: str | None) -> str | None:
    """The provider a `provider:model` (or bare model) spec names; None offline."""
    spec = (spec or "").strip()
    if spec.lower() in OFFLINE:
        return None
    if ":" in spec:
        return spec.split(":", 1)[0].strip().lower().replace("-", "_")
    return next((p for pre, p in _PREFIXES.items() if spec.lower().startswith(pre)), None)


def missing_extra(spec: str | None) -> str | None:
    """The pyproject extra to install for `spec`, when its packages are missing."""
    provider = provider_of(spec)
    if provider not in EXTRAS:
        return None
    extra, module = EXTRAS[provider]
    installed = all(importlib.util.find_spec(m) is not None for m in ("langchain", module))
    return None if installed else extra


def _client_settings(provider: str | None, settings: Settings) -> dict[str, Any]:
    """Timeout and bounded retries in each provider's own parameter names."""
    if provider == "openai" and os.environ.get("OPENAI_BASE_URL"):
        # The OpenAI SDK's own variable, passed on: langchain-openai shares one
        # HTTP client per base URL (and reads only OPENAI_API_BASE itself).
        return {
            "base_url": os.environ["OPENAI_BASE_URL"],
            "timeout": settings.chat_timeout,
            "max_retries": settings.chat_max_retries,
        }
    if provider in ("openai", "anthropic", "azure_openai", "groq", "mistralai", "deepseek", "xai"):
        return {"timeout": settings.chat_timeout, "max_retries": settings.chat_max_retries}
    if provider == "ollama":
        return {"client_kwargs": {"timeout": settings.chat_timeout}}
    return {}


def load_chat_model(settings: Settings) -> BaseChatModel:
    """The offline planner when no model is configured, else the provider's model."""
    spec = (settings.chat_model or "").strip()
    if spec.lower() in OFFLINE:
        return ScriptedPlanner()
    extra = missing_extra(spec)
    if extra is not None:
        raise RuntimeError(
            f"SECRETARY_CHAT_MODEL={spec!r} needs its provider's packages: run "
            f"./scripts/run.sh (it installs them) or `pip install -e '.[{extra}]'`"
        )
    try:
        from langchain.chat_models import init_chat_model

        return init_chat_model(spec, **_client_settings(provider_of(spec), settings))
    except (ImportError, ValueError) as exc:  # a provider Piper has no extra for
        raise RuntimeError(f"SECRETARY_CHAT_MODEL={spec!r}: {exc}") from exc


def main() -> int:
    """Print the extra the configured provider still needs (nothing when none)."""
    try:
        settings = load_settings()
    except SettingsError:
        return 0  # the start command reports wrong settings itself
    extra = missing_extra(settings.chat_model)
    if extra:
        print(extra)
    return 0


if __name__ == "__main__":
    sys.exit(main())
