"""Approved mailbox changes: mark read/unread, move, label, clean, and undo.

Every job carries the exact messages the person approved (folder,
UIDVALIDITY, UID). A folder whose UIDVALIDITY changed since the approval is
not touched; messages that vanished are reported and skipped; a per-message
failure is reported and never counted as done. Each change is recorded in the
job's summary (`changes`) so `undo` can put things back.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from imapclient.exceptions import IMAPClientError

from app.jobs.models import JobStatus, JobType
from app.mail.clean import CLEAN_FOLDER
from executor import imap_ops
from executor import mirror_writes as mirror
from executor.context import JobContext, PermanentJobError

SEEN = "\\Seen"
BATCH = 50


@dataclass(frozen=True)
class Target:
    """One approved message, as the approval named it."""

    folder: str
    uidvalidity: int
    uid: int
    message_id: str | None = None
    subject: str = ""

    @classmethod
    def parse(cls, raw: Any) -> Target:
        try:
            return cls(
                folder=str(raw["folder"]),
                uidvalidity=int(raw["uidvalidity"]),
                uid=int(raw["uid"]),
                message_id=raw.get("message_id"),
                subject=str(raw.get("subject") or ""),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise PermanentJobError(f"bad message identity in payload: {raw!r}") from exc

    def ident(self) -> dict[str, Any]:
        return {
            "folder": self.folder,
            "uidvalidity": self.uidvalidity,
            "uid": self.uid,
            "message_id": self.message_id,
            "subject": self.subject,
        }


@dataclass
class Outcome:
    changes: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)
    created_folders: list[str] = field(default_factory=list)

    def skip(self, target: Target, reason: str) -> None:
        self.skipped.append({**target.ident(), "reason": reason})

    def fail(self, target: Target, reason: str) -> None:
        self.failed.append({**target.ident(), "reason": reason})


def _targets(payload: dict[str, Any]) -> list[Target]:
    raw = payload.get("messages")
    if not isinstance(raw, list) or not raw:
        raise PermanentJobError("payload.messages must list the approved messages")
    return [Target.parse(m) for m in raw]


def _by_folder(targets: Sequence[Target]) -> dict[str, list[Target]]:
    groups: dict[str, list[Target]] = defaultdict(list)
    for t in targets:
        groups[t.folder].append(t)
    return groups


class MutationRun:
    def __init__(self, ctx: JobContext) -> None:
        self.ctx = ctx
        self.job_type = ctx.job.job_type
        self.payload = ctx.job.payload
        self.out = Outcome()
        self.done = 0

    # -- what each job type does to one batch in its selected folder --------

    def plan(self) -> tuple[str | None, list[str], list[str]]:
        """(target folder or None, flags to add, flags to remove)."""
        jt = self.job_type
        if jt is JobType.MARK_READ:
            return None, [SEEN], []
        if jt is JobType.MARK_UNREAD:
            return None, [], [SEEN]
        if jt is JobType.CLEAN:
            return str(self.payload.get("target_folder") or CLEAN_FOLDER), [SEEN], []
        if jt is JobType.MOVE:
            target = self.payload.get("target_folder")
            if not isinstance(target, str) or not target.strip():
                raise PermanentJobError("payload.target_folder is required for move")
            return target.strip(), [], []
        if jt is JobType.LABEL:
            label = self.payload.get("label")
            if not isinstance(label, str) or not label.strip():
                raise PermanentJobError("payload.label is required for label")
            label = label.strip()
            if self.payload.get("remove"):
                return None, [], [label]
            if imap_ops.is_keyword(label):
                return None, [label], []
            return label, [], []  # not a valid keyword: label as a folder (copy there)
        raise PermanentJobError(f"{jt} is not a mutation")

    async def run(self) -> dict[str, Any]:
        ctx = self.ctx
        targets = _targets(self.payload)
        target_folder, add, remove = self.plan()
        total = len(targets)
        await ctx.progress(
            f"{self.job_type.value}: {total} approved message(s)",
            processed=0,
            total_estimate=total,
            data={
                "phase": "starting",
                "has_more": total > 0,
                "approval_id": str(ctx.job.approval_id),
            },
        )
        client = await ctx.imap.ensure()
        if target_folder and await ctx.imap.call(imap_ops.ensure_folder, client, target_folder):
            self.out.created_folders.append(target_folder)
        copy_only = self.job_type is JobType.LABEL and target_folder is not None
        for folder, group in _by_folder(targets).items():
            ctx.checkpoint()
            await self.apply_folder(client, folder, group, target_folder, add, remove, copy_only)
        return self.summary(target_folder)

    async def apply_folder(
        self,
        client: Any,
        folder: str,
        group: list[Target],
        target: str | None,
        add: list[str],
        remove: list[str],
        copy_only: bool,
    ) -> None:
        ctx = self.ctx
        try:
            validity, _perm = await ctx.imap.call(imap_ops.select_rw, client, folder)
        except IMAPClientError as exc:
            for t in group:
                self.out.skip(t, f"folder {folder!r} is gone: {exc}")
            await self._progress(folder, len(group), 0)
            return
        stale = [t for t in group if t.uidvalidity != validity]
        for t in stale:
            self.out.skip(
                t, "the folder changed since the approval (UIDVALIDITY differs); not touched"
            )
        live = [t for t in group if t.uidvalidity == validity]
        present = await ctx.imap.call(imap_ops.present_uids, client, [t.uid for t in live])
        for t in live:
            if t.uid not in present:
                self.out.skip(t, "no longer on the server")
        todo = [t for t in live if t.uid in present]
        if stale or len(todo) < len(live):
            await self._progress(folder, len(group) - len(todo), 0)
        for start in range(0, len(todo), BATCH):
            batch = todo[start : start + BATCH]
            applied = await self.apply_batch(
                client, folder, validity, batch, target, add, remove, copy_only
            )
            await self._progress(folder, len(batch), applied, uids=[t.uid for t in batch])
            ctx.checkpoint()

    async def apply_batch(
        self,
        client: Any,
        folder: str,
        validity: int,
        batch: list[Target],
        target: str | None,
        add: list[str],
        remove: list[str],
        copy_only: bool,
    ) -> int:
        ctx = self.ctx
        uids = [t.uid for t in batch]
        before = await ctx.imap.call(imap_ops.current_flags, client, uids)
        try:
            after = dict(before)
            if add:
                after.update(await ctx.imap.call(imap_ops.store_flags, client, uids, add, add=True))
            if remove:
                after.update(
                    await ctx.imap.call(imap_ops.store_flags, client, uids, remove, add=False)
                )
            moved_validity: int | None = None
            mapping: dict[int, int] = {}
            if target and copy_only:
                response = await ctx.imap.call(client.copy, uids, target)
                moved_validity, mapping = imap_ops.parse_copyuid([response] if response else [])
            elif target:
                moved_validity, mapping = await ctx.imap.call(
                    imap_ops.move_uids, client, uids, target
                )
        except IMAPClientError as exc:
            for t in batch:
                self.out.fail(t, f"server refused: {exc}")
            return 0
        applied = 0
        flag_updates: dict[int, tuple[tuple[str, ...], int | None]] = {}
        moves: list[tuple[int, int | None, tuple[str, ...]]] = []
        for t in batch:
            new_flags = after.get(t.uid, before.get(t.uid, ()))
            ok = all(f in new_flags for f in add) and not any(f in new_flags for f in remove)
            if not ok and not (target and not copy_only):
                self.out.fail(t, "the server did not apply the change")
                continue
            old = before.get(t.uid, ())
            change: dict[str, Any] = {
                **t.ident(),
                "was_seen": SEEN in old,
                "flags_before": list(old),
                "flags_after": list(new_flags),
                "added": [f for f in add if f not in old],
                "removed": [f for f in remove if f in old],
            }
            if target:
                change["moved_to" if not copy_only else "copied_to"] = {
                    "folder": target,
                    "uidvalidity": moved_validity,
                    "uid": mapping.get(t.uid),
                }
                moves.append((t.uid, mapping.get(t.uid), tuple(new_flags)))
            else:
                flag_updates[t.uid] = (tuple(new_flags), None)
            self.out.changes.append(change)
            applied += 1
        async with ctx.store.fenced_transaction(ctx.lease) as conn:
            if flag_updates:
                await mirror.update_flags(conn, folder, validity, flag_updates)
            if moves and not copy_only:
                await mirror.move_rows(conn, folder, validity, moves, target or "", moved_validity)
        return applied

    async def _progress(
        self, folder: str, count: int, applied: int, uids: list[int] | None = None
    ) -> None:
        self.done += count
        total = self.ctx.total_estimate or 0
        await self.ctx.progress(
            f"{folder}: {applied} of {count} changed",
            processed=self.done,
            data={
                "phase": "apply",
                "folder": folder,
                "items_found": applied,
                "uids": uids or [],
                "has_more": self.done < total,
                "skipped": len(self.out.skipped),
                "failed": len(self.out.failed),
            },
        )

    def summary(self, target_folder: str | None) -> dict[str, Any]:
        action = "archive" if self.job_type is JobType.CLEAN else self.job_type.value
        applied = len(self.out.changes)
        description = self.payload.get("description") or (
            f"{applied} message(s) marked read and moved to {target_folder}"
            if self.job_type is JobType.CLEAN
            else f"{self.job_type.value.replace('_', ' ')}: {applied} message(s)"
        )
        result: dict[str, Any] = {
            "action": action,
            "description": description,
            "applied": applied,
            "uids": [c["uid"] for c in self.out.changes],
            "changes": self.out.changes,
            "skipped": self.out.skipped,
            "failed": self.out.failed,
            "created_folders": self.out.created_folders,
        }
        if target_folder:
            result["target_folder"] = target_folder
        if self.out.failed and not self.out.changes:
            raise PermanentJobError(
                f"no message could be changed ({len(self.out.failed)} failed): {self.out.failed[0]['reason']}"
            )
        return result


async def handle_mutation(ctx: JobContext) -> dict[str, Any]:
    return await MutationRun(ctx).run()


async def handle_undo(ctx: JobContext) -> dict[str, Any]:
    """Put back what an earlier mutation job changed, as recorded in its summary."""
    original_id = ctx.job.payload.get("undo_of")
    if not original_id:
        raise PermanentJobError("payload.undo_of must name the job to undo")
    original = await ctx.store.get(original_id)
    if original is None or original.status is not JobStatus.COMPLETED:
        raise PermanentJobError(f"job {original_id} is not a completed job that can be undone")
    events = await ctx.store.events_after(original.job_id, 0, limit=100_000)
    summary = next(
        (
            e.data.get("summary")
            for e in reversed(events)
            if isinstance(e.data.get("summary"), dict)
        ),
        None,
    )
    changes = (summary or {}).get("changes") or []
    approved = {(m.get("folder"), m.get("uid")) for m in ctx.job.payload.get("messages") or []}
    changes = [c for c in changes if not approved or (c["folder"], c["uid"]) in approved]
    total = len(changes)
    await ctx.progress(
        f"undo: {total} message(s) to restore",
        processed=0,
        total_estimate=total,
        data={"phase": "starting", "has_more": total > 0, "undo_of": str(original.job_id)},
    )
    client = await ctx.imap.ensure()
    restored: list[dict[str, Any]] = []
    problems: list[dict[str, Any]] = []
    for i, change in enumerate(changes, 1):
        ctx.checkpoint()
        try:
            where = await ctx.imap.call(_restore_one, client, change)
            restored.append({**change, "restored_to": where["to"]})
            async with ctx.store.fenced_transaction(ctx.lease) as conn:
                src, dst = where["from"], where["to"]
                if src["folder"] != dst["folder"]:
                    await mirror.move_rows(
                        conn,
                        src["folder"],
                        src["uidvalidity"],
                        [(src["uid"], dst["uid"], where["flags"])],
                        dst["folder"],
                        dst["uidvalidity"],
                    )
                else:
                    await mirror.update_flags(
                        conn,
                        dst["folder"],
                        dst["uidvalidity"],
                        {dst["uid"]: (where["flags"], None)},
                    )
        except (IMAPClientError, LookupError) as exc:
            problems.append(
                {"uid": change.get("uid"), "subject": change.get("subject"), "reason": str(exc)}
            )
        await ctx.progress(
            f"restored {len(restored)} of {total}",
            processed=i,
            data={
                "phase": "apply",
                "items_found": len(restored),
                "has_more": i < total,
                "uids": [change.get("uid")],
            },
        )
    if problems and not restored:
        raise PermanentJobError(f"nothing could be restored: {problems[0]['reason']}")
    return {
        "action": "undo",
        "undo_of": str(original.job_id),
        "applied": len(restored),
        "uids": [r["uid"] for r in restored],
        "restored": restored,
        "failed": problems,
        "description": f"restored {len(restored)} message(s)",
    }


def _restore_one(client: Any, change: dict[str, Any]) -> dict[str, Any]:
    """Blocking: move one message back and restore its flags."""
    folder, uid = change["folder"], int(change["uid"])
    moved = change.get("moved_to")
    if moved:
        there_validity, _ = imap_ops.select_rw(client, moved["folder"])
        uid_there = moved.get("uid")
        if (
            uid_there is None
            or there_validity != moved.get("uidvalidity")
            or not imap_ops.present_uids(client, [int(uid_there)])
        ):
            found = imap_ops.find_by_message_id(client, change.get("message_id") or "")
            if not found:
                raise LookupError(
                    f"message {change.get('subject')!r} is no longer in {moved['folder']}"
                )
            uid_there = found[-1]
        source = {"folder": moved["folder"], "uidvalidity": there_validity, "uid": int(uid_there)}
        _, mapping = imap_ops.move_uids(client, [int(uid_there)], folder)
        validity, _ = imap_ops.select_rw(client, folder)
        new_uid = mapping.get(int(uid_there))
        if new_uid is None:
            found = imap_ops.find_by_message_id(client, change.get("message_id") or "")
            if not found:
                raise LookupError(
                    f"moved {change.get('subject')!r} back but cannot find it in {folder}"
                )
            new_uid = found[-1]
    else:
        validity, _ = imap_ops.select_rw(client, folder)
        new_uid = uid
        source = {"folder": folder, "uidvalidity": validity, "uid": uid}
        if validity != change.get("uidvalidity") or not imap_ops.present_uids(client, [uid]):
            raise LookupError(f"message {change.get('subject')!r} is no longer in {folder}")
    if change.get("added"):
        client.remove_flags([new_uid], list(change["added"]))
    if change.get("removed"):
        client.add_flags([new_uid], list(change["removed"]))
    flags = imap_ops.current_flags(client, [new_uid]).get(new_uid, ())
    return {
        "from": source,
        "to": {"folder": folder, "uidvalidity": validity, "uid": new_uid},
        "flags": flags,
    }
