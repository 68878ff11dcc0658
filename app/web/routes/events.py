"""Server-sent events: the raw job stream (SPEC §6) and the page's rendered
progress cards (SPEC §7), both driven by one loop, `follow`.

`follow` subscribes to the hub, reads the backlog by seq, waits for updates
with heartbeats on the wall clock, and ends after the terminal status; it
yields `Step`s. The JSON route formats them as `job_event` / `job_status` /
`heartbeat` messages; the card route folds their events into the job's
`Progress` (app/jobs/progress.py) and sends rendered fragments, at most four
swaps a second (the hub throttles card streams per job). A waiting stream
costs nothing: its updates land in its hub mailbox, and its heartbeat is one
timer per interval. A card stream starts from the state the page rendered
(the card's `?after=N`, found in the progress cache, or a finished job's
stored summary), so a reconnect never replays a job's events from seq 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import APIRouter, Header, HTTPException, Query, Request
from fastapi.responses import Response
from sse_starlette.event import ServerSentEvent
from sse_starlette.sse import EventSourceResponse

from app.jobs.models import Job, JobEvent
from app.jobs.progress import Progress, fold_all
from app.jobs.store import JobStore
from app.web.byte_lru import ByteLRU
from app.web.deps import HubDep, SettingsDep, StoreDep, TemplatesDep
from app.web.fragments import render_card, render_card_body
from app.web.hub import EventHub, JobHead, Subscription
from app.web.progress_cache import CACHE, ProgressCache
from app.web.routes.jobs import ERRORS, load_job

router = APIRouter(tags=["events"])
NO_PING = 0  # our own heartbeat events replace sse-starlette's comment pings (0: no ping task)
MAX_SEQ = 2**31 - 1  # seq is an int column
BACKLOG_PAGE = 1000  # events read per query
BACKLOG_CHUNK = 200  # events per send while catching up
SEP = "\r\n"

# Many streams watch the same job: encode each event and status once, as the
# bytes sse-starlette would send, and hand a stream one chunk per update.
# Bounded by bytes: an event's size varies a hundredfold (UID lists).
EVENT_CACHE_BYTES = 32 * 1024 * 1024
STATUS_CACHE_BYTES = 2 * 1024 * 1024
_EVENT_CACHE: ByteLRU[tuple[uuid.UUID, int], bytes] = ByteLRU(EVENT_CACHE_BYTES, len)
_STATUS_CACHE: ByteLRU[JobHead, bytes] = ByteLRU(STATUS_CACHE_BYTES, len)


def _event_bytes(event: JobEvent) -> bytes:
    key = (event.job_id, event.seq)
    encoded = _EVENT_CACHE.get(key)
    if encoded is None:
        payload = {"type": "job_event", **event.as_dict()}
        encoded = ServerSentEvent(
            data=json.dumps(payload, default=str), event="job_event", id=str(event.seq), sep=SEP
        ).encode()
        _EVENT_CACHE.put(key, encoded)
    return encoded


def _status_bytes(head: JobHead) -> bytes:
    encoded = _STATUS_CACHE.get(head)
    if encoded is None:
        encoded = ServerSentEvent(
            data=json.dumps(head.status_data()), event="job_status", sep=SEP
        ).encode()
        _STATUS_CACHE.put(head, encoded)
    return encoded


def _encode(message: dict[str, Any]) -> bytes:
    return ServerSentEvent(**message, sep=SEP).encode()


class Beat:
    """Heartbeats on the wall clock, so a busy stream still gets one every
    interval: a proxy or client timing out idle-looking streams sees them too.

    With `wake`, a timer calls it when the next heartbeat falls due (a stream
    waiting in its mailbox is poked to send it): one timer per interval, not
    one per wait."""

    def __init__(self, interval: float, wake: Callable[[], None] | None = None) -> None:
        self.interval = interval
        self._wake = wake
        self._timer: asyncio.TimerHandle | None = None
        self._fired = False
        self.reset()

    def remaining(self) -> float:
        return max(0.0, self.next_at - time.monotonic())

    def due(self) -> bool:
        # (the timer's clock may round differently from ours: its firing counts)
        return self._fired or time.monotonic() >= self.next_at

    def reset(self) -> None:
        self.next_at = time.monotonic() + self.interval
        self._fired = False
        if self._wake is not None:
            self.cancel()
            self._timer = asyncio.get_running_loop().call_later(self.interval, self._ring)

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _ring(self) -> None:
        self._fired = True
        self._timer = None
        assert self._wake is not None
        self._wake()

    def message(self) -> dict[str, Any]:
        self.reset()
        return heartbeat_message()


def heartbeat_message() -> dict[str, Any]:
    return {"event": "heartbeat", "data": json.dumps({"type": "heartbeat", "ts": time.time()})}


def _head(job: Job) -> JobHead:
    return JobHead(
        job.job_id,
        job.status,
        job.processed,
        job.total_estimate,
        job.error,
        job.cancel_requested,
        job.last_seq,
    )


def _newer(published: JobHead | None, loaded: JobHead) -> JobHead:
    """The hub's head is normally the fresher; the route's own read wins only
    if the hub knows nothing newer (e.g. the job vanished from its view)."""
    if published is None or published.last_seq < loaded.last_seq:
        return loaded
    return published


def _reported(head: JobHead) -> tuple[Any, ...]:
    """What a `job_status` message reports (its data, less the constant parts)."""
    return (head.status, head.processed, head.total_estimate, head.error)


def _must_reread(sub: Subscription, events: list[JobEvent], seen: int) -> bool:
    """True when the stream has to read from the database by seq: its buffer
    overflowed, or (defensively) the hub handed it events past a gap."""
    fresh = [e.seq for e in events if e.seq > seen]
    gap = bool(fresh) and min(fresh) > seen + 1
    lagging, sub.lagging = sub.lagging, False
    return lagging or gap


async def _backlog(store: JobStore, job_id: uuid.UUID, after: int) -> AsyncIterator[JobEvent]:
    while True:
        page = await store.events_after(job_id, after, limit=BACKLOG_PAGE)
        for event in page:
            yield event
        if len(page) < BACKLOG_PAGE:
            return
        after = page[-1].seq


def _resume_point(last_event_id: str | None, after: int | None) -> int:
    raw = last_event_id if last_event_id not in (None, "") else after
    # Digits only: int() would also take "+12", "1_2" and " 12 ", which no
    # server ever sent as an event id.
    if isinstance(raw, str) and not (raw.isascii() and raw.isdigit()):
        raise HTTPException(422, "Last-Event-ID must be an event seq (an integer)")
    value = int(raw) if raw is not None else 0
    if not 0 <= value <= MAX_SEQ:
        raise HTTPException(422, f"the resume point must be an event seq from 0 to {MAX_SEQ}")
    return value


def _sse(stream: AsyncIterator[Any], hub: EventHub) -> EventSourceResponse:
    """Every stream: our own heartbeats instead of comment pings, no caching
    or proxy buffering, and the hub's stall guard instead of a timeout around
    each send (app/web/stall_guard.py: one watchdog, not a timer per chunk)."""
    return EventSourceResponse(
        hub.guard.guard(stream),
        ping=NO_PING,
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


# -- the one loop ---------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Step:
    """What happened since the previous step of a followed job.

    `events` are new, in seq order, none repeated or skipped. The first step
    (`opened`) carries the snapshot head and no events; backlog pages follow
    (`catching_up`); then one step says the stream is caught up, and each later
    one reports an update. `final` is the last step: the job is finished and
    every event up to its last seq was handed out.
    """

    head: JobHead
    events: tuple[JobEvent, ...] = ()
    opened: bool = False
    catching_up: bool = False
    status_changed: bool = False  # the head's job_status payload differs from the last step's
    final: bool = False
    heartbeat: bool = False  # a heartbeat is due after this step's content


async def follow(
    request: Request,
    store: JobStore,
    hub: EventHub,
    job: Job,
    *,
    after: int,
    heartbeat: float,
    throttled: bool = False,
) -> AsyncIterator[Step]:
    """Follow `job` from seq `after` until it is finished and fully handed out.

    `throttled` streams are woken by the hub at most every THROTTLE_SECONDS
    (app/web/hub.py) and take everything that came meanwhile as one step (a
    burst of batches costs one)."""
    # Subscribed before the backlog is read: nothing can fall in between.
    sub = await hub.subscribe(job.job_id, throttled=throttled)
    try:
        head = _newer(sub.head, _head(job))
        seen = after
        yield Step(head, opened=True, catching_up=True)
        chunk: list[JobEvent] = []
        async for event in _backlog(store, job.job_id, seen):
            seen = event.seq
            chunk.append(event)
            if len(chunk) >= BACKLOG_CHUNK:
                yield Step(head, tuple(chunk), catching_up=True)
                chunk = []
        # A finished head was read before the backlog, so the backlog holds every
        # event the job still has (the cleaner may have pruned the rest): done.
        done = head.status.is_terminal
        yield Step(head, tuple(chunk), final=done)
        if done:
            return
        beat = Beat(heartbeat, sub.poke)
        try:
            while True:
                updates = await sub.take()
                if not updates:  # poked by the heartbeat timer
                    if not beat.due():
                        continue
                    if await request.is_disconnected():
                        return
                    beat.reset()
                    yield Step(head, heartbeat=True)
                    continue
                events = [e for u in updates for e in u.events]
                if _must_reread(sub, events, seen):
                    events = [e async for e in _backlog(store, job.job_id, seen)]
                fresh: list[JobEvent] = []
                for event in events:
                    if event.seq > seen:
                        seen = event.seq
                        fresh.append(event)
                # A head read before our own snapshot can still sit in the mailbox:
                # never report counters going backwards.
                newest = head
                for u in updates:
                    if u.head.last_seq >= newest.last_seq:
                        newest = u.head
                changed = _reported(newest) != _reported(head)
                head = newest
                final = head.status.is_terminal
                if final and seen < head.last_seq:  # the hub read a partial page: complete it
                    async for event in _backlog(store, job.job_id, seen):
                        seen = event.seq
                        fresh.append(event)
                due = beat.due() and not final  # the terminal job_status is the last message
                if due:
                    beat.reset()
                yield Step(head, tuple(fresh), status_changed=changed, final=final, heartbeat=due)
                if final:
                    return
        finally:
            beat.cancel()
    finally:
        hub.unsubscribe(sub)


# -- the JSON stream (SPEC §6) -------------------------------------------------


def _sse_event_schema(name: str, payload: dict[str, Any], *, with_id: bool) -> dict[str, Any]:
    """One server-sent event as OpenAPI 3.1 documents it: `schema` describes
    each event of a `text/event-stream` (`event`, `data`, `id` fields), and
    `data` is JSON whose `type` equals the event's name (SPEC §6)."""
    properties: dict[str, Any] = {
        "event": {"const": name},
        "data": {
            "type": "string",
            "contentMediaType": "application/json",
            "contentSchema": {
                "type": "object",
                "required": ["type", *payload],
                "properties": {"type": {"const": name}, **payload},
            },
        },
    }
    if with_id:
        properties["id"] = {"type": "string", "pattern": "^[0-9]+$", "description": "the seq"}
    return {
        "type": "object",
        "required": ["event", "data", *(["id"] if with_id else [])],
        "properties": properties,
    }


_NULLABLE_INT = {"type": ["integer", "null"]}
_NULLABLE_TEXT = {"type": ["string", "null"]}
JOB_STREAM_EVENT_SCHEMA: dict[str, Any] = {
    "oneOf": [
        _sse_event_schema(
            "job_status",
            {
                "job_id": {"type": "string", "format": "uuid"},
                "status": {"enum": ["pending", "running", "completed", "failed", "cancelled"]},
                "processed": {"type": "integer"},
                "total_estimate": _NULLABLE_INT,
                "error": _NULLABLE_TEXT,
            },
            with_id=False,
        ),
        _sse_event_schema(
            "job_event",
            {
                "job_id": {"type": "string", "format": "uuid"},
                "seq": {"type": "integer", "minimum": 1},
                "level": {"enum": ["debug", "info", "warning", "error"]},
                "message": {"type": "string"},
                "data": {"type": "object"},
                "created_at": _NULLABLE_TEXT,
            },
            with_id=True,
        ),
        _sse_event_schema("heartbeat", {"ts": {"type": "number"}}, with_id=False),
    ]
}

EVENT_STREAM_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "`job_status` (on connect, on every change, and last), `job_event` "
        "(id: its seq) and `heartbeat` events, ending after the terminal `job_status`",
        "content": {"text/event-stream": {"schema": JOB_STREAM_EVENT_SCHEMA}},
    },
    204: {"description": "the job is finished and every event after the resume point was seen"},
    **ERRORS,
}


@router.get(
    "/api/jobs/{job_id}/events",
    response_model=None,
    response_class=EventSourceResponse,
    responses=EVENT_STREAM_RESPONSES,
)
async def job_events(
    job_id: str,
    request: Request,
    store: StoreDep,
    hub: HubDep,
    settings: SettingsDep,
    after: int | None = Query(default=None, description="resume after this seq"),
    last_event_id: str | None = Header(default=None),
) -> Response:
    job = await load_job(store, job_id)
    start = _resume_point(last_event_id, after)
    if job.status.is_terminal and start >= job.last_seq:
        return Response(status_code=204)
    return _sse(_job_stream(request, store, hub, job, start, settings.sse_heartbeat_seconds), hub)


async def _job_stream(
    request: Request, store: JobStore, hub: EventHub, job: Job, seen: int, heartbeat: float
) -> AsyncIterator[bytes]:
    steps = follow(request, store, hub, job, after=seen, heartbeat=heartbeat)
    async with contextlib.aclosing(steps):
        async for step in steps:
            out = [_status_bytes(step.head)] if step.opened else []
            out.extend(_event_bytes(event) for event in step.events)
            if step.final or (step.status_changed and not step.head.status.is_terminal):
                out.append(_status_bytes(step.head))
            if step.heartbeat:
                out.append(_encode(heartbeat_message()))
            if out:
                yield b"".join(out)


# -- the page's progress cards ---------------------------------------------------


@router.get("/ui/jobs/{job_id}/stream", response_model=None, include_in_schema=False)
async def job_card_stream(
    job_id: str,
    request: Request,
    store: StoreDep,
    hub: HubDep,
    templates: TemplatesDep,
    settings: SettingsDep,
    after: int | None = Query(default=None, description="the seq the page's card shows"),
) -> Response:
    job = await load_job(store, job_id)
    shown = _resume_point(None, after) if after is not None else None
    return _sse(
        _card_stream(
            request, store, hub, templates, job, shown, settings.sse_heartbeat_seconds, CACHE
        ),
        hub,
    )


async def _card_stream(
    request: Request,
    store: JobStore,
    hub: EventHub,
    templates: Any,
    job: Job,
    shown: int | None,
    heartbeat: float,
    cache: ProgressCache,
) -> AsyncIterator[bytes | dict[str, Any]]:
    """Rendered cards: the current one on connect (unless the page's card,
    rendered at seq `shown`, is already it), one per coalesced update, and at
    the end the finished card (`batch_complete` or the error body, then
    `job_closed`, which replaces the live card with the static one)."""
    state = await cache.base(store, job)
    rendered: Progress | None = None
    if shown is not None and shown == state.seq == job.last_seq:
        rendered = state  # the page shows exactly this state already
    steps = follow(request, store, hub, job, after=state.seq, heartbeat=heartbeat, throttled=True)
    async with contextlib.aclosing(steps):
        async for step in steps:
            state = fold_all(state, step.events).with_head(step.head)
            if step.catching_up:
                continue
            if step.final:
                [state] = await cache.settle(store, [state])
                yield _fragment(templates, state) + _fragment(templates, state, closing=True)
                return
            if state != rendered:
                cache.remember(state)
                yield _fragment(templates, state)
                rendered = state
            if step.heartbeat:
                yield heartbeat_message()


# Every stream of a job sends the same fragments: each is rendered and encoded
# once, as the bytes sse-starlette would send (bounded by bytes like the rest).
FRAGMENT_CACHE_BYTES = 8 * 1024 * 1024
_FRAGMENTS: ByteLRU[tuple[Any, ...], bytes] = ByteLRU(FRAGMENT_CACHE_BYTES, len)


def _fragment(templates: Any, state: Progress, *, closing: bool = False) -> bytes:
    """The card swap for `state` (`batch_progress` / `batch_complete`), or with
    `closing` the `job_closed` message carrying the finished static card."""
    key = (id(templates), closing, state.key())
    encoded = _FRAGMENTS.get(key)
    if encoded is None:
        if closing:
            kind, html = "job_closed", render_card(templates, state, live=False)
        else:
            kind, html = render_card_body(templates, state)
        encoded = ServerSentEvent(data=html, event=kind, sep=SEP).encode()
        _FRAGMENTS.put(key, encoded)
    return encoded
