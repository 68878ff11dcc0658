"""A local OpenAI-compatible chat server, scripted per test.

A real HTTP server (Starlette under uvicorn, in a thread) answering
`POST /v1/chat/completions`, streamed (SSE chunks, as OpenAI sends them) or
not, with text or tool calls. Piper reaches it through the real
`langchain-openai` client: point `OPENAI_BASE_URL` at `server.base_url` and set
`SECRETARY_CHAT_MODEL=openai:<anything>`.

A test queues one reply per model request, in order:

    server.script(
        text("Hello", delay=0.2),                  # words, with a pause between chunks
        calls(("search_emails", {"text": "x"})),   # one or more tool calls
        raw_call("move_emails", "{not json"),      # arguments that are not JSON
        status(429), status(500),                  # an HTTP error (then the next reply)
        hang(5),                                   # no answer for 5 s
        lambda request: text("…"),                 # decided from the request it answers
    )

`server.requests` holds every request body, for what the model was shown.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.support.uvicorn_server import serve_asgi


@dataclass(frozen=True)
class Text:
    content: str
    delay: float = 0.0  # seconds between streamed chunks


@dataclass(frozen=True)
class Calls:
    calls: tuple[tuple[str, str], ...]  # (name, arguments as sent: JSON text or not)
    content: str = ""
    ids: tuple[str, ...] | None = None  # the calls' ids as sent; fresh unique ones if None
    cut: bool = False  # streamed: the connection ends halfway through the arguments

    def call_id(self, i: int) -> str:
        return self.ids[i] if self.ids is not None else f"call_{i}_{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class Status:
    code: int
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Hang:
    seconds: float


Reply = Text | Calls | Status | Hang
Scripted = Reply | Callable[[dict[str, Any]], Reply]


def text(content: str, *, delay: float = 0.0) -> Text:
    return Text(content, delay)


def calls(
    *named: tuple[str, dict[str, Any]], content: str = "", ids: tuple[str, ...] | None = None
) -> Calls:
    return Calls(tuple((name, json.dumps(args)) for name, args in named), content, ids)


def raw_call(name: str, arguments: str) -> Calls:
    return Calls(((name, arguments),))


def status(code: int, **headers: str) -> Status:
    return Status(code, {k.replace("_", "-"): v for k, v in headers.items()})


def hang(seconds: float) -> Hang:
    return Hang(seconds)


# -- reading what the model was sent ---------------------------------------------

_FENCED = re.compile(r"<untrusted_email_data>\n(.*)\n</untrusted_email_data>", re.S)


def tool_results(request: dict[str, Any]) -> list[Any]:
    """The tool results in a request, newest last, as data (fence removed)."""
    out = []
    for message in request.get("messages", []):
        if message.get("role") != "tool":
            continue
        content = message.get("content") or ""
        fenced = _FENCED.search(content)
        try:
            out.append(json.loads(fenced.group(1) if fenced else content))
        except json.JSONDecodeError:
            out.append(content)
    return out


def last_result(request: dict[str, Any]) -> Any:
    results = tool_results(request)
    return results[-1] if results else None


def unanswered_calls(request: dict[str, Any]) -> list[str]:
    """Tool call ids of assistant messages that no tool message answers."""
    answered = {
        m.get("tool_call_id") for m in request.get("messages", []) if m.get("role") == "tool"
    }
    return [
        call["id"]
        for m in request.get("messages", [])
        if m.get("role") == "assistant"
        for call in m.get("tool_calls") or []
        if call["id"] not in answered
    ]


# -- the server -------------------------------------------------------------------


class FakeOpenAI:
    def __init__(self) -> None:
        self._script: list[Scripted] = []
        self._lock = threading.Lock()
        self.requests: list[dict[str, Any]] = []
        self.base_url = ""
        self.app = Starlette(
            routes=[Route("/v1/chat/completions", self._complete, methods=["POST"])]
        )

    def script(self, *replies: Scripted) -> None:
        with self._lock:
            self._script.extend(replies)

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._script)

    def _next(self, body: dict[str, Any]) -> Reply:
        with self._lock:
            self.requests.append(body)
            broken = unanswered_calls(body)
            if broken:  # as OpenAI does: a history with an unanswered tool call is refused
                return Status(400, {"x-fake": f"tool calls without results: {broken}"})
            if not self._script:
                return Status(400, {"x-fake": "no scripted reply left"})
            scripted = self._script.pop(0)
        return scripted(body) if callable(scripted) else scripted

    async def _complete(self, request: Request) -> Response:
        body = await request.json()
        reply = self._next(body)
        if isinstance(reply, Hang):
            await asyncio.sleep(reply.seconds)
            reply = Text("(too late)")
        if isinstance(reply, Status):
            error = {"message": f"fake error {reply.code}", "type": "fake", "code": reply.code}
            return JSONResponse({"error": error}, status_code=reply.code, headers=reply.headers)
        model = body.get("model", "fake")
        if body.get("stream"):
            return StreamingResponse(_chunks(reply, model), media_type="text/event-stream")
        return JSONResponse(_completion(reply, model))


def _completion(reply: Text | Calls, model: str) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": reply.content or None}
    finish = "stop"
    if isinstance(reply, Calls):
        finish = "tool_calls"
        message["tool_calls"] = [
            {
                "id": reply.call_id(i),
                "type": "function",
                "function": {"name": name, "arguments": arguments},
            }
            for i, (name, arguments) in enumerate(reply.calls)
        ]
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }


async def _chunks(reply: Text | Calls, model: str) -> AsyncIterator[bytes]:
    ident, created = f"chatcmpl-{uuid.uuid4().hex[:12]}", int(time.time())

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        data = {
            "id": ident,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        return f"data: {json.dumps(data)}\n\n".encode()

    yield chunk({"role": "assistant", "content": ""})
    if isinstance(reply, Text):
        for i, piece in enumerate(re.findall(r"\s*\S+", reply.content)):
            if i and reply.delay:
                await asyncio.sleep(reply.delay)
            yield chunk({"content": piece})
        yield chunk({}, "stop")
    else:
        if reply.content:
            yield chunk({"content": reply.content})
        for i, (name, arguments) in enumerate(reply.calls):
            call_id = reply.call_id(i)
            yield chunk(
                {
                    "tool_calls": [
                        {
                            "index": i,
                            "id": call_id,
                            "type": "function",
                            "function": {"name": name, "arguments": ""},
                        }
                    ]
                }
            )
            half = len(arguments) // 2  # arguments arrive in pieces, as OpenAI sends them
            for part in (arguments[:half], arguments[half:]):
                yield chunk({"tool_calls": [{"index": i, "function": {"arguments": part}}]})
                if reply.cut:
                    return  # no finish reason, no [DONE]: the stream just stops
        yield chunk({}, "tool_calls")
    yield b"data: [DONE]\n\n"


@contextmanager
def serve_fake_openai() -> Iterator[FakeOpenAI]:
    fake = FakeOpenAI()
    with serve_asgi(fake.app, lifespan="off") as (url, _):
        fake.base_url = f"{url}/v1"
        yield fake
