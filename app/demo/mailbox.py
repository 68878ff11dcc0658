"""A realistic generated mailbox: newsletters, notifications, people writing to
you, CCs, Zoom invites and receipts, in a variety of encodings, some from
today. Deterministic for a given seed, so tests and benchmarks can rely on it.
"""

from __future__ import annotations

import os
import random
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.header import Header
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, formataddr
from pathlib import Path

import imapclient

from app.demo.dovecot import DovecotServer, chown_tree


@dataclass(frozen=True)
class SeedMessage:
    raw: bytes
    internal_date: datetime
    kind: str
    folder: str = "INBOX"
    flags: tuple[str, ...] = ()


NEWSLETTERS = [
    (
        "The Batch",
        "newsletter@deeplearning.example",
        "The Batch: {topic}",
        "batch.deeplearning.example",
    ),
    ("Morning Brew", "crew@morningbrew.example", "☕ {topic}", "brew.morningbrew.example"),
    (
        "Product Hunt Daily",
        "hello@producthunt.example",
        "Top products today: {topic}",
        "daily.producthunt.example",
    ),
    (
        "Acme Deals",
        "deals@acme-shop.example",
        "{pct}% off {topic} — this weekend only",
        "deals.acme-shop.example",
    ),
    (
        "Python Weekly",
        "info@pythonweekly.example",
        "Python Weekly - Issue {n}",
        "pythonweekly.example",
    ),
    (
        "Café Société",
        "lettre@cafe-societe.example",
        "Nouveautés de la semaine : {topic}",
        "lettre.cafe-societe.example",
    ),
]
NOTIFIERS = [
    ("GitHub", "notifications@github.com", "[piper/app] {topic} (#{n})"),
    ("LinkedIn", "messages-noreply@linkedin.com", "You appeared in {n} searches this week"),
    ("Google", "no-reply@accounts.google.com", "Security alert: new sign-in on {device}"),
    ("Slack", "feedback@slack.com", "[piper-team] {n} new messages in #general"),
    ("Jira", "jira@acme.atlassian.net", "[JIRA] (PIP-{n}) {topic}"),
]
PEOPLE = [
    ("Maria Garcia", "maria.garcia@partner.example"),
    ("Bob Chen", "bob.chen@example.org"),
    ("Søren Kjær", "soren@nordic.example"),
    ("Priya Natarajan", "priya@clientco.example"),
    ("José Álvarez", "jose.alvarez@example.net"),
    ("Dana Whitfield", "dana@example.org"),
]
TOPICS = [
    "quarterly planning",
    "the new onboarding flow",
    "invoice #4471",
    "release 2.4",
    "budget review",
    "the offsite agenda",
    "hiring plan",
    "API rate limits",
    "design review",
    "customer feedback",
    "AI agents in production",
    "winter sale",
    "running shoes",
    "kitchen gadgets",
    "security update",
]
ASKS = [
    "Could you take a look at {topic} before Friday?",
    "Can we move our call about {topic} to tomorrow?",
    "Do you have 10 minutes today to go over {topic}?",
    "Please review {topic} and let me know your thoughts.",
    "Just a heads-up on {topic}, no action needed.",
    "Thanks for the notes on {topic}!",
]
DEVICES = ["Linux", "iPhone", "Windows", "a new Mac"]


def _dt(rng: random.Random, now: datetime, today_share: float) -> datetime:
    if rng.random() < today_share:
        start = now.replace(hour=0, minute=0, second=0, microsecond=0)
        return start + timedelta(seconds=rng.randrange(max(1, int((now - start).total_seconds()))))
    return now - timedelta(days=rng.randrange(1, 60), seconds=rng.randrange(86400))


class _Builder:
    def __init__(
        self, rng: random.Random, now: datetime, me: str, name: str, aliases: Sequence[str]
    ) -> None:
        self.rng, self.now, self.me, self.name, self.aliases = rng, now, me, name, list(aliases)
        self.first = name.split()[0] if name else "there"
        self.n = 0

    def base(self, sender: tuple[str, str], to: str, subject: str, when: datetime) -> EmailMessage:
        self.n += 1
        msg = EmailMessage(policy=SMTP)
        display, addr = sender
        if not display.isascii() and self.rng.random() < 0.5:
            charset = "iso-8859-1" if all(ord(c) < 256 for c in display) else "utf-8"
            msg["From"] = formataddr((str(Header(display, charset)), addr))
        else:
            msg["From"] = formataddr((display, addr))
        msg["To"] = to
        msg["Subject"] = subject
        msg["Date"] = format_datetime(when)
        msg["Message-ID"] = f"<{self.n}.{int(when.timestamp())}@{addr.split('@')[1]}>"
        return msg

    def me_display(self) -> str:
        r = self.rng.random()
        if r < 0.2 and self.aliases:
            return self.rng.choice(self.aliases)
        if r < 0.3 and self.aliases and " " in self.name:
            first, last = self.name.split(" ", 1)
            return f'"{last}, {first}" <{self.aliases[0].upper()}>'
        return formataddr((self.name, self.me))

    def newsletter(self, when: datetime) -> EmailMessage:
        display, addr, subj, list_id = self.rng.choice(NEWSLETTERS)
        topic = self.rng.choice(TOPICS)
        msg = self.base(
            (display, addr),
            f"subscribers@{addr.split('@')[1]}",
            subj.format(
                topic=topic, pct=self.rng.choice([10, 20, 30, 50]), n=self.rng.randrange(100, 600)
            ),
            when,
        )
        msg["List-Unsubscribe"] = (
            f"<https://{addr.split('@')[1]}/unsubscribe?u={self.n}>, <mailto:unsubscribe@{addr.split('@')[1]}>"
        )
        msg["List-Id"] = f"{display} <{list_id}>"
        if self.rng.random() < 0.5:
            msg["Precedence"] = "bulk"
        text = (
            f"This week: {topic}.\n\nRead more on our site. Ümlauts and emoji ✨ welcome.\n\n"
            f"You are receiving this because you subscribed. Unsubscribe: https://{addr.split('@')[1]}/u"
        )
        msg.set_content(text, cte="quoted-printable")
        msg.add_alternative(
            f"<html><body><h1>{display}</h1><p>This week: <b>{topic}</b>.</p>"
            f"<p><a href='https://{addr.split('@')[1]}/u'>Unsubscribe</a></p></body></html>",
            subtype="html",
            cte="base64",
        )
        return msg

    def notification(self, when: datetime) -> EmailMessage:
        display, addr, subj = self.rng.choice(NOTIFIERS)
        topic = self.rng.choice(TOPICS)
        to = f"app@noreply.{addr.split('@')[1]}" if "github" in addr else self.me
        msg = self.base(
            (display, addr),
            to,
            subj.format(topic=topic, n=self.rng.randrange(2, 999), device=self.rng.choice(DEVICES)),
            when,
        )
        msg["Auto-Submitted"] = "auto-generated"
        if "github" in addr:
            msg["List-Id"] = "piper/app <app.piper.github.com>"
            msg["List-Unsubscribe"] = "<https://github.com/notifications/unsubscribe/x>"
        msg.set_content(
            f"{topic}\n\nView it on the web. You are receiving this because you are subscribed."
        )
        return msg

    def personal(self, when: datetime, *, cc: bool = False) -> EmailMessage:
        person = self.rng.choice(PEOPLE)
        topic = self.rng.choice(TOPICS)
        ask = self.rng.choice(ASKS).format(topic=topic)
        other = self.rng.choice([p for p in PEOPLE if p != person])
        if cc:
            msg = self.base(person, formataddr(other), f"Re: {topic}", when)
            msg["Cc"] = self.me_display()
            body = f"Hi {other[0].split()[0]},\n\n{ask}\n\nBest,\n{person[0]}"
        else:
            msg = self.base(
                person,
                self.me_display(),
                self.rng.choice([f"{topic}", f"Re: {topic}", f"Quick question about {topic}"]),
                when,
            )
            body = f"Hi {self.first},\n\n{ask}\n\nCheers,\n{person[0]}"
        if self.rng.random() < 0.3:
            msg.set_content(
                body,
                charset="iso-8859-1" if all(ord(c) < 256 for c in body) else "utf-8",
                cte="quoted-printable",
            )
        else:
            msg.set_content(body)
        if self.rng.random() < 0.08:
            msg.add_attachment(
                b"%PDF-1.4 demo\n" * 20,
                maintype="application",
                subtype="pdf",
                filename=f"{topic}.pdf",
            )
        return msg

    def zoom(self, when: datetime) -> EmailMessage:
        person = self.rng.choice(PEOPLE)
        topic = self.rng.choice(TOPICS)
        meeting = self.rng.randrange(10**9, 10**10)
        msg = self.base(
            person, self.me_display(), f"Invitation: {topic} @ {when:%a %b %d} 10am", when
        )
        msg.set_content(
            f"{person[0]} invites you to a Zoom meeting about {topic}.\n\n"
            f"Join Zoom Meeting: https://zoom.us/j/{meeting}\nMeeting ID: {meeting}"
        )
        if self.rng.random() < 0.5:
            start = (when + timedelta(days=1)).strftime("%Y%m%dT100000Z")
            ics = (
                f"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nBEGIN:VEVENT\r\nSUMMARY:{topic}\r\nDTSTART:{start}\r\n"
                f"LOCATION:https://zoom.us/j/{meeting}\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
            )
            msg.add_alternative(ics, subtype="calendar")
        return msg

    def receipt(self, when: datetime) -> EmailMessage:
        shop = self.rng.choice(
            ["orders@shop.example", "receipts@coffee.example", "billing@cloudhost.example"]
        )
        amount = self.rng.randrange(3, 400)
        msg = self.base(("Receipts", shop), self.me, f"Your receipt for ${amount}.00", when)
        msg.set_content(
            f"Thanks for your order. Total: ${amount}.00\nOrder #{self.rng.randrange(10000, 99999)}"
        )
        return msg

    def mailing_list_bcc(self, when: datetime) -> EmailMessage:
        msg = self.base(
            ("Release Bot", "releases@lists.project.example"),
            "announce@lists.project.example",
            f"[announce] v2.{self.rng.randrange(1, 9)}.0 released",
            when,
        )
        msg["List-Id"] = "Project announcements <announce.lists.project.example>"
        msg["Precedence"] = "list"
        msg.set_content("A new release is out with new features and fixes.")
        return msg


UNIQUE_MESSAGES = 400
_DATE = re.compile(rb"^Date: .*$", re.MULTILINE)
_MSGID = re.compile(rb"^Message-ID: .*$", re.MULTILINE)

KINDS = [
    ("newsletter", 0.30),
    ("list", 0.05),
    ("notification", 0.25),
    ("personal", 0.20),
    ("cc", 0.08),
    ("zoom", 0.06),
    ("receipt", 0.06),
]


def generate_mailbox(
    count: int = 300,
    *,
    identity_email: str = "alex.roy@example.com",
    identity_name: str = "Alex Roy",
    aliases: Sequence[str] = ("aroy@example.com",),
    now: datetime | None = None,
    seed: int = 7,
) -> list[SeedMessage]:
    rng = random.Random(seed)
    now = now or datetime.now(UTC)
    b = _Builder(rng, now, identity_email, identity_name, aliases)
    kinds, weights = zip(*KINDS, strict=True)
    makers = {
        "newsletter": b.newsletter,
        "notification": b.notification,
        "zoom": b.zoom,
        "receipt": b.receipt,
        "list": b.mailing_list_bcc,
    }
    templates: list[tuple[str, bytes]] = []
    out: list[SeedMessage] = []
    for i in range(count):
        kind = rng.choices(kinds, weights)[0]
        when = _dt(rng, now, 0.08)
        if i < UNIQUE_MESSAGES:
            maker = makers.get(kind) or (lambda w, k=kind: b.personal(w, cc=k == "cc"))
            raw = maker(when).as_bytes()
            templates.append((kind, raw))
        else:
            # Building EmailMessages is slow; big mailboxes reuse bodies with
            # fresh Date and Message-ID headers.
            kind, raw = rng.choice(templates)
            raw = _DATE.sub(b"Date: " + format_datetime(when).encode(), raw, count=1)
            raw = _MSGID.sub(
                f"Message-ID: <{i}.{int(when.timestamp())}@bulk.example>".encode(), raw, count=1
            )
        age_days = (now - when).days
        flags: list[str] = []
        if rng.random() < (0.85 if age_days > 7 else 0.35):
            flags.append("\\Seen")
        if kind in ("personal", "zoom") and rng.random() < 0.1:
            flags.append("\\Flagged")
        folder = "INBOX"
        if kind == "receipt" and rng.random() < 0.4:
            folder = "Receipts"
        elif age_days > 30 and rng.random() < 0.08:
            folder = "Archive"
        out.append(
            SeedMessage(raw=raw, internal_date=when, kind=kind, folder=folder, flags=tuple(flags))
        )
    out.sort(key=lambda m: m.internal_date)
    return out


def seed_via_imap(
    client: imapclient.IMAPClient, messages: Iterable[SeedMessage], batch: int = 50
) -> int:
    existing = {name for _, _, name in client.list_folders()}
    n = 0
    for m in messages:
        if m.folder not in existing:
            client.create_folder(m.folder)
            existing.add(m.folder)
        client.append(m.folder, m.raw, flags=m.flags, msg_time=m.internal_date)
        n += 1
    return n


_INFO = {"\\Seen": "S", "\\Flagged": "F", "\\Answered": "R", "\\Draft": "D", "\\Deleted": "T"}


def write_maildir(maildir: Path, messages: Iterable[SeedMessage]) -> int:
    """Fast path for large mailboxes: files straight into the Maildir (LAYOUT=fs)."""
    host = "piper-demo"
    n = 0
    made: set[Path] = set()
    stamp = int(time.time())
    for m in messages:
        folder = maildir if m.folder.upper() == "INBOX" else maildir / m.folder
        if folder not in made:
            for sub in ("cur", "new", "tmp"):
                (folder / sub).mkdir(parents=True, exist_ok=True)
            made.add(folder)
        info = "".join(sorted(_INFO[f] for f in m.flags if f in _INFO))
        path = folder / "cur" / f"{stamp}.M{n}P{os.getpid()}.{host},S={len(m.raw)}:2,{info}"
        path.write_bytes(m.raw)
        ts = m.internal_date.timestamp()
        os.utime(path, (ts, ts))
        n += 1
    chown_tree(maildir.parent)
    return n


def seed_demo(
    server: DovecotServer,
    *,
    count: int = 300,
    identity_email: str = "alex.roy@example.com",
    identity_name: str = "Alex Roy",
    aliases: Sequence[str] = ("aroy@example.com",),
) -> int:
    """Seed the demo mailbox once; a persistent demo mailbox is never seeded twice."""
    client = server.connect()
    try:
        if client.select_folder("INBOX", readonly=True).get(b"EXISTS", 0):
            return 0
        msgs = generate_mailbox(
            count, identity_email=identity_email, identity_name=identity_name, aliases=aliases
        )
        return seed_via_imap(client, msgs)
    finally:
        client.logout()
