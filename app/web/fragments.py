"""A job card's HTML, rendered from its `Progress` (app/jobs/progress.py).

The page's first render, the live card stream's swaps and its closing card all
come from here, from the same state, so a reload shows exactly what the live
card showed. The mapping to the SPEC §7 messages is `progress.to_message`.
"""

from __future__ import annotations

from typing import Any

from app.jobs.progress import Progress, to_batch_update, to_message, tool_name
from app.web.byte_lru import ByteLRU

__all__ = ["card_context", "render_card", "render_card_body", "to_batch_update", "tool_name"]


def card_context(state: Progress, *, live: bool) -> dict[str, Any]:
    """What `partials/job_card.html` and its inner parts read."""
    return {
        "job": state.view(),
        "msg": to_message(state),
        "live": live,
        "undo": state.offers_undo(),
        "seq": state.seq,
    }


def render_card(templates: Any, state: Progress, *, live: bool) -> str:
    """The whole card: live (it subscribes to its stream from `state.seq`) or
    finished (static). Kept and shared like the bodies below."""
    key = (id(templates), "card", live, state.key())
    cached = _CARDS.get(key)
    if cached is None:
        cached = templates.get_template("partials/job_card.html").render(
            card_context(state, live=live)
        )
        _CARDS.put(key, cached)
    return cached


def render_card_body(templates: Any, state: Progress) -> tuple[str, str]:
    """One live swap: (`batch_progress`, the card's body) while the job runs,
    (`batch_complete`, the whole finished card) once it completed.

    Every stream watching a job renders the same states, so a render is kept
    (bounded by bytes) and shared: a hundred open cards cost one render per
    state, not a hundred."""
    key = (id(templates), state.key())
    cached = _BODIES.get(key)
    if cached is None:
        context = card_context(state, live=False)
        name = "batch_complete" if context["msg"]["type"] == "batch_complete" else "batch_progress"
        cached = (name, templates.get_template(f"partials/{name}.html").render(context))
        _BODIES.put(key, cached)
    return cached


BODY_CACHE_BYTES = 4 * 1024 * 1024
_BODIES: ByteLRU[tuple[Any, ...], tuple[str, str]] = ByteLRU(
    BODY_CACHE_BYTES, lambda item: len(item[1]) + 64
)
_CARDS: ByteLRU[tuple[Any, ...], str] = ByteLRU(BODY_CACHE_BYTES, len)
