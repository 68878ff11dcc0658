"""Server-sent events: the raw job stream (SPEC §6) and the page's rendered
progress fragments (SPEC §7). Both start with a snapshot on every connect,
because htmx's reconnect does not send Last-Event-ID."""

from __future__ import annotations

import asyncio
import functools
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Header, HTTPException, Query, Request
from fastapi.responses import Response
from sse_starlette.event import ServerSentEvent
from sse_starlette.sse import EventSourceResponse

from app.jobs.models import Job, JobEvent
from app.jobs.store import JobStore
from app.web.deps import HubDep, SettingsDep, StoreDep, TemplatesDep
from app.web.fragments import to_batch_update
from app.web.hub import EventHub, JobHead, Subscription
from app.web.routes.jobs import load_job

router = APIRouter(tags=["events"])
NO_PING = 10**6  # our own heartbeat events replace sse-starlette's comment pings
UI_MIN_INTERVAL = 0.25  # at most four fragment swaps a second per job
MAX_SEQ = 2**31 - 1  # seq is an int column
# A client that takes no bytes for this long is dropped (it can resume by seq),
# so a stuck reader does not pin a stream forever.
SEND_TIMEOUT = 60.0


# Many streams watch the same job: encode each event and status once, as the
# bytes sse-starlette would send, and hand a stream one chunk per update.
_EVENT_CACHE: dict[tuple[uuid.UUID, int], bytes] = {}
_EVENT_CACHE_LIMIT = 50_000
SEP = "\r\n"


def _event_bytes(event: JobEvent) -> bytes:
    key = (event.job_id, event.seq)
    encoded = _EVENT_CACHE.get(key)
    if encoded is None:
        payload = {"type": "job_event", **event.as_dict()}
        encoded = ServerSentEvent(
            data=json.dumps(payload, default=str), event="job_event", id=str(event.seq), sep=SEP
        ).encode()
        if len(_EVENT_CACHE) >= _EVENT_CACHE_LIMIT:
            _EVENT_CACHE.clear()
        _EVENT_CACHE[key] = encoded
    return encoded


@functools.lru_cache(maxsize=4096)
def _status_bytes(head: JobHead) -> bytes:
    return ServerSentEvent(
        data=json.dumps(head.status_data()), event="job_status", sep=SEP
    ).encode()


def _encode(message: dict[str, Any]) -> bytes:
    return ServerSentEvent(**message, sep=SEP).encode()


class Beat:
    """Heartbeats on the wall clock, so a busy stream still gets one every
    interval: a proxy or client timing out idle-looking streams sees them too."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.next_at = time.monotonic() + interval

    def remaining(self) -> float:
        return max(0.0, self.next_at - time.monotonic())

    def due(self) -> bool:
        return time.monotonic() >= self.next_at

    def message(self) -> dict[str, Any]:
        self.next_at = time.monotonic() + self.interval
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


def _must_reread(sub: Subscription, events: list[JobEvent], seen: int) -> bool:
    """True when the stream has to read from the database by seq: its buffer
    overflowed, or (defensively) the hub handed it events past a gap."""
    fresh = [e.seq for e in events if e.seq > seen]
    gap = bool(fresh) and min(fresh) > seen + 1
    lagging, sub.lagging = sub.lagging, False
    return lagging or gap


async def _backlog(store: JobStore, job: Job, after: int) -> AsyncIterator[JobEvent]:
    while True:
        page = await store.events_after(job.job_id, after, limit=1000)
        for event in page:
            yield event
        if len(page) < 1000:
            return
        after = page[-1].seq


def _resume_point(last_event_id: str | None, after: int | None) -> int:
    raw = last_event_id if last_event_id not in (None, "") else after
    try:
        value = int(raw) if raw is not None else 0
    except ValueError:
        raise HTTPException(422, "Last-Event-ID must be an event seq (an integer)") from None
    if not 0 <= value <= MAX_SEQ:
        raise HTTPException(422, f"the resume point must be an event seq from 0 to {MAX_SEQ}")
    return value


def _sse(stream: AsyncIterator[Any]) -> EventSourceResponse:
    """Both streams: our own heartbeats instead of comment pings, a send timeout
    for stalled clients, and no caching or proxy buffering."""
    return EventSourceResponse(
        stream,
        ping=NO_PING,
        send_timeout=SEND_TIMEOUT,
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


@router.get("/api/jobs/{job_id}/events", response_model=None)
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
    return _sse(_job_stream(request, store, hub, job, start, settings.sse_heartbeat_seconds))


async def _job_stream(
    request: Request, store: JobStore, hub: EventHub, job: Job, seen: int, heartbeat: float
) -> AsyncIterator[bytes | dict[str, Any]]:
    sub = await hub.subscribe(job.job_id)  # before the backlog: nothing can fall in between
    try:
        head = _newer(sub.head, _head(job))
        yield _status_bytes(head)
        async for chunk, last in _backlog_chunks(store, job, seen):
            seen = last
            yield chunk
        if head.status.is_terminal and seen >= head.last_seq:
            yield _status_bytes(head)
            return
        beat = Beat(heartbeat)
        while True:
            try:
                update = await asyncio.wait_for(sub.queue.get(), beat.remaining())
            except TimeoutError:
                if await request.is_disconnected():
                    return
                yield beat.message()
                continue
            out: list[bytes] = []
            events = list(update.events)
            if _must_reread(sub, events, seen):
                events = [e async for e in _backlog(store, job, seen)]
            for event in events:
                if event.seq > seen:
                    seen = event.seq
                    out.append(_event_bytes(event))
            # A head read before our own snapshot can still sit in the queue:
            # never report counters going backwards.
            if update.head.last_seq >= head.last_seq and update.head != head:
                changed = update.head.status_data() != head.status_data()
                head = update.head
                if changed and not head.status.is_terminal:
                    out.append(_status_bytes(head))
            if head.status.is_terminal:
                if seen < head.last_seq:  # the hub read a partial page: the end is complete
                    async for event in _backlog(store, job, seen):
                        seen = event.seq
                        out.append(_event_bytes(event))
                out.append(_status_bytes(head))
                yield b"".join(out)
                return
            if beat.due():
                out.append(_encode(beat.message()))
            if out:
                yield b"".join(out)
    finally:
        hub.unsubscribe(sub)


async def _backlog_chunks(store: JobStore, job: Job, seen: int) -> AsyncIterator[tuple[bytes, int]]:
    """The backlog in chunks of up to 200 events (one send each)."""
    out: list[bytes] = []
    async for event in _backlog(store, job, seen):
        seen = event.seq
        out.append(_event_bytes(event))
        if len(out) >= 200:
            yield b"".join(out), seen
            out = []
    if out:
        yield b"".join(out), seen


# -- the page's progress panel ------------------------------------------------


class CardState:
    """What a job card shows, folded from the job's events."""

    def __init__(self, job: Job) -> None:
        self.job = job.snapshot()
        self.last: dict[str, Any] | None = None
        self.iterations = 0

    def fold(self, event: JobEvent) -> None:
        if event.data.get("phase") in ("fetch", "apply"):
            self.iterations += 1
        if event.data.get("phase") in ("fetch", "apply", "starting") or "summary" in event.data:
            self.last = {"data": event.data, "message": event.message, "level": event.level}
        self.job["last_message"] = event.message

    def apply(self, head: JobHead) -> None:
        self.job.update(
            status=head.status.value,
            processed=head.processed,
            total_estimate=head.total_estimate,
            error=head.error,
            cancel_requested=head.cancel_requested,
        )

    def message(self) -> dict[str, Any]:
        return to_batch_update(self.job, self.last, iterations=self.iterations)


def render_card_body(templates: Any, state: CardState) -> tuple[str, str]:
    msg = state.message()
    name = "batch_complete" if msg["type"] == "batch_complete" else "batch_progress"
    html = templates.get_template(f"partials/{name}.html").render(msg=msg, job=state.job)
    return msg["type"], html


@router.get("/ui/jobs/{job_id}/stream", response_model=None, include_in_schema=False)
async def job_card_stream(
    job_id: str,
    request: Request,
    store: StoreDep,
    hub: HubDep,
    templates: TemplatesDep,
    settings: SettingsDep,
) -> Response:
    job = await load_job(store, job_id)
    return _sse(_card_stream(request, store, hub, templates, job, settings.sse_heartbeat_seconds))


async def _card_stream(
    request: Request, store: JobStore, hub: EventHub, templates: Any, job: Job, heartbeat: float
) -> AsyncIterator[dict[str, Any]]:
    sub = await hub.subscribe(job.job_id)
    try:
        head = _newer(sub.head, _head(job))
        state = CardState(job)
        state.apply(head)
        seen = 0
        async for event in _backlog(store, job, 0):
            seen = event.seq
            state.fold(event)
        beat = Beat(heartbeat)
        while True:
            kind, html = render_card_body(templates, state)
            yield {"event": kind, "data": html}
            sent_at = time.monotonic()
            if head.status.is_terminal:
                closed = templates.get_template("partials/job_card.html").render(
                    job=state.job, msg=state.message(), live=False
                )
                yield {"event": "job_closed", "data": closed}
                return
            # Coalesce: wait for a change, then for the rest of the quarter second,
            # so a burst of batches costs the browser one swap.
            while True:
                try:
                    update = await asyncio.wait_for(sub.queue.get(), beat.remaining())
                    break
                except TimeoutError:
                    if await request.is_disconnected():
                        return
                    yield beat.message()
            await asyncio.sleep(max(0.0, UI_MIN_INTERVAL - (time.monotonic() - sent_at)))
            updates = [update]
            while not sub.queue.empty():
                updates.append(sub.queue.get_nowait())
            if _must_reread(sub, [e for upd in updates for e in upd.events], seen):
                async for event in _backlog(store, job, seen):
                    seen = event.seq
                    state.fold(event)
            for upd in updates:
                for event in upd.events:
                    if event.seq > seen:
                        seen = event.seq
                        state.fold(event)
                if upd.head.last_seq >= head.last_seq:
                    head = upd.head
            if head.status.is_terminal and seen < head.last_seq:
                # The final card needs the summary event even if the hub read a partial page.
                async for event in _backlog(store, job, seen):
                    seen = event.seq
                    state.fold(event)
            state.apply(head)
            if beat.due():
                yield beat.message()
    finally:
        hub.unsubscribe(sub)
