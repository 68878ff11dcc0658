"""`clean`, `move` and `label` on Gmail: label changes (X-GM-LABELS), never MOVE or COPY.

On Gmail a folder is a label (executor/gmail.py), so:

* clean = +`Secretary/Auto-Cleaned`, -`\\Inbox`, +`\\Seen` (SPEC §5);
* move  = +the target label, -the label of the folder it is in (INBOX:
  `\\Inbox`); a move to "archive" (All Mail) only removes that label;
* label = +label (or -label with `remove`).

Nothing is ever moved to Trash or Spam (those labels are refused), and
removing a label never deletes mail: the message stays in All Mail.

The approval names each message as (folder, UIDVALIDITY, UID). The job reads
its X-GM-MSGID there once, then works in All Mail, where the message stays
whatever its labels: on Gmail, removing `\\Inbox` takes it out of INBOX and
its INBOX UID is gone for good. The change record (`imap_job_changes`) is
written as for every mutation: 'intended' before the STORE, with the flags
*and labels* the server showed and the X-GM-MSGID; 'applied' after it with
what the server then shows, in the same fenced transaction as the mirror
update and the progress event. A retry finds recorded messages again by
X-GM-MSGID and repeats the STORE (adding or removing a label twice is the same
as once); what the first attempt saw stays the record. Undo
(executor/handlers/gmail_undo.py) reads only that record.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from imapclient.exceptions import IMAPClientAbortError, IMAPClientError

from app.jobs.models import JobType
from app.jobs.store import Change, ChangeState, Intent, MessageKey, Settlement
from app.mail.clean import CLEAN_FOLDER
from app.mail.folders import discarding_label_reason
from executor import gmail
from executor import mirror_writes as mirror
from executor.context import JobContext, PermanentJobError
from executor.folder_lock import folder_lock
from executor.handlers.mutations import (
    FOLDER_CHANGED,
    ApprovedWork,
    Target,
    announce_start,
    by_folder,
    change_summary,
    settlement,
)

NO_ALL_MAIL = (
    "Gmail's All Mail folder is not shown over IMAP, and Piper changes and finds Gmail "
    "messages there: turn on 'Show in IMAP' for All Mail in Gmail's settings (Labels)"
)
NOT_IN_ALL_MAIL = (
    "not found in All Mail by its X-GM-MSGID (deleted, or in Spam or Trash); not guessed"
)


def has(labels: Iterable[str], label: str) -> bool:
    """Label membership; Gmail's own labels (`\\Inbox`) compare case-insensitively."""
    if label.startswith("\\"):
        return label.lower() in {x.lower() for x in labels}
    return label in set(labels)


def applied_as_planned(state: gmail.GmState, plan: gmail.LabelPlan) -> bool:
    return (
        all(has(state.labels, lbl) for lbl in plan.add_labels)
        and not any(has(state.labels, lbl) for lbl in plan.remove_labels)
        and all(f in state.flags for f in plan.add_flags)
        and not any(f in state.flags for f in plan.remove_flags)
    )


def plan_for_folder(
    job_type: JobType, params: dict[str, Any], folders: gmail.Folders, source: str
) -> gmail.LabelPlan:
    """What the job does to the messages of one folder (a move depends on where from)."""
    if job_type is JobType.CLEAN:
        plan = gmail.clean_plan(str(params.get("target_folder") or CLEAN_FOLDER).strip())
    elif job_type is JobType.MOVE:
        target = params.get("target_folder")
        if not isinstance(target, str) or not target.strip():
            raise PermanentJobError("the approval names no target folder for the move")
        plan = gmail.move_plan(target.strip(), folders.label_of(source), folders.all_mail)
    elif job_type is JobType.LABEL:
        label = params.get("label")
        if not isinstance(label, str) or not label.strip():
            raise PermanentJobError("the approval names no label")
        label = label.strip()
        plan = (
            gmail.LabelPlan(remove_labels=(label,))
            if params.get("remove")
            else gmail.LabelPlan(add_labels=(label,))
        )
    else:
        raise PermanentJobError(f"{job_type.value} is not a Gmail label change")
    for label in plan.add_labels:
        if reason := discarding_label_reason(label):
            raise PermanentJobError(reason)
    return plan


def gone_folders(labels_removed: Sequence[str]) -> list[str]:
    """The folders Gmail takes a message out of when these labels go."""
    return [gmail.folder_of_label(lbl) for lbl in labels_removed]


@dataclass
class LabelWrite:
    """One fenced transaction: outcomes, the mirror's new labels, dropped copies."""

    outcomes: list[Settlement] = field(default_factory=list)
    relabels: list[tuple[int, tuple[str, ...], tuple[str, ...]]] = field(default_factory=list)
    gone_from: dict[int, list[str]] = field(default_factory=dict)


async def commit_labels(
    ctx: JobContext, settled: set[MessageKey], total: int, write: LabelWrite, message: str
) -> set[MessageKey]:
    """Outcomes, mirror rows and the progress event: one fenced transaction.
    Returns the settled keys after it."""
    now = settled | {(o.folder, o.uidvalidity, o.uid) for o in write.outcomes}
    applied = [o for o in write.outcomes if o.state is ChangeState.APPLIED]
    async with ctx.store.fenced_transaction(ctx.lease) as conn:
        await ctx.store.settle_changes(conn, ctx.lease, write.outcomes)
        await mirror.relabel_gmail(conn, write.relabels, write.gone_from)
        await ctx.progress(
            message,
            processed=len(now),
            data={
                "phase": "apply",
                "items_found": len(applied),
                "uids": [o.uid for o in applied],
                "has_more": len(now) < total,
                "gmail": True,
            },
            conn=conn,
        )
    return now


async def mirrored_folders(ctx: JobContext) -> list[str]:
    async with ctx.store.pool.connection() as conn:
        return list(await mirror.load_cursors(conn))


async def all_mail_of(ctx: JobContext, client: Any) -> tuple[gmail.Folders, str]:
    folders = await ctx.imap.call(gmail.Folders.listed, client)
    all_mail = folders.all_mail
    if all_mail is None:
        raise PermanentJobError(NO_ALL_MAIL)
    return folders, all_mail


class GmailLabelRun:
    def __init__(self, ctx: JobContext, work: ApprovedWork) -> None:
        self.ctx = ctx
        self.work = work
        self.job_type = ctx.job.job_type
        self.record: dict[MessageKey, Change] = {}
        self.settled: set[MessageKey] = set()
        self.total = len(work.targets)

    async def run(self) -> dict[str, Any]:
        ctx = self.ctx
        params = self.work.params
        client = await ctx.imap.ensure()
        folders, all_mail = await all_mail_of(ctx, client)
        plans = {
            f: plan_for_folder(self.job_type, params, folders, f)
            for f in by_folder(self.work.targets)
        }
        self.record = {c.key: c for c in await ctx.store.job_changes(ctx.job.job_id)}
        self.settled = {
            t.key for t in self.work.targets if (c := self.record.get(t.key)) and c.state.is_final
        }
        await announce_start(
            ctx,
            f"{self.job_type.value} (Gmail labels)",
            self.total,
            self.settled,
            bool(self.record),
            approval_id=str(self.work.approval.approval_id),
            gmail=True,
        )
        mirrored = await mirrored_folders(ctx)
        for folder, group in by_folder(self.work.targets).items():
            ctx.checkpoint()
            # Every mirrored copy of these messages may change: fence them all.
            async with folder_lock(ctx, folder, *mirrored):
                await self.apply_folder(client, folder, group, plans[folder], all_mail)
        target = (
            str(params.get("target_folder") or CLEAN_FOLDER)
            if self.job_type is JobType.CLEAN
            else None
        )
        summary = await change_summary(ctx, target)
        summary["gmail"] = True
        if self.job_type is JobType.CLEAN:
            summary["description"] = (
                f"{summary['applied']} message(s) marked read, labelled {target} "
                "and archived (out of the Inbox, still in All Mail)"
            )
        return summary

    async def apply_folder(
        self,
        client: Any,
        folder: str,
        group: list[Target],
        plan: gmail.LabelPlan,
        all_mail: str,
    ) -> None:
        """Learn each new message's X-GM-MSGID where the approval names it; recorded
        ones are known already. Then change them in All Mail, batch by batch."""
        ctx = self.ctx
        todo = [t for t in group if t.key not in self.settled]
        if not todo:
            return
        known: dict[MessageKey, int] = {}
        mids: dict[MessageKey, str | None] = {}
        fresh: list[Target] = []
        for t in todo:
            change = self.record.get(t.key)
            if change is not None and change.gm_msgid is not None:
                known[t.key] = change.gm_msgid
                mids[t.key] = change.message_id
            else:
                fresh.append(t)
        write = LabelWrite()
        if fresh:
            try:
                validity = await ctx.imap.call(gmail.examine, client, folder)
            except IMAPClientAbortError:
                raise
            except IMAPClientError as exc:
                validity = None
                reason = f"folder {folder!r} cannot be opened: {exc}"
                write.outcomes += [settlement(t, ChangeState.SKIPPED, reason) for t in fresh]
            if validity is not None:
                live = [t for t in fresh if t.uidvalidity == validity]
                state = await ctx.imap.call(
                    gmail.fetch_gm_state, client, [t.uid for t in live], with_message_id=True
                )
                for t in fresh:
                    if t.uidvalidity != validity:
                        write.outcomes.append(
                            settlement(
                                t,
                                ChangeState.SKIPPED,
                                FOLDER_CHANGED,
                            )
                        )
                    elif t.uid not in state:
                        write.outcomes.append(
                            settlement(t, ChangeState.SKIPPED, "no longer on the server")
                        )
                    else:
                        known[t.key] = state[t.uid].msgid
                        mids[t.key] = state[t.uid].message_id or t.message_id
        if write.outcomes:
            self.settled = await commit_labels(
                ctx, self.settled, self.total, write, f"{folder}: not changed"
            )
        items = [t for t in todo if t.key in known]
        batch_size = self.work.batch_size
        for start in range(0, len(items), batch_size):
            await self.apply_batch(
                client, folder, items[start : start + batch_size], known, mids, plan, all_mail
            )

    async def apply_batch(
        self,
        client: Any,
        folder: str,
        batch: list[Target],
        known: dict[MessageKey, int],
        mids: dict[MessageKey, str | None],
        plan: gmail.LabelPlan,
        all_mail: str,
    ) -> None:
        """Write ahead (flags and labels before), STORE in All Mail, record."""
        ctx = self.ctx
        ctx.checkpoint()
        am_validity = await ctx.imap.call(gmail.select_rw, client, all_mail)
        where = await ctx.imap.call(gmail.locate, client, [known[t.key] for t in batch])
        state = await ctx.imap.call(gmail.fetch_gm_state, client, sorted(where.values()))
        write = LabelWrite()
        here: list[tuple[Target, int, gmail.GmState]] = []
        for t in batch:
            uid = where.get(known[t.key])
            if uid is None or uid not in state:
                recorded = t.key in self.record
                write.outcomes.append(
                    settlement(
                        t, ChangeState.FAILED if recorded else ChangeState.SKIPPED, NOT_IN_ALL_MAIL
                    )
                )
            else:
                here.append((t, uid, state[uid]))
        intents = [
            Intent(
                folder=t.folder,
                uidvalidity=t.uidvalidity,
                uid=t.uid,
                message_id=mids.get(t.key) or t.message_id,
                subject=t.subject,
                flags_before=st.flags,
                flags_added=tuple(f for f in plan.add_flags if f not in st.flags),
                flags_removed=tuple(f for f in plan.remove_flags if f in st.flags),
                folder_after=all_mail,
                uidvalidity_after=am_validity,
                uid_floor=None,
                gm_msgid=st.msgid,
                labels_before=st.labels,
                labels_added=tuple(lbl for lbl in plan.add_labels if not has(st.labels, lbl)),
                labels_removed=tuple(lbl for lbl in plan.remove_labels if has(st.labels, lbl)),
            )
            for t, _uid, st in here
        ]
        if intents:
            async with ctx.store.fenced_transaction(ctx.lease) as conn:
                await ctx.store.record_intents(conn, ctx.lease, intents)
            # A retry keeps what the first attempt recorded: that is what undo restores.
            for row in await ctx.store.job_changes(ctx.job.job_id):
                self.record.setdefault(row.key, row)
        after: dict[int, gmail.GmState] = {}
        if here:
            try:
                after = await ctx.imap.call(
                    gmail.store, client, [uid for _t, uid, _st in here], plan
                )
            except IMAPClientAbortError:
                raise
            except IMAPClientError as exc:
                # A part of the STORE may have applied: the intended rows keep
                # the labels from before, so undo still restores them.
                write.outcomes += [
                    settlement(t, ChangeState.FAILED, f"server refused: {exc}")
                    for t, _u, _s in here
                ]
                here = []
        for t, uid, _st in here:
            now = after.get(uid)
            if now is None or not applied_as_planned(now, plan):
                write.outcomes.append(
                    settlement(t, ChangeState.FAILED, "the server did not apply the change")
                )
                continue
            write.outcomes.append(
                settlement(
                    t,
                    ChangeState.APPLIED,
                    flags_after=now.flags,
                    labels_after=now.labels,
                    folder_after=all_mail,
                    uidvalidity_after=am_validity,
                    uid_after=uid,
                )
            )
            write.relabels.append((now.msgid, now.flags, now.labels))
            change = self.record.get(t.key)
            removed = change.labels_removed if change is not None else plan.remove_labels
            write.gone_from[now.msgid] = gone_folders(
                [lbl for lbl in removed if not has(now.labels, lbl)]
            )
        applied = sum(1 for o in write.outcomes if o.state is ChangeState.APPLIED)
        self.settled = await commit_labels(
            ctx,
            self.settled,
            self.total,
            write,
            f"{folder}: {applied} of {len(batch)} relabelled (Gmail)",
        )


async def handle_gmail_labels(ctx: JobContext, work: ApprovedWork) -> dict[str, Any]:
    return await GmailLabelRun(ctx, work).run()
