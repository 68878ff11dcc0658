"""Approved mailbox changes: mark read/unread, move, label, clean.

A job does what its approval row says (action, params, messages), never what
its payload claims: the payload may only narrow the approved set, and a job
whose payload names a message the approval does not list changes nothing.

What changed is recorded as it changes, in the job's change record
(`imap_job_changes`, owned by the store):

1. before a batch touches IMAP, one 'intended' row per message with the flags
   the server showed (written once: a retry never overwrites what an earlier
   attempt saw first, e.g. `\\Seen` set before a MOVE that then failed);
2. after the IMAP command, the rows become 'applied' (with COPYUID's new UID)
   in the same fenced transaction as the mirror update and the progress event.

A retry (connection drop, lost lease, killed executor) continues from that
record: applied messages are done and never redone; an intended one still in
its folder is changed again; one gone from its folder is looked for in the
target by exact Message-ID (above the target's UIDNEXT from before the move)
and recorded with the UID found there, or reported; never guessed. Undo
(`executor/handlers/undo.py`) reads only this record.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from imapclient.exceptions import IMAPClientAbortError, IMAPClientError

from app.jobs.models import JobType
from app.jobs.store import (
    MAX_BATCH_SIZE,
    Approval,
    Change,
    ChangeState,
    Intent,
    MessageKey,
    Settlement,
)
from app.mail.clean import CLEAN_FOLDER
from app.mail.folders import discarding_folder_reason
from app.mail.message_ref import MessageRef, normalise_message_id
from executor import imap_ops
from executor import mirror_writes as mirror
from executor.context import JobContext, PermanentJobError
from executor.folder_lock import folder_lock

SEEN = "\\Seen"
T = TypeVar("T")
BATCH = 50  # messages per IMAP batch unless the payload's `batch_size` says (1..500)
RECONCILED = "found in the target by exact Message-ID after an interrupted attempt"
FOLDER_CHANGED = "the folder changed since the approval (UIDVALIDITY differs); not touched"


@dataclass(frozen=True)
class Target:
    """One approved message, as the approval row names it."""

    folder: str
    uidvalidity: int
    uid: int
    message_id: str | None = None
    subject: str = ""

    @classmethod
    def parse(cls, raw: Any) -> Target:
        try:
            ref = MessageRef.parse(raw)
            return cls(
                folder=ref.folder,
                uidvalidity=ref.uidvalidity,
                uid=ref.uid,
                message_id=normalise_message_id(raw.get("message_id")),
                subject=str(raw.get("subject") or ""),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise PermanentJobError(f"bad message identity: {raw!r}") from exc

    @property
    def key(self) -> MessageKey:
        return (self.folder, self.uidvalidity, self.uid)

    def ident(self) -> dict[str, Any]:
        return {
            "folder": self.folder,
            "uidvalidity": self.uidvalidity,
            "uid": self.uid,
            "message_id": self.message_id,
            "subject": self.subject,
        }


@dataclass(frozen=True)
class ApprovedWork:
    """What the approval row allows this job to do."""

    approval: Approval
    targets: list[Target]
    batch_size: int

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.approval.params)


async def approved_work(ctx: JobContext) -> ApprovedWork:
    """Read the approved set and params from the approvals row (never from the
    payload); fail the job when its payload is not a subset of it."""
    job = ctx.job
    if job.approval_id is None:
        raise PermanentJobError(f"a {job.job_type.value} job needs an approval")
    approval = await ctx.store.get_approval(job.approval_id)
    if approval is None:
        raise PermanentJobError(f"approval {job.approval_id} does not exist")
    if approval.action != job.job_type.value:
        raise PermanentJobError(
            f"approval {approval.approval_id} approved {approval.action}, not {job.job_type.value}"
        )
    approved = list({t.key: t for t in (Target.parse(m) for m in approval.messages)}.values())
    if not approved:
        raise PermanentJobError("the approval names no message: nothing to do")
    by_key = {t.key: t for t in approved}
    raw = job.payload.get("messages")
    if raw is None:
        targets = approved
    else:
        if not isinstance(raw, list) or not raw:
            raise PermanentJobError(
                "payload.messages is empty: an empty list never means every message"
            )
        asked = [Target.parse(m) for m in raw]
        extra = [t for t in asked if t.key not in by_key]
        if extra:
            raise PermanentJobError(
                f"the job names {len(extra)} message(s) its approval does not list "
                f"(first: {extra[0].folder}:{extra[0].uidvalidity}:{extra[0].uid}); nothing was changed"
            )
        targets = [by_key[k] for k in dict.fromkeys(t.key for t in asked)]
    return ApprovedWork(approval, targets, batch_size(job.payload))


def batch_size(payload: dict[str, Any]) -> int:
    raw = payload.get("batch_size")
    if isinstance(raw, bool) or not isinstance(raw, int):
        return BATCH
    return max(1, min(MAX_BATCH_SIZE, raw))


@dataclass(frozen=True)
class Plan:
    """What the job does to each message: flags to add and remove, and the folder
    it moves the message to (or, for a label that is a folder, copies it to)."""

    target: str | None
    add: tuple[str, ...] = ()
    remove: tuple[str, ...] = ()
    copy_only: bool = False

    @property
    def moves(self) -> bool:
        return self.target is not None and not self.copy_only


def plan_for(job_type: JobType, params: dict[str, Any]) -> Plan:
    if job_type is JobType.MARK_READ:
        return Plan(None, add=(SEEN,))
    if job_type is JobType.MARK_UNREAD:
        return Plan(None, remove=(SEEN,))
    if job_type is JobType.CLEAN:
        return Plan(str(params.get("target_folder") or CLEAN_FOLDER).strip(), add=(SEEN,))
    if job_type is JobType.MOVE:
        target = params.get("target_folder")
        if not isinstance(target, str) or not target.strip():
            raise PermanentJobError("the approval names no target folder for the move")
        return Plan(target.strip())
    if job_type is JobType.LABEL:
        label = params.get("label")
        if not isinstance(label, str) or not label.strip():
            raise PermanentJobError("the approval names no label")
        label = label.strip()
        if params.get("remove"):
            return Plan(None, remove=(label,))
        if imap_ops.is_keyword(label):
            return Plan(None, add=(label,))
        return Plan(label, copy_only=True)  # not a valid keyword: label as a folder (copy there)
    raise PermanentJobError(f"{job_type} is not a mutation")


def distinct_batches(
    items: Sequence[T], size: int, message_id: Callable[[T], str | None]
) -> list[list[T]]:
    """Batches of at most `size`, in order, no two items of one sharing a
    Message-ID: a move or copy whose answer was lost is found afterwards by its
    Message-ID above the target's UIDNEXT before that batch, and two copies of
    one Message-ID there could not be told apart (both were recorded failed and
    never put back). A twin goes to the next batch that holds none of its kin."""
    batches: list[list[T]] = []
    last: dict[str, int] = {}  # Message-ID -> the last batch holding it
    first_open = 0
    for item in items:
        mid = message_id(item)
        index = first_open if mid is None else max(first_open, last.get(mid, -1) + 1)
        while index < len(batches) and len(batches[index]) >= size:
            index += 1
        if index == len(batches):
            batches.append([])
        batches[index].append(item)
        if mid is not None:
            last[mid] = index
        while first_open < len(batches) and len(batches[first_open]) >= size:
            first_open += 1
    return batches


def by_folder(targets: Iterable[Target]) -> dict[str, list[Target]]:
    groups: dict[str, list[Target]] = defaultdict(list)
    for t in targets:
        groups[t.folder].append(t)
    return groups


def settlement(
    t: Target, state: ChangeState, reason: str | None = None, **after: Any
) -> Settlement:
    return Settlement(
        folder=t.folder,
        uidvalidity=t.uidvalidity,
        uid=t.uid,
        state=state,
        reason=reason,
        message_id=t.message_id,
        subject=t.subject,
        **after,
    )


def expected_flags(change: Change) -> tuple[str, ...]:
    """The flags a change leaves when it applied (for a reconciled message)."""
    before = change.flags_before or ()
    kept = [f for f in before if f not in change.flags_removed]
    return tuple(kept + [f for f in change.flags_added if f not in kept])


@dataclass
class BatchWrite:
    """One fenced transaction's worth: outcomes plus the mirror rows they move."""

    outcomes: list[Settlement] = field(default_factory=list)
    flag_updates: dict[int, tuple[tuple[str, ...], int | None]] = field(default_factory=dict)
    moves: list[tuple[int, int | None, tuple[str, ...]]] = field(default_factory=list)
    target_validity: int | None = None


class MutationRun:
    def __init__(self, ctx: JobContext) -> None:
        self.ctx = ctx
        self.job_type = ctx.job.job_type
        self.plan = Plan(None)
        self.batch = BATCH
        self.record: dict[MessageKey, Change] = {}
        self.settled: set[MessageKey] = set()
        self.created_folders: list[str] = []
        self.selected: tuple[str, int] | None = None
        self.move_capable = True
        self.total = 0

    async def run(self) -> dict[str, Any]:
        ctx = self.ctx
        work = await approved_work(ctx)
        self.plan = plan_for(self.job_type, work.params)
        self.batch = work.batch_size
        if self.plan.target and (reason := discarding_folder_reason(self.plan.target)):
            raise PermanentJobError(reason)
        self.record = {c.key: c for c in await ctx.store.job_changes(ctx.job.job_id)}
        targets = work.targets
        self.total = len(targets)
        self.settled = {
            t.key for t in targets if (c := self.record.get(t.key)) and c.state.is_final
        }
        await announce_start(
            ctx,
            self.job_type.value,
            self.total,
            self.settled,
            bool(self.record),
            approval_id=str(work.approval.approval_id),
        )
        client = await ctx.imap.ensure()
        self.move_capable = await ctx.imap.call(imap_ops.has_move, client)
        if self.plan.target:
            flags = await ctx.imap.call(imap_ops.special_use, client, self.plan.target)
            if reason := discarding_folder_reason(self.plan.target, flags):
                raise PermanentJobError(reason)
            if await ctx.imap.call(imap_ops.ensure_folder, client, self.plan.target):
                self.created_folders.append(self.plan.target)
        for folder, group in by_folder(targets).items():
            ctx.checkpoint()
            # The mirror fence of the folder (and of the folder moves go to): no
            # sync reads these folders and writes rows in between (folder_lock.py).
            fenced = [folder, self.plan.target] if self.plan.target else [folder]
            async with folder_lock(ctx, *fenced):
                await self.apply_folder(client, folder, group)
        return await self.summary()

    async def select(self, client: Any, folder: str) -> int:
        validity, _perm = await self.ctx.imap.call(imap_ops.select_rw, client, folder)
        self.selected = (folder, validity)
        return validity

    async def apply_folder(self, client: Any, folder: str, group: list[Target]) -> None:
        """Every approved message of one folder: settle what the record already
        decides, reconcile interrupted ones, then change the rest in batches."""
        todo = [t for t in group if t.key not in self.settled]
        if not todo:
            return
        try:
            validity = await self.select(client, folder)
        except IMAPClientAbortError:
            raise
        except IMAPClientError as exc:
            await self.unreachable(todo, f"folder {folder!r} cannot be opened: {exc}")
            return
        live = [t for t in todo if t.uidvalidity == validity]
        present = await self.ctx.imap.call(imap_ops.present_uids, client, [t.uid for t in live])
        write = BatchWrite()
        redo: list[Target] = []
        lookups: list[Target] = []
        for t in todo:
            change = self.record.get(t.key)
            here = t.uidvalidity == validity and t.uid in present
            if change is None:
                if t.uidvalidity != validity:
                    write.outcomes.append(
                        settlement(
                            t,
                            ChangeState.SKIPPED,
                            FOLDER_CHANGED,
                        )
                    )
                elif not here:
                    write.outcomes.append(
                        settlement(t, ChangeState.SKIPPED, "no longer on the server")
                    )
                else:
                    redo.append(t)
            elif self.plan.target and (not here or self.plan.copy_only or not self.move_capable):
                lookups.append(t)  # an interrupted move or copy may have happened
            elif here:
                redo.append(t)  # interrupted flag change: STORE is idempotent
            else:
                write.outcomes.append(
                    settlement(
                        t,
                        ChangeState.FAILED,
                        "it vanished from its folder while being changed; not known whether the change applied",
                    )
                )
        if lookups:
            redo += await self.reconcile(client, folder, validity, present, lookups, write)
        if write.outcomes:
            await self.commit(folder, validity, write, f"{folder}: resumed")
        for batch in distinct_batches(redo, self.batch, lambda t: t.message_id):
            await self.apply_batch(client, folder, validity, batch)

    async def reconcile(
        self,
        client: Any,
        folder: str,
        validity: int,
        present: set[int],
        lookups: list[Target],
        write: BatchWrite,
    ) -> list[Target]:
        """Interrupted moves and copies: find each message's copy in the target by
        exact Message-ID. Returns those still to be done (no copy there yet)."""
        ctx = self.ctx
        target = self.plan.target
        assert target is not None
        ctx.checkpoint()
        target_validity = await self.select(client, target)
        redo: list[Target] = []
        found: dict[MessageKey, int] = {}
        for t in lookups:
            change = self.record[t.key]
            here = t.uidvalidity == validity and t.uid in present
            mid = change.message_id or t.message_id
            if not mid:
                if here:
                    redo.append(t)
                else:
                    write.outcomes.append(
                        settlement(
                            t,
                            ChangeState.FAILED,
                            f"it left {folder} during an interrupted move and has no Message-ID, "
                            f"so its copy in {target} cannot be found exactly; not guessed",
                        )
                    )
                continue
            floor = change.uid_floor if change.uidvalidity_after == target_validity else None
            hits = await ctx.imap.call(imap_ops.find_exact_message_id, client, mid, floor=floor)
            if len(hits) == 1:
                found[t.key] = hits[0]
            elif not hits and here:
                redo.append(t)
            else:
                write.outcomes.append(
                    settlement(
                        t,
                        ChangeState.FAILED,
                        (
                            f"{len(hits)} messages in {target} carry its Message-ID; not guessed"
                            if hits
                            else f"it left {folder} during an interrupted move and is not in {target}"
                        ),
                    )
                )
        leftovers = [
            t.uid
            for t in lookups
            if t.key in found and self.plan.moves and t.uidvalidity == validity and t.uid in present
        ]
        await self.select(client, folder)
        if leftovers:
            # COPY + \Deleted fallback interrupted after the copy: finish it.
            await ctx.imap.call(imap_ops.expunge_copied, client, leftovers)
        write.target_validity = target_validity
        for t in lookups:
            if t.key not in found:
                continue
            change = self.record[t.key]
            flags = expected_flags(change)
            write.outcomes.append(
                settlement(
                    t,
                    ChangeState.APPLIED,
                    RECONCILED,
                    flags_after=flags,
                    folder_after=target,
                    uidvalidity_after=target_validity,
                    uid_after=found[t.key],
                )
            )
            if self.plan.moves:
                write.moves.append((t.uid, found[t.key], flags))
        return redo

    async def apply_batch(
        self, client: Any, folder: str, validity: int, batch: list[Target]
    ) -> None:
        """One micro-batch: write ahead, change it on the server, record the outcome
        with the mirror update and the progress event."""
        ctx = self.ctx
        plan = self.plan
        ctx.checkpoint()
        if self.selected != (folder, validity) and await self.select(client, folder) != validity:
            await self.unreachable(batch, f"folder {folder!r} changed (UIDVALIDITY) mid-job")
            return
        uids = [t.uid for t in batch]
        state = await ctx.imap.call(imap_ops.fetch_state, client, uids)
        here = [t for t in batch if t.uid in state]
        write = BatchWrite()
        for t in batch:
            if t.uid not in state:
                known = t.key in self.record
                write.outcomes.append(
                    settlement(
                        t,
                        ChangeState.FAILED if known else ChangeState.SKIPPED,
                        "no longer on the server",
                    )
                )
        target_validity = floor = None
        if plan.target:
            target_validity, floor = await ctx.imap.call(
                imap_ops.folder_uidnext, client, plan.target
            )
        intents = []
        for t in here:
            flags, mid = state[t.uid]
            intents.append(
                Intent(
                    folder=folder,
                    uidvalidity=validity,
                    uid=t.uid,
                    message_id=mid or t.message_id,
                    subject=t.subject,
                    flags_before=flags,
                    flags_added=tuple(f for f in plan.add if f not in flags),
                    flags_removed=tuple(f for f in plan.remove if f in flags),
                    folder_after=plan.target or folder,
                    uidvalidity_after=target_validity if plan.target else validity,
                    uid_floor=floor,
                )
            )
        if intents:
            async with ctx.store.fenced_transaction(ctx.lease) as conn:
                await ctx.store.record_intents(conn, ctx.lease, intents)
        if not here:
            await self.commit(folder, validity, write, f"{folder}: 0 of {len(batch)} changed")
            return
        here_uids = [t.uid for t in here]
        after: dict[int, tuple[str, ...]] = {}
        mapping: dict[int, int] = {}
        moved_validity: int | None = None
        try:
            if plan.add:
                after.update(
                    await ctx.imap.call(imap_ops.store_flags, client, here_uids, plan.add, add=True)
                )
            if plan.remove:
                after.update(
                    await ctx.imap.call(
                        imap_ops.store_flags, client, here_uids, plan.remove, add=False
                    )
                )
            if plan.copy_only and plan.target:
                moved_validity, mapping = await ctx.imap.call(
                    imap_ops.copy_uids, client, here_uids, plan.target
                )
            elif plan.target:
                moved_validity, mapping = await ctx.imap.call(
                    imap_ops.move_uids, client, here_uids, plan.target
                )
                self.selected = (folder, validity)
        except IMAPClientAbortError:
            raise
        except IMAPClientError as exc:
            # A STORE may have applied before the MOVE failed: the intended rows
            # keep the flags from before, so undo still restores them.
            for t in here:
                write.outcomes.append(
                    settlement(
                        t,
                        ChangeState.FAILED,
                        f"server refused: {exc}",
                        flags_after=after.get(t.uid),
                    )
                )
            await self.commit(folder, validity, write, f"{folder}: the server refused a batch")
            return
        write.target_validity = moved_validity or target_validity
        for t in here:
            new_flags = after.get(t.uid, state[t.uid][0])
            ok = all(f in new_flags for f in plan.add) and not any(
                f in new_flags for f in plan.remove
            )
            if not ok and not plan.moves:
                write.outcomes.append(
                    settlement(
                        t,
                        ChangeState.FAILED,
                        "the server did not apply the change",
                        flags_after=new_flags,
                    )
                )
                continue
            if plan.target:
                write.outcomes.append(
                    settlement(
                        t,
                        ChangeState.APPLIED,
                        flags_after=new_flags,
                        folder_after=plan.target,
                        uidvalidity_after=write.target_validity,
                        uid_after=mapping.get(t.uid),
                    )
                )
                if plan.moves:
                    write.moves.append((t.uid, mapping.get(t.uid), new_flags))
            else:
                write.outcomes.append(
                    settlement(
                        t,
                        ChangeState.APPLIED,
                        flags_after=new_flags,
                        folder_after=folder,
                        uidvalidity_after=validity,
                        uid_after=t.uid,
                    )
                )
                write.flag_updates[t.uid] = (new_flags, None)
        applied = sum(1 for o in write.outcomes if o.state is ChangeState.APPLIED)
        await self.commit(folder, validity, write, f"{folder}: {applied} of {len(batch)} changed")

    async def commit(self, folder: str, validity: int, write: BatchWrite, message: str) -> None:
        """Outcomes, mirror rows and the progress event: one fenced transaction."""
        ctx = self.ctx
        keys = {(o.folder, o.uidvalidity, o.uid) for o in write.outcomes}
        settled = self.settled | keys
        applied = [o for o in write.outcomes if o.state is ChangeState.APPLIED]
        async with ctx.store.fenced_transaction(ctx.lease) as conn:
            await ctx.store.settle_changes(conn, ctx.lease, write.outcomes)
            if write.flag_updates:
                await mirror.update_flags(conn, folder, validity, write.flag_updates)
            if write.moves and self.plan.target:
                await mirror.move_rows(
                    conn, folder, validity, write.moves, self.plan.target, write.target_validity
                )
            await ctx.progress(
                message,
                processed=len(settled),
                data={
                    "phase": "apply",
                    "folder": folder,
                    "items_found": len(applied),
                    "uids": [o.uid for o in applied],
                    "has_more": len(settled) < self.total,
                },
                conn=conn,
            )
        self.settled = settled

    async def unreachable(self, todo: Sequence[Target], reason: str) -> None:
        """A folder that cannot be opened: untouched messages are skipped; ones an
        earlier attempt was changing are reported (undo still looks for them)."""
        write = BatchWrite()
        for t in todo:
            state = ChangeState.FAILED if t.key in self.record else ChangeState.SKIPPED
            write.outcomes.append(settlement(t, state, reason))
        async with self.ctx.store.fenced_transaction(self.ctx.lease) as conn:
            await self.ctx.store.settle_changes(conn, self.ctx.lease, write.outcomes)
        self.settled |= {t.key for t in todo}

    async def summary(self) -> dict[str, Any]:
        """The job's result, read back from its change record."""
        return await change_summary(self.ctx, self.plan.target, self.created_folders)


async def announce_start(
    ctx: JobContext,
    what: str,
    total: int,
    settled: set[Any],
    resumed: bool,
    *,
    noun: str = "approved message(s)",
    **data: Any,
) -> None:
    """The first event of every change job (and undo): what it will do and what
    earlier attempts already settled, so a resumed job's count starts there."""
    await ctx.progress(
        f"{what}: {total} {noun}" + (f", {len(settled)} already done" if settled else ""),
        processed=len(settled),
        total_estimate=total,
        data={"phase": "starting", "has_more": len(settled) < total, "resumed": resumed, **data},
    )


async def change_summary(
    ctx: JobContext, target_folder: str | None, created_folders: Sequence[str] = ()
) -> dict[str, Any]:
    """The final event's summary, built from the change record (the cards and
    undo read the record itself; this is what the live stream shows)."""
    job_type = ctx.job.job_type
    changes = await ctx.store.job_changes(ctx.job.job_id)
    applied = [c for c in changes if c.state is ChangeState.APPLIED]
    failed = [c for c in changes if c.state in (ChangeState.FAILED, ChangeState.INTENDED)]
    skipped = [c for c in changes if c.state is ChangeState.SKIPPED]
    if job_type is JobType.CLEAN:
        description = f"{len(applied)} message(s) marked read and moved to {target_folder}"
    elif job_type is JobType.UNDO:
        description = f"restored {len(applied)} message(s)"
    else:
        description = f"{job_type.value.replace('_', ' ')}: {len(applied)} message(s)"
    result: dict[str, Any] = {
        "action": "archive" if job_type is JobType.CLEAN else job_type.value,
        "description": description,
        "applied": len(applied),
        "uids": [c.uid for c in applied],
        "skipped": [_brief(c) for c in skipped],
        "failed": [_brief(c) for c in failed],
        "created_folders": list(created_folders),
        "record": "imap_job_changes",
    }
    if target_folder:
        result["target_folder"] = target_folder
    if failed and not applied:
        raise PermanentJobError(
            f"no message could be changed ({len(failed)} failed): {failed[0].reason}"
        )
    return result


def _brief(change: Change) -> dict[str, Any]:
    return {
        "folder": change.folder,
        "uidvalidity": change.uidvalidity,
        "uid": change.uid,
        "subject": change.subject,
        "reason": change.reason or "",
    }


async def handle_mutation(ctx: JobContext) -> dict[str, Any]:
    return await MutationRun(ctx).run()
