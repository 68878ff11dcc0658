"""Undo of a Gmail label change (executor/handlers/gmail_labels.py), from its record only.

Each message is found by the X-GM-MSGID the record holds (UID SEARCH
X-GM-MSGID in All Mail), never by the UID the approval named: on Gmail the
INBOX copy is gone once `\\Inbox` was removed, and comes back under a new UID
when it is added again. Then exactly what the job changed is put back: labels
it added are removed, labels it removed are added, flags likewise; nothing
else is touched, so a label the person added since stays. A message not found
is reported, never guessed.

The undo's own record (keyed by the original's identity) says where each
message is afterwards: in its original folder under the UID found there now.
The mirror's copies get their labels back at once; a copy that reappears in a
mirrored folder (INBOX) under its new UID is fetched by the sync this undo
asks for (`enqueue_pending_sync`), which is how the mirror learns new UIDs.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from imapclient.exceptions import IMAPClientAbortError, IMAPClientError

from app.jobs.models import Job
from app.jobs.store import Change, ChangeState, Intent, MessageKey
from app.jobs.sync_requests import enqueue_pending_sync
from executor import gmail
from executor.connection_budget import account_key
from executor.context import JobContext, PermanentJobError
from executor.folder_lock import folder_lock
from executor.handlers.gmail_labels import (
    NOT_IN_ALL_MAIL,
    LabelWrite,
    all_mail_of,
    commit_labels,
    gone_folders,
    has,
    mirrored_folders,
)
from executor.handlers.mutations import (
    ApprovedWork,
    Target,
    announce_start,
    change_summary,
    settlement,
)


def restore_plan(change: Change) -> gmail.LabelPlan:
    """The inverse of what the job recorded changing."""
    return gmail.LabelPlan(
        add_labels=change.labels_removed,
        remove_labels=change.labels_added,
        add_flags=change.flags_removed,
        remove_flags=change.flags_added,
    )


def restored(state: gmail.GmState, change: Change) -> bool:
    return (
        all(has(state.labels, lbl) for lbl in change.labels_removed)
        and not any(has(state.labels, lbl) for lbl in change.labels_added)
        and all(f in state.flags for f in change.flags_removed)
        and not any(f in state.flags for f in change.flags_added)
    )


class GmailUndoRun:
    def __init__(
        self, ctx: JobContext, work: ApprovedWork, original: Job, record: dict[MessageKey, Change]
    ) -> None:
        self.ctx = ctx
        self.work = work
        self.original = original
        self.record = record
        self.own: dict[MessageKey, Change] = {}
        self.settled: set[MessageKey] = set()
        self.total = len(work.targets)

    async def run(self) -> dict[str, Any]:
        ctx = self.ctx
        self.own = {c.key: c for c in await ctx.store.job_changes(ctx.job.job_id)}
        self.settled = {k for k, c in self.own.items() if c.state.is_final}
        await announce_start(
            ctx,
            "undo (Gmail labels)",
            self.total,
            self.settled,
            bool(self.own),
            noun="message(s) to restore",
            undo_of=str(self.original.job_id),
            gmail=True,
        )
        items: list[tuple[Target, Change]] = []
        nothing = LabelWrite()
        for t in self.work.targets:
            if t.key in self.settled:
                continue
            change = self.record.get(t.key)
            if change is None or not change.touched or change.gm_msgid is None:
                nothing.outcomes.append(
                    settlement(
                        t,
                        ChangeState.SKIPPED,
                        f"job {self.original.job_id} did not change this message",
                    )
                )
                continue
            items.append((t, change))
        if nothing.outcomes:
            self.settled = await commit_labels(
                ctx, self.settled, self.total, nothing, "undo: not changed by that job"
            )
        client = await ctx.imap.ensure()
        _folders, all_mail = await all_mail_of(ctx, client)
        mirrored = await mirrored_folders(ctx)
        homes = sorted({c.folder for _t, c in items})
        back_in: set[str] = set()
        async with folder_lock(ctx, *homes, *mirrored):
            batch_size = self.work.batch_size
            for start in range(0, len(items), batch_size):
                back_in |= await self.restore_batch(
                    client, items[start : start + batch_size], all_mail
                )
        # Copies back in a mirrored folder have new UIDs there: the sync fetches them.
        for folder in sorted(back_in & set(mirrored)):
            await enqueue_pending_sync(
                ctx.store, account_key(ctx.imap.account), folder, trigger="undo"
            )
        summary = await change_summary(ctx, None)
        summary["undo_of"] = str(self.original.job_id)
        summary["gmail"] = True
        summary["resync"] = sorted(back_in & set(mirrored))
        if not summary["applied"] and (summary["skipped"] or summary["failed"]):
            first = (summary["failed"] or summary["skipped"])[0]
            raise PermanentJobError(f"nothing could be restored: {first['reason']}")
        return summary

    async def restore_batch(
        self, client: Any, batch: list[tuple[Target, Change]], all_mail: str
    ) -> set[str]:
        """Write ahead, put labels and flags back in All Mail, learn where each
        message shows again, record. Returns the folders messages came back to."""
        ctx = self.ctx
        ctx.checkpoint()
        am_validity = await ctx.imap.call(gmail.select_rw, client, all_mail)
        where = await ctx.imap.call(gmail.locate, client, [c.gm_msgid for _t, c in batch])
        state = await ctx.imap.call(gmail.fetch_gm_state, client, sorted(where.values()))
        write = LabelWrite()
        here: list[tuple[Target, Change, int]] = []
        for t, change in batch:
            uid = where.get(change.gm_msgid or 0)
            if uid is None or uid not in state:
                own = t.key in self.own
                write.outcomes.append(
                    settlement(
                        t, ChangeState.FAILED if own else ChangeState.SKIPPED, NOT_IN_ALL_MAIL
                    )
                )
            else:
                here.append((t, change, uid))
        intents = []
        for t, change, uid in here:
            st = state[uid]
            intents.append(
                Intent(
                    folder=t.folder,
                    uidvalidity=t.uidvalidity,
                    uid=t.uid,
                    message_id=change.message_id,
                    subject=t.subject,
                    flags_before=st.flags,
                    flags_added=tuple(f for f in change.flags_removed if f not in st.flags),
                    flags_removed=tuple(f for f in change.flags_added if f in st.flags),
                    folder_after=change.folder,
                    uidvalidity_after=None,
                    uid_floor=None,
                    gm_msgid=st.msgid,
                    labels_before=st.labels,
                    labels_added=tuple(x for x in change.labels_removed if not has(st.labels, x)),
                    labels_removed=tuple(x for x in change.labels_added if has(st.labels, x)),
                )
            )
        if intents:
            async with ctx.store.fenced_transaction(ctx.lease) as conn:
                await ctx.store.record_intents(conn, ctx.lease, intents)
        after: dict[int, gmail.GmState] = {}
        try:
            # Messages needing the same restore go in one STORE each way.
            groups: dict[gmail.LabelPlan, list[int]] = defaultdict(list)
            for _t, change, uid in here:
                groups[restore_plan(change)].append(uid)
            for plan, uids in groups.items():
                after.update(await ctx.imap.call(gmail.store, client, uids, plan))
        except IMAPClientAbortError:
            raise
        except IMAPClientError as exc:
            write.outcomes += [
                settlement(t, ChangeState.FAILED, f"server refused: {exc}") for t, _c, _u in here
            ]
            here = []
        done = [(t, c, uid) for t, c, uid in here if uid in after and restored(after[uid], c)]
        homes = await self.find_at_home([c for _t, c, _u in done])
        back_in: set[str] = set()
        for t, change, uid in here:
            now = after.get(uid)
            if now is None or not restored(now, change):
                write.outcomes.append(
                    settlement(t, ChangeState.FAILED, "the server did not restore the labels")
                )
                continue
            home_validity, home_uid = homes.get(change.gm_msgid or 0, (None, None))
            write.outcomes.append(
                settlement(
                    t,
                    ChangeState.APPLIED,
                    flags_after=now.flags,
                    labels_after=now.labels,
                    folder_after=change.folder if home_uid is not None else all_mail,
                    uidvalidity_after=home_validity if home_uid is not None else am_validity,
                    uid_after=home_uid if home_uid is not None else uid,
                )
            )
            write.relabels.append((now.msgid, now.flags, now.labels))
            # The labels the job added and undo removed take their copies away.
            write.gone_from[now.msgid] = gone_folders(change.labels_added)
            back_in |= set(gone_folders(change.labels_removed))
        applied = sum(1 for o in write.outcomes if o.state is ChangeState.APPLIED)
        self.settled = await commit_labels(
            ctx, self.settled, self.total, write, f"restored {applied} of {len(batch)} (Gmail)"
        )
        return back_in

    async def find_at_home(self, changes: list[Change]) -> dict[int, tuple[int, int]]:
        """X-GM-MSGID → (UIDVALIDITY, UID) in each message's original folder now
        (a new UID on Gmail when `\\Inbox` came back); absent when not there."""
        ctx = self.ctx
        client = await ctx.imap.ensure()
        by_home: dict[str, list[int]] = defaultdict(list)
        for c in changes:
            if c.gm_msgid is not None:
                by_home[c.folder].append(c.gm_msgid)
        out: dict[int, tuple[int, int]] = {}
        for folder, msgids in by_home.items():
            try:
                validity = await ctx.imap.call(gmail.examine, client, folder)
            except IMAPClientAbortError:
                raise
            except IMAPClientError:
                continue  # the label's folder is gone: the record keeps All Mail's UID
            for msgid, uid in (await ctx.imap.call(gmail.locate, client, msgids)).items():
                out[msgid] = (validity, uid)
        return out
