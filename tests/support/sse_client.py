"""A tiny SSE reader over httpx streams, for tests and benchmarks."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx


@dataclass
class SSEMessage:
    event: str
    data: str
    id: str | None

    def json(self) -> Any:
        return json.loads(self.data)


async def read_sse(response: httpx.Response) -> AsyncIterator[SSEMessage]:
    event, data, ident = "message", [], None
    async for line in response.aiter_lines():
        if line == "":
            if data:
                yield SSEMessage(event, "\n".join(data), ident)
            event, data, ident = "message", [], None
        elif line.startswith(":"):
            continue
        else:
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "event":
                event = value
            elif field == "data":
                data.append(value)
            elif field == "id":
                ident = value


async def collect(
    client: httpx.AsyncClient,
    url: str,
    *,
    headers: dict[str, str] | None = None,
    until_terminal: bool = True,
    limit: int = 100_000,
) -> list[SSEMessage]:
    out: list[SSEMessage] = []
    async with client.stream("GET", url, headers=headers) as r:
        r.raise_for_status()
        async for msg in read_sse(r):
            out.append(msg)
            if len(out) >= limit:
                break
    return out
