"""The mirror as it changes (SPEC §5: a new message shows up in the page
without a reload), over the same SSE machinery as job progress.

- `GET /ui/mirror/stream`: the page's notice, as rendered `mirror_notice`
  fragments ("3 new messages", who from, INBOX counts), on connect and on
  every change.
- `GET /api/mirror/events`: the same as JSON, `mirror_changed` events
  (`{type, folder, mirrored, complete, messages, unread, new, more, arrivals,
  synced_at}`; `arrivals`: `[{uid, from, subject, date, unread}]`, newest first).
- `GET /api/mirror`: one snapshot of that JSON.

"New" counts what arrived in INBOX after the stream connected, or, when the
folder was not yet completely mirrored, after its first sync completed (rows a
first sync or a UIDVALIDITY re-sync brings are not news). Both streams send
`heartbeat` events like the job streams.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from sse_starlette.sse import EventSourceResponse

from app.web.deps import HubDep, SettingsDep, TemplatesDep
from app.web.mirror_feed import MirrorFeed, MirrorView
from app.web.routes.events import Beat, _sse

router = APIRouter(tags=["mirror"])
SHOWN_ARRIVALS = 5  # the notice names this many of the new messages


def notice_html(templates: Any, view: MirrorView, point: int) -> str:
    data = view.as_dict(point)
    return templates.get_template("partials/mirror_notice.html").render(
        view=data, shown=data["arrivals"][:SHOWN_ARRIVALS]
    )


@router.get("/api/mirror")
async def mirror_snapshot(hub: HubDep) -> dict[str, Any]:
    """INBOX as mirrored now (`new` is 0: a snapshot has no "since")."""
    view, point = await hub.mirror.subscribe()
    hub.mirror.unsubscribe(point)
    return view.as_dict(point)


@router.get(
    "/api/mirror/events",
    response_model=None,
    response_class=EventSourceResponse,
    responses={200: {"description": "`mirror_changed` and `heartbeat` events, endless"}},
)
async def mirror_events(request: Request, hub: HubDep, settings: SettingsDep) -> Response:
    def encode(view: MirrorView, point: int) -> dict[str, Any]:
        return {"event": "mirror_changed", "data": json.dumps(view.as_dict(point))}

    return _sse(_stream(request, hub.mirror, settings.sse_heartbeat_seconds, encode), hub)


@router.get("/ui/mirror/stream", response_model=None, include_in_schema=False)
async def mirror_notice_stream(
    request: Request, hub: HubDep, settings: SettingsDep, templates: TemplatesDep
) -> Response:
    def encode(view: MirrorView, point: int) -> dict[str, Any]:
        return {"event": "mirror_notice", "data": notice_html(templates, view, point)}

    return _sse(_stream(request, hub.mirror, settings.sse_heartbeat_seconds, encode), hub)


async def _stream(
    request: Request,
    feed: MirrorFeed,
    heartbeat: float,
    encode: Callable[[MirrorView, int], dict[str, Any]],
) -> AsyncIterator[dict[str, Any]]:
    view, point = await feed.subscribe()
    try:
        if not view.complete:
            point = feed.repoint(point, view.last_id)
        sent = encode(view, point)
        yield sent
        beat = Beat(heartbeat)
        version = view.version
        while True:
            changed = await feed.wait(version, beat.remaining())
            if changed is None:
                if await request.is_disconnected():
                    return
                yield beat.message()
                continue
            version = changed.version
            if not (changed.complete and view.complete):
                # Filling (or just filled) by a first sync: news starts after it.
                point = feed.repoint(point, changed.last_id)
            view = changed
            message = encode(changed, point)
            if message != sent:  # another stream's subscribe re-read the same state
                sent = message
                yield message
            if beat.due():
                yield beat.message()
    finally:
        feed.unsubscribe(point)
