"""The default, offline planner: a LangChain chat model that turns slash commands
and plain requests into tool calls, with no network.

It is a real `BaseChatModel` with `bind_tools` (and token streaming), so the
graph treats it exactly like an LLM; `SECRETARY_CHAT_MODEL` swaps in a real one
(app/graph/chat_model.py). A plan of several steps ("find these, then mark them
read") is kept in its own message's `additional_kwargs`, never in a tool's
arguments: the tools take only what any model should choose.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    HumanMessage,
    ToolMessage,
)
from langchain_core.messages.tool import tool_call_chunk
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable

from app.jobs.models import TERMINAL_STATUSES, UNDOABLE_JOB_TYPES

HELP_TEXT = """I'm Piper, your email secretary. I work on a copy of your mailbox and change nothing without your approval.
• /sync — refresh my copy of your mailbox (progress shows on the right)
• /clean — find newsletters and notifications to tidy away (you approve the exact list; they go to Secretary/Auto-Cleaned, never deleted)
• /status — recent jobs and mailbox counts
• "top 10 action-required from today", "unread zoom emails", "what needs my reply today"
• "mark the GitHub notifications as read", "mark emails from Alice as unread"
• "move emails from receipts@shop.example to Receipts", "label emails from Bob as Projects"
• "undo" — put back the last change I made"""

_STOP = {
    "the",
    "all",
    "my",
    "emails",
    "email",
    "messages",
    "message",
    "mail",
    "mails",
    "notifications",
    "notification",
    "newsletters",
    "newsletter",
    "from",
    "of",
    "any",
    "those",
    "these",
    "every",
    "please",
}


def _words(text: str) -> list[str]:
    return [w for w in re.findall(r"[\w@.+-]+", text.lower()) if w not in _STOP]


def _call(name: str, args: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "args": args, "id": f"call_{uuid.uuid4().hex[:12]}", "type": "tool_call"}


def plan_request(text: str) -> AIMessage:
    """Map one request to tool calls (or a direct answer)."""
    raw = text.strip()
    low = raw.lower()
    if low.startswith("/help") or re.fullmatch(r"(help|what can you do\??|\?)", low):
        return AIMessage(content=HELP_TEXT)
    if low.startswith("/sync") or re.search(
        r"\b(sync|refresh|fetch|check)\b.*\b(mail|inbox|mailbox)\b", low
    ):
        return AIMessage(content="", tool_calls=[_call("sync_mailbox", {})])
    if (
        low.startswith("/status")
        or re.search(r"\b(status|jobs?|progress)\b", low)
        and len(low) < 40
    ):
        return AIMessage(content="", tool_calls=[_call("job_status", {})])
    if low.startswith("/clean") or re.search(
        r"\b(clean|tidy|declutter)\b.*\b(inbox|mail|mailbox)\b", low
    ):
        return AIMessage(content="", tool_calls=[_call("quick_clean_inbox", {})])
    if low.startswith("/undo") or re.fullmatch(
        r"undo( (that|it|the last (change|clean)))?[.!]?", low
    ):
        job = raw.split(maxsplit=1)[1].strip() if low.startswith("/undo") and " " in raw else ""
        return AIMessage(
            content="",
            tool_calls=[_call("job_status", {"job_id": job} if job else {})],
            additional_kwargs={"piper_intent": "undo"},
        )
    triage = _plan_triage(low)
    if triage is not None:
        return triage
    m = re.search(r"\bmark\s+(.+?)\s+as\s+(read|unread|seen|unseen)\b", low)
    if m:
        action = "mark_read" if m.group(2) in ("read", "seen") else "mark_unread"
        return _search_then(m.group(1), action, unread=action == "mark_read")
    m = re.search(
        r"\bmove\s+(.+?)\s+to\s+(?:the\s+)?(?:folder\s+)?[\"']?([\w ./-]+?)[\"']?(?:\s+folder)?\s*$",
        raw,
        re.I,
    )
    if m:
        return _search_then(m.group(1), "move_emails", target_folder=m.group(2).strip())
    m = re.search(
        r"\b(?:label|tag)\s+(.+?)\s+(?:as|with)\s+[\"']?([\w ./-]+?)[\"']?\s*$", raw, re.I
    )
    if m:
        return _search_then(m.group(1), "apply_label", label=m.group(2).strip())
    m = re.search(r"\b(?:find|search|show|list)\b\s*(?:me\s+)?(.*)$", low)
    if m:
        return _search_then(m.group(1), None)
    return AIMessage(content="I'm not sure what you'd like me to do. " + HELP_TEXT)


def _plan_triage(low: str) -> AIMessage | None:
    wants = re.search(
        r"\b(top|highest|priority|important|action[- ]required|needs? my (reply|attention)|"
        r"reply|zoom|unread|what needs)\b",
        low,
    )
    if not wants or re.search(r"\bmark\b|\bmove\b|\blabel\b", low):
        return None
    n = re.search(r"\btop\s+(\d{1,3})\b|\b(\d{1,3})\s+(?:highest|most|top)\b", low)
    filters = []
    if re.search(r"\btoday\b|\bthis morning\b", low):
        filters.append("today")
    if re.search(r"\bunread\b", low):
        filters.append("unread")
    if re.search(r"\bzoom\b|\bmeeting", low):
        filters.append("zoom")
    category = None
    for name, pattern in (
        (
            "action_required",
            r"action[- ]required|needs? my (reply|attention)|to reply|reply to|what needs",
        ),
        ("newsletter", r"newsletters?"),
        ("notification", r"notifications?"),
        ("fyi", r"\bfyi\b"),
    ):
        if re.search(pattern, low):
            category = name
            break
    if category is None and not filters and not n:
        return None
    args: dict[str, Any] = {
        "n": int(next(g for g in n.groups() if g)) if n else 10,
        "filters": filters,
    }
    if category:
        args["category"] = category
    return AIMessage(content="", tool_calls=[_call("top_by_confidence", args)])


def _search_then(phrase: str, then: str | None, **extra: Any) -> AIMessage:
    """Search first; what to do with the result is this planner's own note."""
    phrase = phrase.strip()
    args: dict[str, Any] = {"limit": 100}
    m = re.match(r"(?:(?:the|all|my)\s+)*(?:emails?|messages?|mail)\s+from\s+(.+)$", phrase)
    if m:
        args["from_contains"] = m.group(1).strip(" '\"")
    else:
        args["text"] = " ".join(_words(phrase))
    plan: dict[str, Any] = {}
    if then:
        plan = {"then": then, **{k: v for k, v in extra.items() if v is not None}}
        if plan.pop("unread", None):
            args["unread"] = True
    return AIMessage(
        content="",
        tool_calls=[_call("search_emails", args)],
        additional_kwargs={"piper_plan": plan} if plan else {},
    )


def _result(msg: ToolMessage) -> Any:
    """The tool's artifact; a failed call (no artifact) as {"error": text}."""
    if isinstance(msg.artifact, dict):
        return msg.artifact
    return {"error": str(msg.content)}


def follow_up(issuer: AIMessage, results: Sequence[ToolMessage]) -> AIMessage:
    """After tools ran: continue a multi-step plan, or report back."""
    calls = {c["id"]: c for c in issuer.tool_calls}
    lines: list[str] = []
    for msg in results:
        call = calls.get(msg.tool_call_id, {"name": msg.name or "", "args": {}})
        name, data = call["name"], _result(msg)
        if "rejected" in data:
            lines.append(str(data.get("message")))
            continue
        if data.get("error"):
            lines.append(f"Sorry — {data['error']}.")
            continue
        plan = issuer.additional_kwargs.get("piper_plan") or {}
        if name == "search_emails" and plan.get("then"):
            ids = [e["id"] for e in data.get("emails", [])]
            if not ids:
                return AIMessage(
                    content="I found no matching messages in your mailbox copy, so there is nothing to change."
                )
            params = {k: plan[k] for k in ("target_folder", "label") if plan.get(k)}
            return AIMessage(
                content="", tool_calls=[_call(plan["then"], {"messages": ids, **params})]
            )
        if name == "quick_clean_inbox":
            ids = [c["id"] for c in data.get("candidates", [])]
            if not ids:
                return AIMessage(
                    content="Your inbox looks tidy: I found nothing that is safe to clean up."
                    + _excluded_note(data)
                )
            return AIMessage(
                content="", tool_calls=[_call("execute_clean_batch", {"messages": ids})]
            )
        if name == "job_status" and issuer.additional_kwargs.get("piper_intent") == "undo":
            target = _last_undoable(data)
            if target is None:
                return AIMessage(content="I found no finished change of mine to undo.")
            return AIMessage(content="", tool_calls=[_call("undo_job", {"job_id": target})])
        lines.append(describe_result(name, data))
    return AIMessage(content="\n".join(line for line in lines if line) or "Done.")


def _excluded_note(data: dict[str, Any]) -> str:
    """Why messages were left out: they involve the person, or they are not yet
    checked against the current identity and rules (a rescore is under way)."""
    n = int(data.get("excluded_direct", 0) or 0)
    unchecked = min(n, int(data.get("not_yet_checked", 0) or 0))
    notes = []
    if n - unchecked:
        notes.append(
            f"{n - unchecked} message(s) addressed to you or mentioning you were left alone"
        )
    if unchecked:
        notes.append(
            f"{unchecked} message(s) not yet checked against your current identity were left"
            " out (they are being re-checked; try again shortly)"
        )
    return f" ({'; '.join(notes)}.)" if notes else ""


UNDOABLE = frozenset(t.value for t in UNDOABLE_JOB_TYPES)
FINISHED = frozenset(s.value for s in TERMINAL_STATUSES)


def _last_undoable(data: Any) -> str | None:
    jobs = data.get("jobs", []) if isinstance(data, dict) else []
    if isinstance(data, dict) and data.get("job_id"):
        jobs = [data]
    for job in jobs:
        # A cancelled or failed change may have moved mail before it stopped:
        # its change record says what, so it can be undone too.
        if job.get("job_type") in UNDOABLE and job.get("status") in FINISHED:
            return str(job["job_id"])
    return None


def describe_result(name: str, data: Any) -> str:
    if not isinstance(data, dict):
        return str(data)
    if "job_id" in data and data.get("job_type") == "sync":
        return f"Started a mailbox sync (job {data['job_id'][:8]}). You can watch it in the progress panel."
    if "job_id" in data and "messages" in data:
        return (
            f"Approved — job {data['job_id'][:8]} is applying {data['job_type'].replace('_', ' ')} "
            f"to {data['messages']} message(s). Progress shows in the panel."
        )
    if name == "job_status":
        if "jobs" in data:
            jobs = data["jobs"][:5]
            mirror = ", ".join(
                f"{c['folder']}: {c['messages']} ({c['unread']} unread)"
                for c in data.get("mirror", [])
            )
            listing = "\n".join(
                f"• {j['job_type']} {j['job_id'][:8]}: {j['status']} ({j['processed']}/{j['total_estimate'] or '?'})"
                for j in jobs
            )
            return (listing or "No jobs yet.") + (
                f"\nMailbox copy — {mirror}" if mirror else "\nMy mailbox copy is empty: try /sync."
            )
        return f"Job {data.get('job_id', '')[:8]}: {data.get('status')} ({data.get('processed')}/{data.get('total_estimate') or '?'})"
    if name == "search_emails":
        emails = data.get("emails", [])
        if not emails:
            return "No matching messages."
        return f"Found {data['count']} message(s):\n" + "\n".join(
            f"• {(e['date'] or '')[:10]} — {e['from']} — {e['subject']}" for e in emails[:15]
        )
    if name == "top_by_confidence":
        items = data.get("results", [])
        if not items:
            return "Nothing matches that right now."
        head = (
            f"Top {len(items)} {data.get('category') or 'messages'} by confidence"
            + (f" ({', '.join(data.get('filters', []))})" if data.get("filters") else "")
            + ":"
        )
        return (
            head
            + "\n"
            + "\n".join(
                f"{i}. [{it['confidence']:.2f}] {it['from']} — {it['subject']} ({'; '.join(it['reasons'][:3])})"
                for i, it in enumerate(items, 1)
            )
        )
    return json.dumps(data)[:500]


class ScriptedPlanner(BaseChatModel):
    """Deterministic planner model; no network, no weights."""

    tool_names: list[str] = []

    @property
    def _llm_type(self) -> str:
        return "piper-scripted-planner"

    def bind_tools(
        self, tools: Sequence[Any], **kwargs: Any
    ) -> Runnable[LanguageModelInput, BaseMessage]:
        names = [getattr(t, "name", None) or getattr(t, "__name__", str(t)) for t in tools]
        return self.model_copy(update={"tool_names": names})

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        """Word by word, like a provider streams (tool calls in one piece), so the
        page shows the offline planner's answers the way it shows an LLM's."""
        reply = self.respond(messages)
        if reply.tool_calls:
            chunk = AIMessageChunk(
                content="",
                additional_kwargs=reply.additional_kwargs,
                tool_call_chunks=[
                    tool_call_chunk(name=c["name"], args=json.dumps(c["args"]), id=c["id"], index=i)
                    for i, c in enumerate(reply.tool_calls)
                ],
            )
            yield ChatGenerationChunk(message=chunk)
            return
        for piece in re.findall(r"\s*\S+", str(reply.content)) or [""]:
            generation = ChatGenerationChunk(message=AIMessageChunk(content=piece))
            if run_manager is not None:
                run_manager.on_llm_new_token(piece, chunk=generation)
            yield generation

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return ChatResult(generations=[ChatGeneration(message=self.respond(messages))])

    def respond(self, messages: Sequence[BaseMessage]) -> AIMessage:
        if not messages:
            return AIMessage(content=HELP_TEXT)
        last = messages[-1]
        if isinstance(last, HumanMessage):
            return plan_request(str(last.content))
        if isinstance(last, ToolMessage):
            results: list[ToolMessage] = []
            for msg in reversed(messages):
                if isinstance(msg, ToolMessage):
                    results.insert(0, msg)
                    continue
                if isinstance(msg, AIMessage):
                    return follow_up(msg, results)
                break
        return AIMessage(content="How can I help with your mail?")
