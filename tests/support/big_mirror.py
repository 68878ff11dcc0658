"""A big INBOX mirror, generated and COPYed straight into the tables (no IMAP):
for bench/triage.py (100,000 rows) and the big-mailbox browser test (20,000).

Rows are drawn from a few hundred varied templates (personal asks, meetings,
CC'd updates, newsletters, notifications); each template is scored once with
the real rules (app/mail/scores.py), as a sync would at ingest, and repeated
with its own uid, date and flags. Today's mail is a share of the rows, in the
given zone, so "today" filters select something.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from types import SimpleNamespace
from typing import Any

import psycopg

from app.mail.identity import Identity
from app.mail.scores import score_row

UIDVALIDITY = 1000
COLUMNS = (
    "folder",
    "uidvalidity",
    "uid",
    "message_id",
    "from_addr",
    "from_name",
    "to_addrs",
    "cc_addrs",
    "subject",
    "date",
    "flags",
    "body_excerpt",
    "list_unsubscribe",
    "list_id",
    "precedence",
    "auto_submitted",
    "mentions_you",
    "mention_identity",
    "triage_category",
    "triage_confidence",
    "triage_reasons",
    "triage_zoom",
    "clean_candidate",
    "clean_confidence",
    "clean_category",
    "clean_signals",
    "clean_excluded",
    "clean_direct",
    "scores_version",
)


@dataclass(frozen=True)
class Template:
    from_addr: str
    from_name: str
    to_addrs: tuple[str, ...]
    cc_addrs: tuple[str, ...]
    subject: str
    body_excerpt: str
    list_unsubscribe: str | None = None
    list_id: str | None = None
    precedence: str | None = None
    auto_submitted: str | None = None


def templates(identity: Identity, rnd: random.Random) -> list[Template]:
    me = identity.email
    people = ["dana@corp.example", "li.wei@corp.example", "sam@partner.example"]
    asks = [
        "Could you review the budget by Friday?",
        "Can you sign the contract today? It is urgent.",
        "Please send the numbers before 5.",
        "Thoughts on the draft?",
        "Let me know if Tuesday works.",
    ]
    out: list[Template] = []
    for i in range(120):
        who = rnd.choice(people)
        out.append(
            Template(who, who.split("@")[0].title(), (me,), (), f"Question {i}", rnd.choice(asks))
        )
    for i in range(40):
        out.append(
            Template(
                "calendar@corp.example",
                "Calendar",
                (me,),
                (),
                f"Invitation: sync {i} @ Thu",
                "Join Zoom Meeting https://zoom.us/j/98765 - can you make it?",
            )
        )
    for i in range(60):
        out.append(
            Template(
                rnd.choice(people),
                "Colleague",
                ("team@corp.example",),
                (me,),
                f"FYI: release notes {i}",
                "The deck is up on the drive.",
            )
        )
    for i in range(120):
        out.append(
            Template(
                "news@shop.example",
                "Shop",
                ("customers@shop.example",),
                (),
                f"Weekly deals, issue #{i}",
                "Big sale this week. Unsubscribe at any time.",
                list_unsubscribe="<https://shop.example/u>",
                list_id="<deals.shop.example>",
                precedence="bulk",
            )
        )
    for i in range(120):
        out.append(
            Template(
                "notifications@github.com",
                "GitHub",
                ("app@noreply.github.com",),
                (),
                f"[org/app] Issue #{i} updated",
                "You are receiving this because you are subscribed to this thread.",
                list_id="<app.org.github.com>",
                list_unsubscribe="<https://github.com/unsub>",
                auto_submitted="auto-generated",
            )
        )
    return out


def generate(
    n: int,
    identity: Identity,
    *,
    now: datetime,
    today_share: float = 0.02,
    today_minutes: int = 8 * 60,
    seed: int = 7,
) -> list[tuple[Any, ...]]:
    """`n` rows as COPY tuples; `today_share` of them dated within the
    `today_minutes` before `now` (keep it short when "today" must hold)."""
    rnd = random.Random(seed)
    base = templates(identity, rnd)
    scored: dict[tuple[Template, tuple[str, ...]], dict[str, Any]] = {}
    rows: list[tuple[Any, ...]] = []
    for uid in range(1, n + 1):
        t = base[rnd.randrange(len(base))]
        if rnd.random() < 0.3:
            t = replace(t, subject=f"{t.subject} ({uid})")  # distinct subjects for scrolling
        flags: tuple[str, ...] = ("\\Seen",) if rnd.random() < 0.6 else ()
        if rnd.random() < 0.02:
            flags += ("\\Flagged",)
        if rnd.random() < today_share:
            when = now - timedelta(seconds=rnd.randrange(0, today_minutes * 60))
        else:
            when = now - timedelta(days=1, minutes=rnd.randrange(0, 3 * 365 * 24 * 60))
        key = (t, flags)
        if key not in scored:
            view = SimpleNamespace(
                **t.__dict__,
                flags=list(flags),
                date=when,
                mentions_you=False,
                mention_identity=identity.fingerprint,
            )
            view.to_addrs, view.cc_addrs = list(t.to_addrs), list(t.cc_addrs)
            scored[key] = score_row(view, identity).columns()
        s = scored[key]
        rows.append(
            (
                "INBOX",
                UIDVALIDITY,
                uid,
                f"<big{uid}@bench>",
                t.from_addr,
                t.from_name,
                list(t.to_addrs),
                list(t.cc_addrs),
                t.subject,
                when,
                list(flags),
                t.body_excerpt,
                t.list_unsubscribe,
                t.list_id,
                t.precedence,
                t.auto_submitted,
                False,
                identity.fingerprint,
                *(s[c] for c in COLUMNS[18:]),
            )
        )
    return rows


def load(database_url: str, rows: list[tuple[Any, ...]]) -> None:
    """COPY the rows into an empty mirror, then VACUUM ANALYZE: a long-lived
    mirror has statistics and a visibility map (autovacuum keeps both)."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO mail_folders (folder, uidvalidity, last_seen_uid, message_count)"
            " VALUES ('INBOX', %s, %s, %s) ON CONFLICT (folder) DO NOTHING",
            (UIDVALIDITY, len(rows), len(rows)),
        )
        with (
            conn.cursor() as cur,
            cur.copy(f"COPY emails ({', '.join(COLUMNS)}) FROM STDIN") as copy,
        ):
            for row in rows:
                copy.write_row(row)
        conn.execute("VACUUM ANALYZE emails")
