"""The `sync` job: bring the mirror up to date with the server, read-only.

Per folder: UIDVALIDITY decides whether the stored UIDs still mean anything;
new UIDs come from the stored cursor in micro-batches (each batch, the cursor
move and its progress event commit together); flag changes come from
CONDSTORE's CHANGEDSINCE when offered, else a flag scan; expunged messages are
reconciled from a UID SEARCH. The server is only ever EXAMINEd and fetched
with BODY.PEEK, so nothing is marked read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import imapclient
from imapclient.imapclient import seq_to_parenstr_upper
from imapclient.response_parser import parse_fetch_response

from executor import mirror_writes as mirror
from executor.context import JobContext, PermanentJobError
from executor.parsing import ParserPool, RawMessage

log = logging.getLogger(__name__)

BODY_PREFIX_BYTES = 65536
FETCH_ITEMS = ["FLAGS", "INTERNALDATE", "RFC822.SIZE", f"BODY.PEEK[]<0.{BODY_PREFIX_BYTES}>"]
SKIPPED_SPECIAL_USE = {b"\\NOSELECT", b"\\NONEXISTENT", b"\\ALL", b"\\JUNK", b"\\TRASH"}


@dataclass(frozen=True)
class FolderState:
    """What the server says about a folder right now."""

    name: str
    uidvalidity: int
    uidnext: int | None
    messages: int
    highestmodseq: int | None


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _flags(raw: Sequence[Any]) -> tuple[str, ...]:
    return tuple(_text(f) for f in raw)


def _modseq(data: dict[bytes, Any]) -> int | None:
    value = data.get(b"MODSEQ")
    if isinstance(value, tuple | list) and value:
        return int(value[0])
    return int(value) if value is not None else None


def _body(data: dict[bytes, Any]) -> bytes:
    for key, value in data.items():
        if key.startswith(b"BODY[") and isinstance(value, bytes):
            return value
    return b""


def fetch_raw(
    client: imapclient.IMAPClient, uids: Sequence[int], condstore: bool
) -> tuple[list[RawMessage], list[dict[str, Any]]]:
    """Fetch one micro-batch (runs in a worker thread); parsing happens elsewhere."""
    items = FETCH_ITEMS + (["MODSEQ"] if condstore else [])
    response = client.fetch(list(uids), items)
    raws: list[RawMessage] = []
    problems: list[dict[str, Any]] = []
    for uid in uids:
        data = response.get(uid)
        if data is None:
            problems.append({"uid": uid, "problem": "expunged before it could be fetched"})
            continue
        internal = data.get(b"INTERNALDATE")
        raws.append(
            RawMessage(
                uid=uid,
                flags=_flags(data.get(b"FLAGS", ())),
                # imapclient's FixedOffset zone does not pickle; UTC does.
                internal_date=internal.astimezone(UTC) if isinstance(internal, datetime) else None,
                size=data.get(b"RFC822.SIZE"),
                modseq=_modseq(data),
                body=_body(data),
            )
        )
    return raws, problems


def list_sync_folders(client: imapclient.IMAPClient) -> list[str]:
    folders = []
    for flags, _delim, name in client.list_folders():
        if {f.upper() for f in flags} & SKIPPED_SPECIAL_USE:
            continue
        folders.append(name)
    return folders


def folder_status(client: imapclient.IMAPClient, folder: str, condstore: bool) -> FolderState:
    what = [b"MESSAGES", b"UIDNEXT", b"UIDVALIDITY"] + ([b"HIGHESTMODSEQ"] if condstore else [])
    st = client.folder_status(folder, what)
    modseq = st.get(b"HIGHESTMODSEQ")
    return FolderState(
        name=folder,
        uidvalidity=int(st[b"UIDVALIDITY"]),
        uidnext=int(st[b"UIDNEXT"]) if st.get(b"UIDNEXT") is not None else None,
        messages=int(st[b"MESSAGES"]),
        highestmodseq=int(modseq) if modseq is not None else None,
    )


def examine(client: imapclient.IMAPClient, folder: str) -> FolderState:
    info = client.select_folder(folder, readonly=True)
    modseq = info.get(b"HIGHESTMODSEQ")
    return FolderState(
        name=folder,
        uidvalidity=int(info[b"UIDVALIDITY"]),
        uidnext=int(info[b"UIDNEXT"]) if info.get(b"UIDNEXT") is not None else None,
        messages=int(info.get(b"EXISTS", 0)),
        highestmodseq=int(modseq) if modseq is not None else None,
    )


def uids_after(client: imapclient.IMAPClient, last_seen: int) -> list[int]:
    # `N:*` always matches the highest UID even when it is below N: drop those.
    return sorted(u for u in client.search(["UID", f"{last_seen + 1}:*"]) if u > last_seen)


def fetch_uid_range(
    client: imapclient.IMAPClient,
    uid_set: str,
    items: list[str],
    modifiers: list[str] | None = None,
) -> dict[int, dict[bytes, Any]]:
    """UID FETCH over a range like `1:500`.

    `IMAPClient.fetch` keeps only the UIDs it was given one by one, and listing
    10,000 UIDs would overflow the server's command-line limit; this sends the
    compact range and keeps every response.
    """
    imap = client._imap
    tag = imap._command(
        "UID",
        "FETCH",
        uid_set,
        seq_to_parenstr_upper(items),
        seq_to_parenstr_upper(modifiers) if modifiers else None,
    )
    typ, data = imap._command_complete("FETCH", tag)
    client._checkok("fetch", typ, data)
    typ, data = imap._untagged_response(typ, data, "FETCH")
    return parse_fetch_response(data, client.normalise_times, True)


def flag_changes(
    client: imapclient.IMAPClient, max_uid: int, changed_since: int | None
) -> dict[int, tuple[tuple[str, ...], int | None]]:
    if max_uid <= 0:
        return {}
    modifiers = [f"CHANGEDSINCE {changed_since}"] if changed_since is not None else None
    items = ["FLAGS"] + (["MODSEQ"] if changed_since is not None else [])
    response = fetch_uid_range(client, f"1:{max_uid}", items, modifiers)
    return {
        uid: (_flags(data.get(b"FLAGS", ())), _modseq(data))
        for uid, data in response.items()
        if uid <= max_uid
    }


def is_unchanged(cursor: mirror.FolderCursor | None, state: FolderState, condstore: bool) -> bool:
    """Cheap test from STATUS alone: nothing added, removed or (with CONDSTORE) re-flagged."""
    return (
        condstore
        and cursor is not None
        and cursor.uidvalidity == state.uidvalidity
        and cursor.uidnext == state.uidnext
        and cursor.message_count == state.messages
        and cursor.highestmodseq is not None
        and cursor.highestmodseq == state.highestmodseq
    )


class SyncRun:
    def __init__(self, ctx: JobContext) -> None:
        self.ctx = ctx
        self.batch_size = max(
            1, int(ctx.job.payload.get("batch_size") or ctx.settings.sync_batch_size)
        )
        self.base = ctx.job.processed  # work done by earlier attempts keeps counting
        self.done = 0
        self.remaining: dict[str, int] = {}
        self.batches = 0
        self.parser = ctx.parser or ParserPool(0)

    @property
    def total(self) -> int:
        return self.base + self.done + sum(self.remaining.values())

    async def run(self) -> dict[str, Any]:
        ctx = self.ctx
        client = await ctx.imap.ensure()
        condstore = ctx.imap.condstore
        requested = ctx.job.payload.get("folders")
        if requested is not None and (
            not isinstance(requested, list) or not all(isinstance(f, str) for f in requested)
        ):
            raise PermanentJobError("payload.folders must be a list of folder names")
        on_server = await ctx.imap.call(list_sync_folders, client)
        folders = requested or on_server
        missing = [f for f in folders if f not in on_server]
        if missing:
            raise PermanentJobError(f"no such folder on the server: {', '.join(missing)}")

        async with ctx.store.pool.connection() as conn:
            cursors = await mirror.load_cursors(conn)
        states = {f: await ctx.imap.call(folder_status, client, f, condstore) for f in folders}
        for f, st in states.items():
            cur = cursors.get(f)
            if cur is None or cur.uidvalidity != st.uidvalidity:
                self.remaining[f] = st.messages
            else:
                self.remaining[f] = max(
                    0, min(st.messages, (st.uidnext or 0) - 1 - cur.last_seen_uid)
                )
        await ctx.progress(
            f"syncing {len(folders)} folder(s)",
            processed=self.base,
            total_estimate=self.total,
            data={"phase": "starting", "folders": folders, "has_more": self.total > self.base},
        )

        summary: dict[str, Any] = {"folders": {}, "problems": 0}
        for folder in folders:
            ctx.checkpoint()
            summary["folders"][folder] = await self.sync_folder(
                client, folder, cursors.get(folder), states[folder], condstore
            )
        if requested is None:
            gone = [f for f in cursors if f not in on_server]
            if gone:
                async with ctx.store.fenced_transaction(ctx.lease) as conn:
                    for f in gone:
                        await mirror.drop_folder(conn, f)
                summary["dropped_folders"] = gone
        summary["processed"] = self.base + self.done
        return summary

    async def sync_folder(
        self,
        client: imapclient.IMAPClient,
        folder: str,
        cursor: mirror.FolderCursor | None,
        status: FolderState,
        condstore: bool,
    ) -> dict[str, int]:
        ctx = self.ctx
        result = {"new": 0, "flag_changes": 0, "deleted": 0, "problems": 0}
        if is_unchanged(cursor, status, condstore):
            self.remaining[folder] = 0
            return result
        state = await ctx.imap.call(examine, client, folder)
        last_seen = 0
        if cursor is None or cursor.uidvalidity != state.uidvalidity:
            async with ctx.store.fenced_transaction(ctx.lease) as conn:
                await mirror.reset_folder(conn, folder, state.uidvalidity)
            if cursor is not None:
                await ctx.event(
                    f"{folder}: UIDVALIDITY changed, re-syncing the folder",
                    level="warning",
                    data={"folder": folder, "old": cursor.uidvalidity, "new": state.uidvalidity},
                )
            cursor = None
        else:
            last_seen = cursor.last_seen_uid

        new_uids = await ctx.imap.call(uids_after, client, last_seen)
        self.remaining[folder] = len(new_uids)
        batches = [
            new_uids[i : i + self.batch_size] for i in range(0, len(new_uids), self.batch_size)
        ]
        pending: asyncio.Task[Any] | None = None
        try:
            if batches:
                pending = asyncio.create_task(
                    ctx.imap.call(fetch_raw, client, batches[0], condstore)
                )
            for index, uids in enumerate(batches):
                assert pending is not None
                raws, problems = await pending
                pending = None
                if index + 1 < len(batches):
                    # Fetch the next batch while this one is written: IMAP and
                    # Postgres work overlap.
                    pending = asyncio.create_task(
                        ctx.imap.call(fetch_raw, client, batches[index + 1], condstore)
                    )
                fetched, parse_problems = await self.parser.parse(raws)
                problems += parse_problems
                self.done += len(uids)
                self.remaining[folder] -= len(uids)
                self.batches += 1
                result["new"] += len(fetched)
                result["problems"] += len(problems)
                async with ctx.store.fenced_transaction(ctx.lease) as conn:
                    await mirror.upsert_messages(conn, folder, state.uidvalidity, fetched)
                    await ctx.progress(
                        f"{folder}: {len(fetched)} message(s) mirrored"
                        + (f", {len(problems)} with problems" if problems else ""),
                        processed=self.base + self.done,
                        total_estimate=self.total,
                        level="warning" if problems else "info",
                        data={
                            "phase": "fetch",
                            "folder": folder,
                            "batch": self.batches,
                            "items_found": len(fetched),
                            "uids": [m.uid for m in fetched],
                            "has_more": self.total > self.base + self.done,
                            "problems": problems,
                        },
                        conn=conn,
                    )
                ctx.checkpoint()
        finally:
            if pending is not None:
                with contextlib.suppress(Exception):
                    await pending

        max_uid = max([last_seen, *new_uids])
        if cursor is not None and last_seen > 0:
            since = cursor.highestmodseq if condstore and cursor.highestmodseq else None
            if since is None or since != state.highestmodseq:
                changes = await ctx.imap.call(flag_changes, client, last_seen, since)
                async with ctx.store.pool.connection() as conn:
                    stored = await mirror.folder_flags(conn, folder, state.uidvalidity)
                changed = {
                    uid: value
                    for uid, value in changes.items()
                    if uid in stored and set(stored[uid]) != set(value[0])
                }
                if changed:
                    async with ctx.store.fenced_transaction(ctx.lease) as conn:
                        await mirror.update_flags(conn, folder, state.uidvalidity, changed)
                result["flag_changes"] = len(changed)

        async with ctx.store.pool.connection() as conn:
            mirrored = await mirror.count_folder(conn, folder, state.uidvalidity)
        present: list[int] | None = None
        if mirrored != state.messages:
            present = await ctx.imap.call(client.search, "ALL")
        async with ctx.store.fenced_transaction(ctx.lease) as conn:
            if present is not None:
                result["deleted"] = await mirror.delete_missing(
                    conn, folder, state.uidvalidity, present, max_uid
                )
            await mirror.finish_folder(
                conn, folder, state.uidvalidity, state.uidnext, state.highestmodseq
            )
            if any(result.values()):
                await ctx.progress(
                    f"{folder}: {result['new']} new, {result['flag_changes']} re-flagged, "
                    f"{result['deleted']} removed",
                    data={
                        "phase": "folder_done",
                        "folder": folder,
                        **result,
                        "has_more": self.total > self.base + self.done,
                    },
                    conn=conn,
                )
        return result


async def handle_sync(ctx: JobContext) -> dict[str, Any]:
    return await SyncRun(ctx).run()
