"""The `sync` job: bring the mirror up to date with the server, read-only.

Per folder: UIDVALIDITY decides whether the stored UIDs still mean anything;
new UIDs come from the stored cursor in micro-batches (each batch, the cursor
move and its progress event commit together); flag changes come from
CONDSTORE's SEARCH MODSEQ when offered, else a flag scan of the mirrored UIDs;
expunged messages are reconciled from a UID SEARCH. The server is only ever
EXAMINEd and fetched with BODY.PEEK, so nothing is marked read.

Seeing the server as it is now: STATUS is asked only with no folder selected
(a selected folder's STATUS answers from the session's old view), and a folder
is left (UNSELECT) once synced. Fetches go through `UidFetcher`: explicit UID
lists in chunks, answers trusted only when they are about the UID asked for.
A folder's pass from EXAMINE to its last row write holds the folder's mirror
fence (executor/folder_lock.py), so a mutation of the same folder never
interleaves its writes with rows read before it.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import imapclient

from app.mail.mime import HEADER_FIELDS
from executor import gmail as gmail_ops
from executor import mirror_writes as mirror
from executor.context import JobContext, PermanentJobError
from executor.folder_lock import FolderFence, folder_lock
from executor.imap_fetch import UidFetcher, chunks
from executor.imap_session import leave_folder
from executor.mentions import MentionCheck, SearchAhead, enqueue_rescore_if_stale
from executor.parsing import MIN_PARALLEL_BATCH, ParsedBatch, ParserPool, RawMessage
from executor.sync_parallel import BorrowedConnections, ParallelFirstSync
from executor.sync_pipeline import BatchPipeline, YieldGate

log = logging.getLogger(__name__)

# What a sync downloads of each message (SPEC §9: at most 16 KB per message on
# average; Gmail allows 2,500 MB of IMAP download a day): the header fields the
# parser reads, whole, whatever their size (To and CC decide AGENTS.md rule 2,
# so they are never cut), not the Received/DKIM/ARC lines that are most of a
# real header, and the first BODY_PREFIX_BYTES of the body. A name past the cut
# is asked of the server with UID SEARCH BODY (executor/mentions.py), which
# downloads nothing.
BODY_PREFIX_BYTES = 12288
HEADER_ITEM = f"BODY.PEEK[HEADER.FIELDS ({' '.join(HEADER_FIELDS)})]"
FETCH_ITEMS = [
    "FLAGS",
    "INTERNALDATE",
    "RFC822.SIZE",
    HEADER_ITEM,
    f"BODY.PEEK[TEXT]<0.{BODY_PREFIX_BYTES}>",
]
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


def _body(data: dict[bytes, Any]) -> tuple[bytes, bool | None]:
    """The header fields (which end with their blank line, RFC 3501 §6.4.5)
    followed by the body prefix: the message as far as the parser needs it; and
    whether the body was cut at the prefix (None: not known)."""
    header = next(
        (v for k, v in data.items() if k.startswith(b"BODY[HEADER") and isinstance(v, bytes)),
        None,
    )
    text = next(
        (v for k, v in data.items() if k.startswith(b"BODY[TEXT]") and isinstance(v, bytes)), None
    )
    cut = len(text) >= BODY_PREFIX_BYTES if text is not None else None
    if header is not None:
        return header + (text or b""), cut
    for key, value in data.items():
        if key.startswith(b"BODY[") and isinstance(value, bytes):
            return value, None
    return b"", None


def fetch_raw(
    fetcher: UidFetcher, uids: Sequence[int], condstore: bool, gmail: bool = False
) -> tuple[list[RawMessage], list[dict[str, Any]]]:
    """Fetch one micro-batch (runs in a worker thread); parsing happens elsewhere."""
    items = FETCH_ITEMS + (["MODSEQ"] if condstore else []) + (gmail_ops.GM_ITEMS if gmail else [])
    response = fetcher.fetch(uids, items, required=(b"INTERNALDATE", b"RFC822.SIZE"))
    raws: list[RawMessage] = []
    problems: list[dict[str, Any]] = []
    for uid in uids:
        data = response.get(uid)
        if data is None:
            problems.append({"uid": uid, "problem": "expunged before it could be fetched"})
            continue
        internal = data.get(b"INTERNALDATE")
        body, cut = _body(data)
        raws.append(
            RawMessage(
                uid=uid,
                flags=_flags(data.get(b"FLAGS", ())),
                # imapclient's FixedOffset zone does not pickle; UTC does.
                internal_date=internal.astimezone(UTC) if isinstance(internal, datetime) else None,
                size=data.get(b"RFC822.SIZE"),
                modseq=_modseq(data),
                body=body,
                cut=cut,
                gm_msgid=gmail_ops.as_msgid(data.get(b"X-GM-MSGID")) if gmail else None,
                gm_thrid=gmail_ops.as_msgid(data.get(b"X-GM-THRID")) if gmail else None,
                gm_labels=gmail_ops.decode_labels(data.get(b"X-GM-LABELS")) if gmail else None,
            )
        )
    return raws, problems


def list_sync_folders(
    client: imapclient.IMAPClient, gmail: bool = False, extra: Sequence[str] = ()
) -> list[str]:
    """The folders a full sync mirrors. Gmail: INBOX, Sent and the `extra`
    (SECRETARY_SYNC_FOLDERS) labels, since every other folder is a label view
    of mail stored once (executor/gmail.py). Elsewhere: every selectable folder
    but All Mail, Junk and Trash."""
    if gmail:
        return gmail_ops.Folders.listed(client).mirrored(extra)
    folders = []
    for flags, _delim, name in client.list_folders():
        if {f.upper() for f in flags} & SKIPPED_SPECIAL_USE:
            continue
        folders.append(name)
    return folders


def gmail_changes(
    fetcher: UidFetcher, known: Sequence[int], changed_since: int | None
) -> dict[int, tuple[tuple[str, ...], tuple[str, ...], int | None]]:
    """Gmail: current flags and labels of the mirrored UIDs changed since the
    last sync (worker thread). Gmail moves a message's MODSEQ for label changes
    too, so `UID FETCH … (CHANGEDSINCE n)` names them; without CONDSTORE every
    mirrored UID is fetched."""
    if not known:
        return {}
    items = ["FLAGS", "X-GM-LABELS"] + (["MODSEQ"] if changed_since is not None else [])
    modifiers = [f"CHANGEDSINCE {changed_since}"] if changed_since is not None else None
    response = fetcher.fetch(
        sorted(set(known)), items, modifiers=modifiers, required=(b"FLAGS", b"X-GM-LABELS")
    )
    return {
        uid: (
            _flags(data.get(b"FLAGS", ())),
            gmail_ops.decode_labels(data.get(b"X-GM-LABELS")),
            _modseq(data),
        )
        for uid, data in response.items()
    }


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


def flag_changes(
    fetcher: UidFetcher, known: Sequence[int], changed_since: int | None
) -> dict[int, tuple[tuple[str, ...], int | None]]:
    """Current flags of the mirrored UIDs that may have changed (worker thread).

    With CONDSTORE, `SEARCH MODSEQ` names the messages changed since the last
    sync (MODSEQ n matches mod-sequences >= n, RFC 7162 §3.1.5) and only those
    are fetched; without it every mirrored UID is fetched. Either way explicit
    UID chunks, so no answer for another number is ever kept.
    """
    wanted = set(known)
    if not wanted:
        return {}
    if changed_since is not None:
        hits = fetcher.client.search(["MODSEQ", str(changed_since + 1)])
        uids = sorted(wanted.intersection(int(u) for u in hits))
        items = ["FLAGS", "MODSEQ"]
    else:
        uids = sorted(wanted)
        items = ["FLAGS"]
    response = fetcher.fetch(uids, items, required=tuple(i.encode() for i in items))
    return {uid: (_flags(data.get(b"FLAGS", ())), _modseq(data)) for uid, data in response.items()}


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
        # "Mentions you" is decided as messages are fetched (executor/mentions.py).
        self.mentions = MentionCheck.from_settings(ctx.settings)
        self.gmail = False  # decided from the connection's capabilities in run()
        self.bytes_fetched = 0  # header + body prefix bytes downloaded (SPEC §9 budget)
        self.messages_fetched = 0
        # Connections a big folder's first pass borrows (executor/sync_parallel.py).
        self.borrowed = BorrowedConnections(ctx)

    @property
    def total(self) -> int:
        return self.base + self.done + sum(self.remaining.values())

    async def run(self) -> dict[str, Any]:
        ctx = self.ctx
        if self.mentions.identity is not None:  # rows checked against another identity
            await enqueue_rescore_if_stale(ctx.store, self.mentions.identity)
        client = await ctx.imap.ensure()
        condstore = ctx.imap.condstore
        requested = ctx.job.payload.get("folders")
        if requested is not None and (
            not isinstance(requested, list) or not all(isinstance(f, str) for f in requested)
        ):
            raise PermanentJobError("payload.folders must be a list of folder names")
        # Cursors before LIST: a folder a mutation creates meanwhile (and mirrors
        # at once) must not look like one that vanished from the server.
        async with ctx.store.pool.connection() as conn:
            cursors = await mirror.load_cursors(conn)
        self.gmail = ctx.imap.is_gmail
        on_server = await ctx.imap.call(
            list_sync_folders, client, self.gmail, ctx.settings.sync_folders
        )
        folders = requested or on_server
        if self.gmail and requested:
            listed = await ctx.imap.call(gmail_ops.Folders.listed, client)
            refused = [f for f in folders if not listed.mirrorable(f)]
            if refused:
                raise PermanentJobError(
                    f"not mirrored on Gmail (All Mail, Spam, Trash or no such label): "
                    f"{', '.join(refused)}"
                )
            on_server = list(dict.fromkeys([*on_server, *folders]))
        missing = [f for f in folders if f not in on_server]
        if missing:
            raise PermanentJobError(f"no such folder on the server: {', '.join(missing)}")

        # A mutation job (or an earlier sync) may have left a folder selected on
        # this connection, and STATUS of that folder would answer from the past.
        await self.leave(client)
        states = {f: await ctx.imap.call(folder_status, client, f, condstore) for f in folders}
        for f, st in states.items():
            cur = cursors.get(f)
            if cur is None or cur.uidvalidity != st.uidvalidity:
                self.remaining[f] = st.messages
            else:
                self.remaining[f] = max(
                    0, min(st.messages, (st.uidnext or 0) - 1 - cur.last_seen_uid)
                )
        if max(self.remaining.values(), default=0) >= MIN_PARALLEL_BATCH:
            self.parser.warm()  # its start overlaps the SELECT and SEARCH to come
        await ctx.progress(
            f"syncing {len(folders)} folder(s)",
            processed=self.base,
            total_estimate=self.total,
            data={"phase": "starting", "folders": folders, "has_more": self.total > self.base},
        )

        summary: dict[str, Any] = {"folders": {}, "problems": 0}
        try:
            if any(
                (cur is None or cur.uidvalidity != states[f].uidvalidity or cur.uidnext is None)
                and BorrowedConnections.worth_splitting(ctx, self.batch_size, self.remaining[f])
                for f, cur in ((f, cursors.get(f)) for f in folders)
            ):
                await self.borrowed.open_early()  # logins overlap the folders before
            for folder in folders:
                ctx.checkpoint()
                await self.borrowed.give_back_if_wanted()
                summary["folders"][folder] = await self.sync_folder(
                    client, folder, cursors.get(folder), states[folder], condstore
                )
        finally:
            await self.borrowed.close()
        if requested is None:
            gone = [f for f in cursors if f not in on_server]
            if gone:
                async with (
                    folder_lock(ctx, *gone),
                    ctx.store.fenced_transaction(ctx.lease) as conn,
                ):
                    for f in gone:
                        await mirror.drop_folder(conn, f)
                summary["dropped_folders"] = gone
        summary["processed"] = self.base + self.done
        summary["gmail"] = self.gmail
        summary["bytes_fetched"] = self.bytes_fetched
        summary["messages_fetched"] = self.messages_fetched
        return summary

    async def leave(self, client: imapclient.IMAPClient) -> None:
        await self.ctx.imap.call(leave_folder, client, "UNSELECT" in self.ctx.imap.capabilities)

    async def sync_folder(
        self,
        client: imapclient.IMAPClient,
        folder: str,
        cursor: mirror.FolderCursor | None,
        status: FolderState,
        condstore: bool,
    ) -> dict[str, int]:
        """One folder: skip it when STATUS says nothing changed, else a fenced pass."""
        ctx = self.ctx
        result = {"new": 0, "flag_changes": 0, "deleted": 0, "problems": 0}
        if is_unchanged(cursor, status, condstore):
            self.remaining[folder] = 0
            return result
        try:
            async with folder_lock(ctx, folder) as fence:
                await self.folder_pass(client, folder, condstore, fence, result)
        except BaseException:
            with contextlib.suppress(Exception):
                await self.leave(client)
            raise
        await self.leave(client)
        return result

    async def folder_pass(
        self,
        client: imapclient.IMAPClient,
        folder: str,
        condstore: bool,
        fence: FolderFence,
        result: dict[str, int],
    ) -> None:
        """EXAMINE → new messages → flag changes → expunges, under the folder's fence.

        The cursor is read again under the fence: another job may have
        advanced it (or reset the folder) since this job started.
        """
        ctx = self.ctx
        async with ctx.store.pool.connection() as conn:
            cursor = (await mirror.load_cursors(conn)).get(folder)
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
        fetcher = UidFetcher.for_folder(
            client,
            exists=state.messages,
            uidnext=state.uidnext,
            known_uids=new_uids if last_seen == 0 else None,
        )
        self.remaining[folder] = len(new_uids)
        # A first pass (none finished yet) of a big folder is split into UID
        # ranges over several connections; the serial pass gets what is above.
        split = ParallelFirstSync(
            self, folder, state, fence, fetcher, fetch=fetch_raw, examine=examine
        )
        serial = new_uids
        if cursor is None or cursor.uidnext is None:
            serial = await split.run_ranges(new_uids, last_seen, result)
        await self.fetch_new(folder, state, serial, fetcher, condstore, fence, result)

        max_uid = max([last_seen, *new_uids])
        # Rows an earlier attempt of a split first sync wrote above the cursor
        # are checked too (`split.done_before`).
        if cursor is not None and (last_seen > 0 or split.resumed) and self.gmail:
            since = cursor.highestmodseq if condstore and cursor.highestmodseq else None
            if since is None or since != state.highestmodseq:
                result["flag_changes"] = await self.gmail_relabels(
                    folder, state, fetcher, last_seen, since, split
                )
        elif cursor is not None and (last_seen > 0 or split.resumed):
            since = cursor.highestmodseq if condstore and cursor.highestmodseq else None
            if since is None or since != state.highestmodseq:
                async with ctx.store.pool.connection() as conn:
                    stored = await mirror.folder_flags(conn, folder, state.uidvalidity)
                # With CONDSTORE every mirrored UID may be named (SEARCH MODSEQ is
                # cheap); a full scan only covers what the cursor had seen, and
                # the rows an earlier attempt of a split first sync wrote.
                known = [
                    u for u in stored if since is not None or u <= last_seen or split.done_before(u)
                ]
                changes = await ctx.imap.call(flag_changes, fetcher, known, since)
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

    async def gmail_relabels(
        self,
        folder: str,
        state: FolderState,
        fetcher: UidFetcher,
        last_seen: int,
        since: int | None,
        split: ParallelFirstSync,
    ) -> int:
        """Gmail: flag and label changes of mirrored messages reach the mirror."""
        ctx = self.ctx
        async with ctx.store.pool.connection() as conn:
            stored = await mirror.folder_state(conn, folder, state.uidvalidity)
        known = [u for u in stored if since is not None or u <= last_seen or split.done_before(u)]
        changes = await ctx.imap.call(gmail_changes, fetcher, known, since)
        changed = {
            uid: (flags, labels, modseq)
            for uid, (flags, labels, modseq) in changes.items()
            if uid in stored
            and (set(stored[uid][0]) != set(flags) or set(stored[uid][1]) != set(labels))
        }
        if changed:
            async with ctx.store.fenced_transaction(ctx.lease) as conn:
                await mirror.update_flags(
                    conn,
                    folder,
                    state.uidvalidity,
                    {uid: (flags, modseq) for uid, (flags, _labels, modseq) in changed.items()},
                    labels={uid: labels for uid, (_f, labels, _m) in changed.items()},
                )
        return len(changed)

    async def fetch_new(
        self,
        folder: str,
        state: FolderState,
        new_uids: list[int],
        fetcher: UidFetcher,
        condstore: bool,
        fence: FolderFence,
        result: dict[str, int],
    ) -> None:
        """New messages in micro-batches through the connection's pipeline
        (executor/sync_pipeline.py): fetched back to back, parsed in the parse
        processes, each written with its cursor move and progress event."""
        ctx = self.ctx
        gate = YieldGate(fence)
        seen = gate.generation
        ahead = self.search_ahead(new_uids)

        async def fetch(uids: list[int], generation: int) -> tuple[list[RawMessage], Any]:
            nonlocal seen
            if generation != seen:  # a job in between may have expunged: learn it again
                fetcher.dense, seen = None, generation
            raws, problems = await ctx.imap.call(
                self.mentions.fetch, fetch_raw, fetcher, uids, condstore, self.gmail, ahead=ahead
            )
            self.count_fetched(raws)
            return raws, problems

        async def write(uids: list[int], parsed: ParsedBatch, problems: list[Any]) -> None:
            ctx.checkpoint()  # after a cancel is seen nothing more is written
            async with ctx.store.fenced_transaction(ctx.lease, pipeline=True) as conn:
                await mirror.upsert_encoded(conn, folder, state.uidvalidity, parsed.rows)
                await self.record_batch(
                    conn, folder, uids, parsed.rows.uids, problems + parsed.problems, result
                )

        def stop_before(_uids: list[int]) -> bool:
            ctx.checkpoint()
            return False

        pipeline: BatchPipeline[list[int]] = BatchPipeline(
            gate,
            fetch=fetch,
            parse=self.parse_for(folder, state.uidvalidity),
            write=write,
            stop_before=stop_before,
        )
        await pipeline.run(chunks(new_uids, self.batch_size))

    def search_ahead(self, planned: Sequence[int]) -> SearchAhead | None:
        """The mention searches of one connection's pass over `planned` (ascending
        UIDs no other connection fetches meanwhile), asked a stretch ahead."""
        if self.mentions.identity is None:
            return None
        return SearchAhead(planned, larger=BODY_PREFIX_BYTES)

    def parse_for(
        self, folder: str, uidvalidity: int
    ) -> Callable[[list[RawMessage]], Awaitable[ParsedBatch]]:
        """The pipeline's parse step for this folder: rows come back encoded."""

        def parse(raws: list[RawMessage]) -> Awaitable[ParsedBatch]:
            return self.parser.parse_batch(raws, self.mentions.identity, folder, uidvalidity)

        return parse

    def count_fetched(self, raws: Sequence[RawMessage]) -> None:
        self.bytes_fetched += sum(len(r.body) for r in raws)
        self.messages_fetched += len(raws)

    async def record_batch(
        self,
        conn: Any,
        folder: str,
        uids: Sequence[int],
        written: Sequence[int],
        problems: list[dict[str, Any]],
        result: dict[str, int],
        data: dict[str, Any] | None = None,
    ) -> None:
        """Count a batch of new messages and report it, in the fenced transaction
        that wrote its rows (the serial pass and every range of a split one)."""
        self.done += len(uids)
        self.remaining[folder] -= len(uids)
        self.batches += 1
        result["new"] += len(written)
        result["problems"] += len(problems)
        await self.ctx.progress(
            f"{folder}: {len(written)} message(s) mirrored"
            + (f", {len(problems)} with problems" if problems else ""),
            processed=self.base + self.done,
            total_estimate=self.total,
            level="warning" if problems else "info",
            data={
                "phase": "fetch",
                "folder": folder,
                "batch": self.batches,
                "items_found": len(written),
                "uids": list(written),
                "has_more": self.total > self.base + self.done,
                "problems": problems,
                **(data or {}),
            },
            conn=conn,
        )


async def handle_sync(ctx: JobContext) -> dict[str, Any]:
    return await SyncRun(ctx).run()
