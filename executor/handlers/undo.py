"""Undo: put back exactly what an earlier mutation job changed, as its change
record (`imap_job_changes`) says, whether that job completed, was cancelled
part-way, or failed; retried attempts included.

The undo's approval lists exactly the messages to restore (an empty list never
means "everything"). For each, the message is found where the record says it
is: by UIDVALIDITY + UID, then by exact normalised Message-ID in the folder the
record names (above the UIDNEXT recorded before the move); a message found
neither way, or more than once, is reported and skipped, never guessed. It is
moved back to its original folder and its flags are put back: flags the job
added are removed, flags it removed are added again, nothing else is touched.

The undo records its own progress in the same table (keyed by the original's
identity of each message), so a killed undo resumes without redoing or
missing anything.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from imapclient.exceptions import IMAPClientAbortError, IMAPClientError

from app.jobs.models import Job, JobType
from app.jobs.store import Change, ChangeState, Intent, MessageKey
from executor import imap_ops
from executor import mirror_writes as mirror
from executor.context import JobContext, PermanentJobError
from executor.folder_lock import folder_lock
from executor.handlers.gmail_undo import GmailUndoRun
from executor.handlers.mutations import (
    BatchWrite,
    Target,
    announce_start,
    approved_work,
    change_summary,
    distinct_batches,
    plan_for,
    settlement,
)

Located = tuple[str, int, int]  # (folder, UIDVALIDITY, UID) where the message is now


@dataclass(frozen=True)
class Place:
    """Where a message may be: exactly (UIDVALIDITY + UID) and/or by Message-ID."""

    folder: str
    uidvalidity: int | None
    uid: int | None
    message_id: str | None
    floor: int | None


@dataclass
class Item:
    target: Target
    change: Change  # the undone job's record of this message
    own: Change | None  # this undo's record from an earlier attempt
    places: list[Place] = field(default_factory=list)
    at: Located | None = None
    problem: str | None = None
    copy: bool = False  # the job copied it (a label that is a folder): undo removes the copy

    @property
    def removes_copy(self) -> bool:
        return self.copy and self.at is not None and self.at[0] != self.change.folder


def places_for(change: Change, own: Change | None, *, copy: bool = False) -> list[Place]:
    """Where to look, in order: where the record says the message went; where it
    was (an interrupted move may not have happened); where an interrupted undo
    may already have put it back."""
    mid = change.message_id
    moved = change.folder_after is not None and change.folder_after != change.folder
    places: list[Place] = []
    if copy and moved:
        # The job left the original where it was and put a copy in folder_after:
        # only the copy is looked for (the original is not "the message moved").
        applied = change.state is ChangeState.APPLIED
        places.append(
            Place(
                change.folder_after or "",
                change.uidvalidity_after,
                change.uid_after if applied else None,
                mid,
                change.uid_floor,
            )
        )
        if own is not None:  # an interrupted undo may have removed it already
            places.append(Place(change.folder, change.uidvalidity, change.uid, None, None))
        return places
    if moved and change.state is ChangeState.APPLIED:
        places.append(
            Place(
                change.folder_after or "",
                change.uidvalidity_after,
                change.uid_after,
                mid,
                change.uid_floor,
            )
        )
    else:
        places.append(Place(change.folder, change.uidvalidity, change.uid, None, None))
        if moved:
            places.append(
                Place(
                    change.folder_after or "", change.uidvalidity_after, None, mid, change.uid_floor
                )
            )
    if own is not None and moved:
        places.append(Place(change.folder, own.uidvalidity_after, None, mid, own.uid_floor))
    return places


class UndoRun:
    def __init__(self, ctx: JobContext) -> None:
        self.ctx = ctx
        self.batch = 50
        self.settled: set[MessageKey] = set()
        self.own: dict[MessageKey, Change] = {}
        self.total = 0

    async def run(self) -> dict[str, Any]:
        ctx = self.ctx
        work = await approved_work(ctx)
        self.batch = work.batch_size
        original_id = work.params.get("undo_of")
        try:
            original = await ctx.store.get(uuid.UUID(str(original_id)))
        except ValueError:
            original = None
        if original is None or not original.job_type.is_undoable:
            raise PermanentJobError(f"job {original_id} is not a change that can be undone")
        if not original.status.is_terminal:
            raise PermanentJobError(
                f"job {original.job_id} is still {original.status.value}; undo it once it has ended"
            )
        record = {c.key: c for c in await ctx.store.job_changes(original.job_id)}
        if any(c.gm_msgid is not None for c in record.values()):
            # A Gmail label change: found again by X-GM-MSGID (gmail_undo.py).
            return await GmailUndoRun(ctx, work, original, record).run()
        copies = await self.copied(original)
        self.own = {c.key: c for c in await ctx.store.job_changes(ctx.job.job_id)}
        targets = work.targets
        self.total = len(targets)
        self.settled = {k for k, c in self.own.items() if c.state.is_final}
        await announce_start(
            ctx,
            "undo",
            self.total,
            self.settled,
            bool(self.own),
            noun="message(s) to restore",
            undo_of=str(original.job_id),
        )
        items: list[Item] = []
        nothing = BatchWrite()
        for t in targets:
            if t.key in self.settled:
                continue
            change = record.get(t.key)
            if change is None or not change.touched:
                nothing.outcomes.append(
                    settlement(
                        t,
                        ChangeState.SKIPPED,
                        f"job {original.job_id} did not change this message",
                    )
                )
                continue
            t = Target(t.folder, t.uidvalidity, t.uid, change.message_id or t.message_id, t.subject)
            own = self.own.get(t.key)
            items.append(Item(t, change, own, places_for(change, own, copy=copies), copy=copies))
        if nothing.outcomes:
            await self.commit(nothing, "undo: not changed by that job")
        client = await ctx.imap.ensure()
        await self.locate(client, items)
        lost = BatchWrite()
        for item in items:
            if item.at is None:
                state = ChangeState.FAILED if item.own is not None else ChangeState.SKIPPED
                reason = item.problem or (
                    f"not found where job {original.job_id} left it "
                    "(by UID or exact Message-ID); not guessed"
                )
                lost.outcomes.append(settlement(item.target, state, reason))
        if lost.outcomes:
            await self.commit(lost, "undo: some messages could not be found")
        groups: dict[tuple[str, int, str, bool], list[Item]] = defaultdict(list)
        for item in items:
            if item.at is not None:
                key = (item.at[0], item.at[1], item.change.folder, item.removes_copy)
                groups[key].append(item)
        for (folder, validity, restore, removes_copy), group in groups.items():
            ctx.checkpoint()
            # The mirror fence of both folders: no sync reads them and writes
            # rows while messages move between them (folder_lock.py).
            async with folder_lock(ctx, folder, restore):
                for batch in distinct_batches(group, self.batch, lambda i: i.change.message_id):
                    if removes_copy:
                        await self.remove_copies(client, folder, validity, restore, batch)
                    else:
                        await self.restore_batch(client, folder, validity, restore, batch)
        summary = await change_summary(ctx, None)
        summary["undo_of"] = str(original.job_id)
        if not summary["applied"] and (summary["skipped"] or summary["failed"]):
            first = (summary["failed"] or summary["skipped"])[0]
            raise PermanentJobError(f"nothing could be restored: {first['reason']}")
        return summary

    async def copied(self, original: Job) -> bool:
        """Whether the undone job copied messages (a label that is a folder)
        rather than moving them: its approval row says."""
        if original.job_type is not JobType.LABEL or original.approval_id is None:
            return False
        approval = await self.ctx.store.get_approval(original.approval_id)
        if approval is None:
            return False
        try:
            return plan_for(original.job_type, dict(approval.params)).copy_only
        except PermanentJobError:
            return False

    async def remove_copies(
        self, client: Any, folder: str, validity: int, source: str, batch: list[Item]
    ) -> None:
        """Undo a label-as-folder copy: expunge exactly the copies the job made
        (UID EXPUNGE), and only while each original is still where it was, so
        what goes is a duplicate, never the last copy of a message."""
        ctx = self.ctx
        ctx.checkpoint()
        write = BatchWrite()
        keep: list[Item] = []
        go: list[Item] = []
        source_validity, _ = await ctx.imap.call(imap_ops.select_rw, client, source)
        originals = [i.change.uid for i in batch if i.change.uidvalidity == source_validity]
        present = await ctx.imap.call(imap_ops.present_uids, client, originals)
        for item in batch:
            intact = item.change.uidvalidity == source_validity and item.change.uid in present
            (go if intact else keep).append(item)
        for item in keep:
            write.outcomes.append(
                settlement(
                    item.target,
                    ChangeState.FAILED if item.own else ChangeState.SKIPPED,
                    f"the original is no longer in {source}, so its copy in {folder} is kept",
                )
            )
        if go and not await ctx.imap.call(imap_ops.has_uidplus, client):
            for item in go:
                write.outcomes.append(
                    settlement(
                        item.target,
                        ChangeState.FAILED if item.own else ChangeState.SKIPPED,
                        f"the server cannot expunge just one message (no UIDPLUS): "
                        f"the copy in {folder} is kept",
                    )
                )
            go = []
        if go and (await ctx.imap.call(imap_ops.select_rw, client, folder))[0] != validity:
            for item in go:
                write.outcomes.append(
                    settlement(
                        item.target,
                        ChangeState.FAILED if item.own else ChangeState.SKIPPED,
                        f"{folder} changed (UIDVALIDITY) while undoing; not guessed",
                    )
                )
            go = []
        if go:
            copies = {id(i): i.at[2] for i in go if i.at}
            state = await ctx.imap.call(imap_ops.fetch_state, client, list(copies.values()))
            intents = [
                Intent(
                    folder=i.target.folder,
                    uidvalidity=i.target.uidvalidity,
                    uid=i.target.uid,
                    message_id=i.change.message_id or state[copies[id(i)]][1],
                    subject=i.target.subject,
                    flags_before=state[copies[id(i)]][0],
                    flags_added=(),
                    flags_removed=(),
                    folder_after=source,
                    uidvalidity_after=source_validity,
                    uid_floor=None,
                )
                for i in go
                if copies[id(i)] in state
            ]
            if intents:
                async with ctx.store.fenced_transaction(ctx.lease) as conn:
                    await ctx.store.record_intents(conn, ctx.lease, intents)
                uids = [copies[id(i)] for i in go if copies[id(i)] in state]
                try:
                    await ctx.imap.call(imap_ops.expunge_copied, client, uids)
                except IMAPClientAbortError:
                    raise
                except IMAPClientError as exc:
                    for item in go:
                        write.outcomes.append(
                            settlement(item.target, ChangeState.FAILED, f"server refused: {exc}")
                        )
                    go = []
            for item in go:
                uid = copies[id(item)]
                if uid not in state:
                    write.outcomes.append(
                        settlement(
                            item.target,
                            ChangeState.FAILED if item.own else ChangeState.SKIPPED,
                            f"its copy left {folder} while the undo ran",
                        )
                    )
                    continue
                write.outcomes.append(
                    settlement(
                        item.target,
                        ChangeState.APPLIED,
                        flags_after=state[uid][0],
                        folder_after=source,
                        uidvalidity_after=source_validity,
                        uid_after=item.change.uid,
                    )
                )
        # The copy's mirror row (if a sync added one) goes at the next sync.
        removed = sum(1 for o in write.outcomes if o.state is ChangeState.APPLIED)
        await self.commit(write, f"removed {removed} copy(ies) from {folder}")

    async def locate(self, client: Any, items: Sequence[Item]) -> None:
        """Find each message: rank by rank through its places, one SELECT per folder."""
        ctx = self.ctx
        rank = 0
        while True:
            todo = [i for i in items if i.at is None and i.problem is None and rank < len(i.places)]
            if not todo:
                return
            by_folder: dict[str, list[Item]] = defaultdict(list)
            for item in todo:
                by_folder[item.places[rank].folder].append(item)
            for folder, group in by_folder.items():
                ctx.checkpoint()
                try:
                    validity, _ = await ctx.imap.call(imap_ops.select_rw, client, folder)
                except IMAPClientAbortError:
                    raise
                except IMAPClientError:
                    continue  # the folder is gone: look in the next place
                exact = [
                    i.places[rank].uid
                    for i in group
                    if i.places[rank].uid is not None and i.places[rank].uidvalidity == validity
                ]
                present = await ctx.imap.call(imap_ops.present_uids, client, exact)
                for item in group:
                    place = item.places[rank]
                    if (
                        place.uid is not None
                        and place.uidvalidity == validity
                        and place.uid in present
                    ):
                        item.at = (folder, validity, place.uid)
                        continue
                    if not place.message_id:
                        continue
                    if place.uid is not None and place.uidvalidity == validity:
                        # The exact UID is gone, and UIDs are never handed out
                        # twice: a message with its Message-ID there now is
                        # another one (a twin the job moved in a later batch).
                        continue
                    floor = place.floor if place.uidvalidity == validity else None
                    hits = await ctx.imap.call(
                        imap_ops.find_exact_message_id, client, place.message_id, floor=floor
                    )
                    if len(hits) == 1:
                        item.at = (folder, validity, hits[0])
                    elif len(hits) > 1:
                        item.problem = (
                            f"{len(hits)} messages in {folder} carry its Message-ID; not guessed"
                        )
            rank += 1

    async def restore_batch(
        self, client: Any, folder: str, validity: int, restore: str, batch: list[Item]
    ) -> None:
        """Write ahead, put flags back and move home, record it with the mirror
        update and the progress event."""
        ctx = self.ctx
        ctx.checkpoint()
        current, _ = await ctx.imap.call(imap_ops.select_rw, client, folder)
        write = BatchWrite()
        if current != validity:
            for item in batch:
                write.outcomes.append(
                    settlement(
                        item.target,
                        ChangeState.FAILED if item.own else ChangeState.SKIPPED,
                        f"{folder} changed (UIDVALIDITY) while undoing; not guessed",
                    )
                )
            await self.commit(write, f"{folder}: changed while undoing")
            return
        uids = [item.at[2] for item in batch if item.at]
        state = await ctx.imap.call(imap_ops.fetch_state, client, uids)
        here = [i for i in batch if i.at and i.at[2] in state]
        for item in batch:
            if not (item.at and item.at[2] in state):
                write.outcomes.append(
                    settlement(
                        item.target,
                        ChangeState.FAILED if item.own else ChangeState.SKIPPED,
                        f"it left {folder} while the undo ran",
                    )
                )
        moving = restore != folder
        dest_validity = floor = None
        if moving and here:
            await ctx.imap.call(imap_ops.ensure_folder, client, restore)
            dest_validity, floor = await ctx.imap.call(imap_ops.folder_uidnext, client, restore)
        intents: list[Intent] = []
        for item in here:
            assert item.at is not None
            flags, mid = state[item.at[2]]
            intents.append(
                Intent(
                    folder=item.target.folder,
                    uidvalidity=item.target.uidvalidity,
                    uid=item.target.uid,
                    message_id=item.change.message_id or mid,
                    subject=item.target.subject,
                    flags_before=flags,
                    flags_added=tuple(f for f in item.change.flags_removed if f not in flags),
                    flags_removed=tuple(f for f in item.change.flags_added if f in flags),
                    folder_after=restore,
                    uidvalidity_after=dest_validity if moving else validity,
                    uid_floor=floor,
                )
            )
        if intents:
            async with ctx.store.fenced_transaction(ctx.lease) as conn:
                await ctx.store.record_intents(conn, ctx.lease, intents)
        mapping: dict[int, int] = {}
        moved_validity: int | None = None
        after: dict[int, tuple[str, ...]] = {}
        try:
            # Flags first, in the folder the message is in now (fewer SELECTs);
            # MOVE keeps flags. Group by what each message needs put back.
            needs: dict[tuple[tuple[str, ...], tuple[str, ...]], list[int]] = defaultdict(list)
            for item in here:
                assert item.at is not None
                needs[(item.change.flags_added, item.change.flags_removed)].append(item.at[2])
            for (added, removed), group_uids in needs.items():
                if added:
                    after.update(
                        await ctx.imap.call(
                            imap_ops.store_flags, client, group_uids, added, add=False
                        )
                    )
                if removed:
                    after.update(
                        await ctx.imap.call(
                            imap_ops.store_flags, client, group_uids, removed, add=True
                        )
                    )
            if moving and here:
                moved_validity, mapping = await ctx.imap.call(
                    imap_ops.move_uids, client, [i.at[2] for i in here if i.at], restore
                )
        except IMAPClientAbortError:
            raise
        except IMAPClientError as exc:
            for item in here:
                write.outcomes.append(
                    settlement(item.target, ChangeState.FAILED, f"server refused: {exc}")
                )
            await self.commit(write, f"{folder}: the server refused a batch")
            return
        target_validity = moved_validity or dest_validity
        for item in here:
            assert item.at is not None
            uid = item.at[2]
            flags = after.get(uid, state[uid][0])
            new_uid = mapping.get(uid) if moving else uid
            write.outcomes.append(
                settlement(
                    item.target,
                    ChangeState.APPLIED,
                    flags_after=flags,
                    folder_after=restore,
                    uidvalidity_after=target_validity if moving else validity,
                    uid_after=new_uid,
                )
            )
            if moving:
                write.moves.append((uid, new_uid, flags))
            else:
                write.flag_updates[uid] = (flags, None)
        write.target_validity = target_validity
        await self.commit(
            write,
            f"restored {len(here)} of {len(batch)} from {folder}",
            folder=folder,
            validity=validity,
            restore=restore,
        )

    async def commit(
        self,
        write: BatchWrite,
        message: str,
        *,
        folder: str | None = None,
        validity: int | None = None,
        restore: str | None = None,
    ) -> None:
        ctx = self.ctx
        keys = {(o.folder, o.uidvalidity, o.uid) for o in write.outcomes}
        settled = self.settled | keys
        applied = [o for o in write.outcomes if o.state is ChangeState.APPLIED]
        async with ctx.store.fenced_transaction(ctx.lease) as conn:
            await ctx.store.settle_changes(conn, ctx.lease, write.outcomes)
            if folder is not None and validity is not None:
                if write.flag_updates:
                    await mirror.update_flags(conn, folder, validity, write.flag_updates)
                if write.moves and restore:
                    await mirror.move_rows(
                        conn, folder, validity, write.moves, restore, write.target_validity
                    )
            await ctx.progress(
                message,
                processed=len(settled),
                data={
                    "phase": "apply",
                    "items_found": len(applied),
                    "uids": [o.uid for o in applied],
                    "has_more": len(settled) < self.total,
                },
                conn=conn,
            )
        self.settled = settled


async def handle_undo(ctx: JobContext) -> dict[str, Any]:
    return await UndoRun(ctx).run()
