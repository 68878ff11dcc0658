"""Human in the loop. `propose` (read-only) turns the model's mutation tool calls
into the exact messages to show; `approval` is the only place `interrupt()` is
called. On approve it records the approval (with the person's edits: the
selection, and the folder or label of a move or label) and injects its id into
the tool calls; on reject every pending call gets a rejection and nothing is
enqueued. A call whose arguments do not fit the tool's schema is shown as
nothing to approve, never guessed at.

`approval` re-runs from the top on resume, so nothing before `interrupt()` has
side effects, and what is approved is the stored proposal, never a re-read."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from typing import Any

from langchain_core.messages import AIMessage, ToolMessage
from langchain_core.runnables import RunnableConfig
from langgraph.types import Command, interrupt
from pydantic import ValidationError

from app.graph.deps import GraphDeps
from app.graph.state import ApprovalGroup, ChatState, Decision, Proposal, ProposedAction
from app.graph.tools.mutations import MUTATION_ARGS, MUTATION_TOOLS
from app.graph.tools.results import as_json
from app.jobs.models import JobType
from app.jobs.store import Change
from app.mail import mirror_reads
from app.mail.clean import CLEAN_FOLDER, assess_for_clean
from app.mail.folders import (
    discarding_folder_reason,
    discarding_label_reason,
    is_gmail_archive,
    is_keyword,
)
from app.mail.message_ref import MessageRef
from app.mail.mirror_reads import EmailRow

HIGH_CONFIDENCE = 0.9
HIGH_GROUP_SIZE = 100
LOW_GROUP_SIZE = 10


def group_cards(cards: Sequence[dict[str, Any]]) -> list[ApprovalGroup]:
    """SPEC §8: ≤100 per group at ≥90% confidence; ≤10 below, with body previews."""
    high = [c for c in cards if c.get("confidence", 1.0) >= HIGH_CONFIDENCE]
    low = [c for c in cards if c.get("confidence", 1.0) < HIGH_CONFIDENCE]
    groups: list[ApprovalGroup] = []
    for i in range(0, len(high), HIGH_GROUP_SIZE):
        chunk = high[i : i + HIGH_GROUP_SIZE]
        groups.append(
            {"band": "high", "title": f"High confidence ({len(chunk)})", "messages": chunk}
        )
    for i in range(0, len(low), LOW_GROUP_SIZE):
        chunk = low[i : i + LOW_GROUP_SIZE]
        groups.append(
            {
                "band": "low",
                "title": f"Please check: lower confidence ({len(chunk)})",
                "messages": chunk,
            }
        )
    return groups


def _card(row: EmailRow, confidence: float, **extra: Any) -> dict[str, Any]:
    card = row.card(with_body=confidence < HIGH_CONFIDENCE)
    card["confidence"] = round(confidence, 3)
    card.update(extra)
    return card


async def _rows_for(
    deps: GraphDeps, ids: Sequence[Any]
) -> tuple[list[EmailRow], list[dict[str, Any]]]:
    refs: list[MessageRef] = []
    excluded: list[dict[str, Any]] = []
    for raw in ids:
        try:
            refs.append(MessageRef.parse(raw))
        except (ValueError, KeyError, TypeError):
            excluded.append({"id": str(raw), "reason": "not a message id"})
    rows = await mirror_reads.emails_by_refs(deps.pool, dict.fromkeys(refs))
    found = {r.ref for r in rows}
    excluded += [
        {"id": r.id, "reason": "not in the mailbox copy (run /sync?)"}
        for r in refs
        if r not in found
    ]
    return rows, excluded


# The one parameter a person may edit on each kind of action: SPEC §6 "edit.target".
EDITABLE_TARGET = {JobType.MOVE.value: "target_folder", JobType.LABEL.value: "label"}


def _malformed(call: dict[str, Any], job_type: JobType, exc: ValidationError) -> ProposedAction:
    problems = "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'arguments'}: {e['msg']}" for e in exc.errors()
    )
    description = f"Nothing to approve: the request to {job_type.value.replace('_', ' ')} was malformed ({problems})"
    return {
        "tool_call_id": call["id"],
        "tool": call["name"],
        "action": job_type.value,
        "description": description,
        "params": {"description": description},
        "groups": [],
    }


async def propose_action(deps: GraphDeps, call: dict[str, Any]) -> ProposedAction:
    name = call["name"]
    job_type = MUTATION_TOOLS[name]
    try:
        args = MUTATION_ARGS[name].model_validate(call.get("args") or {}).model_dump()
    except ValidationError as exc:
        return _malformed(call, job_type, exc)
    params: dict[str, Any] = {}
    excluded: list[dict[str, Any]] = []
    cards: list[dict[str, Any]] = []
    if job_type is JobType.UNDO:
        cards, params, description = await _undo_cards(deps, args)
    else:
        rows, excluded = await _rows_for(deps, args.get("messages") or [])
        # Gmail: a move is a label change, said in Gmail's words (gmail_wording).
        sources = sorted({row.folder for row in rows}) if any(r.gmail for r in rows) else None
        gmail = sources is not None
        if job_type is JobType.CLEAN:
            identity = deps.identity
            # Up to 300 verdicts (and, first time in a process, compiling the
            # mention matcher: ~50 ms) in a thread, off the web's event loop.
            verdicts = await asyncio.to_thread(
                lambda: [assess_for_clean(row, identity) for row in rows]
            )
            for row, verdict in zip(rows, verdicts, strict=True):
                if verdict.candidate:
                    cards.append(
                        _card(
                            row,
                            verdict.confidence,
                            category=verdict.category,
                            reasons=verdict.signals,
                        )
                    )
                else:
                    excluded.append(
                        {"id": row.id, "subject": row.subject, "reason": verdict.reason}
                    )
            params = {"target_folder": CLEAN_FOLDER, "action": "archive"}
            description = (
                gmail_wording(job_type, len(cards), CLEAN_FOLDER, sources)
                if sources is not None
                else f"Mark read and move {len(cards)} message(s) to {CLEAN_FOLDER} (recoverable)"
            )
        else:
            refusal = _destination_refusal(job_type, args, gmail=gmail)
            if refusal:
                # Nothing to approve: every message is left out, with the reason.
                excluded += [
                    {"id": row.id, "subject": row.subject, "reason": refusal} for row in rows
                ]
                rows = []
            cards = [_card(row, 1.0) for row in rows]
            if job_type is JobType.MARK_READ:
                description = f"Mark {len(cards)} message(s) as read"
            elif job_type is JobType.MARK_UNREAD:
                description = f"Mark {len(cards)} message(s) as unread"
            elif job_type is JobType.MOVE:
                params = {"target_folder": str(args["target_folder"]).strip()}
                description = ""
            else:
                params = {"label": str(args["label"]).strip(), "remove": bool(args.get("remove"))}
                description = ""
            if refusal:
                description = f"Nothing to approve: {refusal}"
            else:
                description = describe(job_type, params, len(cards), sources) or description
    params["description"] = description
    action: ProposedAction = {
        "tool_call_id": call["id"],
        "tool": name,
        "action": job_type.value,
        "description": description,
        "params": params,
        "groups": group_cards(cards),
    }
    if excluded:
        action["excluded"] = excluded
    if job_type is not JobType.UNDO and sources is not None:
        action["gmail_sources"] = sources
    return action


def describe(
    job_type: JobType,
    params: dict[str, Any],
    count: int,
    gmail_sources: Sequence[str] | None = None,
) -> str | None:
    """The card's sentence for a move or label (the actions a person can edit);
    in Gmail's words when the messages are Gmail's (`gmail_sources`: their folders)."""
    if gmail_sources is not None and job_type in (JobType.MOVE, JobType.LABEL):
        target = params["target_folder"] if job_type is JobType.MOVE else params["label"]
        return gmail_wording(
            job_type, count, target, gmail_sources, remove=bool(params.get("remove"))
        )
    if job_type is JobType.MOVE:
        return f"Move {count} message(s) to {params['target_folder']}"
    if job_type is JobType.LABEL:
        verb = "Remove label" if params.get("remove") else "Apply label"
        return f"{verb} {params['label']} on {count} message(s)"
    return None


def edit_refusal(proposal: Proposal, target: str) -> str | None:
    """Why `edit.target` cannot apply to this proposal (SPEC §6: → 422), or None.
    The edit takes the same checks as a model's call: no Trash, no Spam."""
    editable = [a for a in proposal["actions"] if a["action"] in EDITABLE_TARGET and a["groups"]]
    if not editable:
        kinds = ", ".join(sorted({a["action"] for a in proposal["actions"]})) or "nothing"
        return f"this approval ({kinds}) has no folder or label to edit"
    target = target.strip()
    if not target or len(target) > 200 or any(ord(c) < 32 for c in target):
        return "the edited folder or label must be 1 to 200 printable characters"
    for action in editable:
        key = EDITABLE_TARGET[action["action"]]
        refusal = _destination_refusal(
            JobType(action["action"]),
            {**action["params"], key: target},
            gmail="gmail_sources" in action,
        )
        if refusal:
            return refusal
    return None


def selection_refusal(proposal: Proposal, selection: list[str]) -> str | None:
    """Why an approval's `selection` cannot be taken (SPEC §6: → 422, the
    approval stays pending), or None: it must pick at least one message the
    card shows. (Taken as it was, a selection that picked none ran the tool
    with no messages and used the approval up on an error.) Ids the card does
    not show are ignored, as ever: never more than was proposed is changed."""
    shown = {m["id"] for a in proposal["actions"] for g in a["groups"] for m in g["messages"]}
    if not selection:
        return "the selection is empty: approve at least one message, or reject"
    if shown.isdisjoint(selection):
        return "the selection names none of the messages this approval shows"
    return None


def _edited(action: ProposedAction, target: str | None, count: int) -> dict[str, Any]:
    """The params the person approved: the proposal's, with their edit applied
    (and the proposed value kept beside it, so the approval row shows both)."""
    params = dict(action["params"])
    key = EDITABLE_TARGET.get(action["action"])
    if key is None or target is None or target.strip() == params.get(key):
        return params
    params["edited_from"] = {key: params.get(key)}
    params[key] = target.strip()
    params["description"] = describe(
        JobType(action["action"]), params, count, action.get("gmail_sources")
    )
    return params


def _destination_refusal(
    job_type: JobType, args: dict[str, Any], *, gmail: bool = False
) -> str | None:
    """Why a move or label-as-folder cannot be proposed at all (no target, or a
    Trash/Spam folder or Gmail label, which deletes by another name), or None."""
    if job_type is JobType.MOVE:
        target = str(args.get("target_folder") or "").strip()
        if not target:
            return "no target folder was given for the move"
        return discarding_label_reason(target) if gmail else discarding_folder_reason(target)
    if job_type is JobType.LABEL and not args.get("remove"):
        label = str(args.get("label") or "").strip()
        if not label:
            return "no label was given"
        if gmail:
            return discarding_label_reason(label)
        if not is_keyword(label):  # a label that is not a keyword is a folder: copied there
            return discarding_folder_reason(label)
    return None


def gmail_wording(
    job_type: JobType, count: int, target: str, sources: Sequence[str], *, remove: bool = False
) -> str:
    """The card in Gmail's words: on Gmail a move is a label change, and taking
    mail out of the Inbox is "archive" (it stays in All Mail; nothing is deleted)."""
    sources = sorted(sources)
    from_inbox = sources == ["INBOX"]
    if job_type is JobType.CLEAN:
        return (
            f"Mark read, label {target} and archive {count} message(s) "
            "(Gmail takes them out of the Inbox; they stay in All Mail, recoverable)"
        )
    if job_type is JobType.LABEL:
        if remove:
            return f"Remove the Gmail label {target} from {count} message(s) (nothing is deleted)"
        return f"Apply the Gmail label {target} to {count} message(s)"
    if is_gmail_archive(target):
        return (
            f"Archive {count} message(s): take them out of the Inbox (Gmail keeps them in All Mail)"
            if from_inbox
            else f"Archive {count} message(s): remove the label(s) {', '.join(sources)} "
            "(Gmail keeps them in All Mail)"
        )
    if from_inbox:
        return (
            f"Label {count} message(s) {target} and archive them "
            "(out of the Inbox; Gmail keeps them in All Mail)"
        )
    return (
        f"Label {count} message(s) {target} and remove the label(s) {', '.join(sources)} "
        "(Gmail keeps them in All Mail)"
    )


async def _undo_cards(
    deps: GraphDeps, args: dict[str, Any]
) -> tuple[list[dict[str, Any]], dict[str, Any], str]:
    """The undo proposal: exactly the messages the job's change record says it
    touched (completed, cancelled part-way or failed alike), shown as the mirror
    has them now where it can, else as the record names them."""
    job_id = str(args.get("job_id") or "")
    try:
        job = await deps.store.get(uuid.UUID(job_id))
    except ValueError:
        job = None
    if job is None or not job.job_type.is_undoable:
        return (
            [],
            {"undo_of": job_id},
            f"Nothing to undo: {job_id or 'no job'} is not a change of mine",
        )
    if not job.status.is_terminal:
        return (
            [],
            {"undo_of": str(job.job_id)},
            f"Nothing to undo yet: job {str(job.job_id)[:8]} is still {job.status.value}",
        )
    changes = [c for c in await deps.store.job_changes(job.job_id) if c.touched]
    now_at = {c.key: _current_ref(c) for c in changes}
    rows = await mirror_reads.emails_by_refs(
        deps.pool, dict.fromkeys(r for r in now_at.values() if r is not None)
    )
    shown = {r.ref: r for r in rows}
    cards = []
    for change in changes:
        ref = MessageRef(change.folder, change.uidvalidity, change.uid)
        ref_now = now_at[change.key]
        row = shown.get(ref_now) if ref_now is not None else None
        card: dict[str, Any] = (
            row.card()
            if row is not None
            else {
                "date": None,
                "from": "",
                "to": "",
                "cc": "",
                "subject": change.subject,
            }
        )
        card.update(
            {
                "id": ref.id,  # the record's identity: what the undo approval names
                "folder": ref.folder,
                "uid": ref.uid,
                "uidvalidity": ref.uidvalidity,
                "subject": card.get("subject") or change.subject,
                "message_id": change.message_id,
                # what it will be once restored: unread mail unread again
                "unread": "\\Seen" not in (change.flags_before or ()),
                "now_in": change.folder_after or change.folder,
                "confidence": 1.0,
            }
        )
        cards.append(card)
    state = "" if job.status.value == "completed" else f" ({job.status.value} part-way)"
    desc = (
        f"Undo {job.job_type.value.replace('_', ' ')} job {str(job.job_id)[:8]}{state}: "
        f"restore {len(cards)} message(s)"
    )
    return cards, {"undo_of": str(job.job_id)}, desc


def _current_ref(change: Change) -> MessageRef | None:
    """Where the record says the message is now, when it says exactly."""
    if change.uid_after is not None and change.uidvalidity_after is not None:
        return MessageRef(
            change.folder_after or change.folder, change.uidvalidity_after, change.uid_after
        )
    if change.folder_after in (None, change.folder):
        return MessageRef(change.folder, change.uidvalidity, change.uid)
    return None


def make_nodes(deps: GraphDeps) -> tuple[Any, Any]:
    async def propose(state: ChatState) -> dict[str, Any]:
        last = state["messages"][-1]
        assert isinstance(last, AIMessage)
        actions = [
            await propose_action(deps, c) for c in last.tool_calls if c["name"] in MUTATION_TOOLS
        ]
        count = sum(len(g["messages"]) for a in actions for g in a["groups"])
        proposal: Proposal = {
            "kind": "approval",
            "title": "; ".join(a["description"] for a in actions),
            "actions": actions,
            "message_count": count,
        }
        return {"proposal": proposal}

    async def approval(state: ChatState, config: RunnableConfig) -> Command[Any]:
        last = state["messages"][-1]
        assert isinstance(last, AIMessage)
        proposal = state.get("proposal")
        if not proposal:
            # Fail closed: no tool call runs without the approval of its proposal.
            decision: Decision = {"decision": "reject"}
            note = "No approval was prepared for this change, so nothing was changed."
        elif proposal["message_count"] == 0:
            decision = {"decision": "reject"}
            # Why (a refused folder, a malformed call, no such messages): the model
            # and the person read the proposal's own account of it.
            note = (
                f"{proposal['title']}. " if proposal.get("title") else ""
            ) + "There is nothing I can safely change there, so I left the mailbox as it is."
        else:
            decision = interrupt(proposal)
            note = "You rejected this, so nothing was changed."
        edit = decision.get("edit") if isinstance(decision, dict) else None
        target = edit.get("target") if isinstance(edit, dict) else None
        refusal = edit_refusal(proposal, str(target)) if proposal and target is not None else None
        if refusal:
            # The service checks an edit before resuming (422); one that gets
            # here anyway is refused as a whole: fail closed, as a rejection.
            decision, note = {"decision": "reject"}, f"{refusal}, so nothing was changed."
        if not isinstance(decision, dict) or decision.get("decision") != "approve":
            return Command(
                goto="agent",
                update={
                    "proposal": None,
                    "messages": [
                        ToolMessage(
                            content=as_json({"rejected": True, "message": note}),
                            artifact={"rejected": True, "message": note},
                            tool_call_id=c["id"],
                            name=c["name"],
                        )
                        for c in last.tool_calls
                    ],
                },
            )
        # Approved: from here on side effects are allowed.
        thread_id = str(config.get("configurable", {}).get("thread_id", ""))
        interrupt_id = str(decision.get("interrupt_id") or uuid.uuid4())
        selection = decision.get("selection")
        chosen_filter = set(selection) if selection is not None else None
        by_call = {a["tool_call_id"]: a for a in proposal["actions"]}
        calls = []
        approvals: dict[str, str] = {}
        for call in last.tool_calls:
            action = by_call.get(call["id"])
            if action is None:
                calls.append(call)
                continue
            cards = [m for g in action["groups"] for m in g["messages"]]
            chosen = [m for m in cards if chosen_filter is None or m["id"] in chosen_filter]
            if not chosen:
                continue  # none of its messages selected: this call is not run at all
            params = _edited(action, target, len(chosen))
            args = {**call["args"], "messages": [m["id"] for m in chosen]}
            key = EDITABLE_TARGET.get(action["action"])
            if key is not None and key in params:
                args[key] = params[key]  # the transcript shows what was approved
            approval_row = await deps.store.record_approval(
                thread_id=thread_id,
                interrupt_id=f"{interrupt_id}:{call['id']}",
                action=action["action"],
                params=params,
                messages=[
                    {
                        "folder": m["folder"],
                        "uidvalidity": m["uidvalidity"],
                        "uid": m["uid"],
                        "message_id": m.get("message_id"),
                        "subject": m.get("subject", ""),
                    }
                    for m in chosen
                ],
            )
            approvals[call["id"]] = str(approval_row.approval_id)
            calls.append({**call, "args": args})
        updated = AIMessage(content=last.content, tool_calls=calls, id=last.id)
        return Command(
            goto="tools", update={"proposal": None, "messages": [updated], "approvals": approvals}
        )

    return propose, approval
