"""A realistic generated mailbox for the demo, the tests and the benchmark.

The mix is what a busy inbox looks like, because the product's rules are
about telling these apart: bulk newsletters and notifications that may be
cleaned, versus mail addressed to the person (by address, alias, odd display
name or group), mail that only CCs them, and mail that merely mentions them by
name, which must never be cleaned. Encodings vary (quoted-printable, base64,
RFC 2047 in UTF-8 and ISO-8859-1, HTML-only, attachments, calendar parts) so
the MIME decoder meets what real servers hold.

Everything is derived from one `random.Random(seed)` and `now`, so the same
arguments give byte-identical messages.
"""

from __future__ import annotations

import itertools
import os
import random
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from email.header import Header
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, formataddr
from html import escape
from pathlib import Path

import imapclient

from app.demo.dovecot import DovecotServer, nobody_ids


@dataclass(frozen=True)
class SeedMessage:
    """One message to put on the server, with what IMAP APPEND needs besides the bytes."""

    raw: bytes  # RFC 5322, CRLF line endings
    internal_date: datetime  # tz-aware
    kind: str
    folder: str = "INBOX"
    flags: tuple[str, ...] = field(default=())


# Shares of each kind; the counts are exact (largest remainder), not sampled,
# so even a small mailbox holds every kind.
KIND_SHARES: tuple[tuple[str, float], ...] = (
    ("newsletter", 0.30),
    ("list", 0.05),  # a mailing list the person is only Bcc'd on
    ("notification", 0.25),
    ("personal", 0.17),
    ("mention", 0.03),  # colleagues writing to a team address, naming the person
    ("cc", 0.08),
    ("zoom", 0.06),
    ("receipt", 0.06),
)

# Building and serialising an EmailMessage costs about a millisecond; beyond
# this many, messages reuse a built one of the same kind with a fresh Date and
# Message-ID, which keeps 10,000 messages around a second.
UNIQUE_MESSAGES = 800
TODAY_SHARE = 0.08
HISTORY_DAYS = 60

PEOPLE: tuple[tuple[str, str], ...] = (
    ("Maria Garcia", "maria.garcia@partner.example"),
    ("Bob Chen", "bob.chen@example.org"),
    ("Søren Kjær", "soren@nordic.example"),
    ("Priya Natarajan", "priya@clientco.example"),
    ("José Álvarez", "jose.alvarez@example.net"),
    ("Dana Whitfield", "dana@example.org"),
    ("François Lefèvre", "f.lefevre@agence.example"),
    ("Kenji Watanabe", "kenji.w@example.jp"),
    ("Zoë Brennan", "zoe@brennan-design.example"),
)
COLLEAGUES: tuple[tuple[str, str], ...] = (
    ("Sam Okafor", "sam.okafor@{domain}"),
    ("Lena Fischer", "lena.fischer@{domain}"),
    ("Tom Becker", "tom.becker@{domain}"),
    ("Ines Moreau", "ines.moreau@{domain}"),
)
TOPICS = (
    "quarterly planning",
    "the new onboarding flow",
    "invoice #4471",
    "release 2.4",
    "budget review",
    "the offsite agenda",
    "the hiring plan",
    "API rate limits",
    "the design review",
    "customer feedback from Acme",
    "the Q3 roadmap",
    "the contract renewal",
    "the data migration",
    "the board deck",
)
ASKS = (
    "Could you take a look at {topic} before Friday?",
    "Can we move our call about {topic} to tomorrow morning?",
    "Do you have 10 minutes today to go over {topic}?",
    "Please review {topic} and let me know what you think.",
    "Just a heads-up on {topic}, no action needed from your side.",
    "Thanks for the notes on {topic}! I have two small questions.",
    "I've attached my comments on {topic}. The second section needs the most work.",
)
MENTIONS = (
    "{first} said they'd have the numbers for {topic} by Thursday.",
    "Let's ask {first} to sign off on {topic} before we ship.",
    "I talked to {first} yesterday about {topic}; they're on board.",
    "Looping back on {topic}: {first}, can you confirm the dates?",
    "Great work on {topic}, everyone, and special thanks to {first}.",
)
NEWSLETTERS: tuple[tuple[str, str, str, tuple[str, ...]], ...] = (
    (
        "The Batch",
        "newsletter@deeplearning.example",
        "batch.deeplearning.example",
        ("The Batch: {topic}", "This week in AI: {topic}"),
    ),
    ("Morning Brew", "crew@morningbrew.example", "brew.morningbrew.example", ("☕ {topic}",)),
    (
        "Product Hunt Daily",
        "hello@digest.producthunt.example",
        "daily.producthunt.example",
        ("Top products today: {topic}", "🚀 {topic} and 4 more launches"),
    ),
    (
        "Acme Deals",
        "deals@acme-shop.example",
        "deals.acme-shop.example",
        ("{pct}% off {product} — this weekend only", "Last chance: {product} from ${price}"),
    ),
    (
        "Python Weekly",
        "info@pythonweekly.example",
        "pythonweekly.example",
        ("Python Weekly - Issue {n}",),
    ),
    (
        "Smart Home Digest",
        "digest@smarthome.example",
        "digest.smarthome.example",
        ("New Alexa skills and {product} deals", "Smart Home Digest #{n}: {topic}"),
    ),
    (
        "Ana Ruiz from Field Notes",
        "field-notes@substack.example",
        "field-notes.substack.example",
        ("{topic}: what I learned", "Field Notes #{n}"),
    ),
)
# Sent in ISO-8859-1, subject and body, the way older European list software does.
LATIN1_NEWSLETTER = (
    "Café Société",
    "lettre@cafe-societe.example",
    "lettre.cafe-societe.example",
    ("Nouveautés de la semaine : {sujet}", "Élégance d'été : {sujet}"),
)
SUJETS = ("soirée dégustation", "café éthiopien", "pâtisseries fraîches", "menu d'automne")
NEWS_TOPICS = (
    "AI agents in production",
    "why vector databases are everywhere",
    "the state of remote work",
    "a new open-source LLM",
    "chip export rules",
    "the best laptops of the year",
    "inflation cools again",
    "three habits of fast teams",
)
PRODUCTS = ("running shoes", "kitchen gadgets", "noise-cancelling headphones", "smart plugs")
SHOPS: tuple[tuple[str, str, str], ...] = (
    ("Acme Shop", "orders@acme-shop.example", "Your Acme Shop order #{n} has shipped"),
    ("Bluebottle Coffee", "receipts@coffee.example", "Your receipt from Bluebottle Coffee"),
    ("CloudHost Billing", "billing@cloudhost.example", "Invoice {n} for {month}"),
    ("Ride", "no-reply@ride.example", "Your {day} evening trip with Ride"),
    ("App Store", "no_reply@store.example", "Your receipt from App Store"),
)
DEVICES = ("Linux", "iPhone 15", "Windows", "a new Mac", "Android")
SENDER_ZONES = tuple(timezone(timedelta(hours=h)) for h in (-8, -5, 0, 1, 2, 5.5, 9))
PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"


def _latin1(text: str) -> bool:
    return all(ord(c) < 256 for c in text)


def _encoded_word(text: str, charset: str, header: str) -> str:
    """RFC 2047 in a chosen charset; EmailMessage itself only ever writes UTF-8."""
    return Header(text, charset, header_name=header).encode()


class _Builder:
    """Builds one EmailMessage per kind; variant counters make sure every encoding
    shows up even in a small mailbox instead of depending on luck."""

    def __init__(
        self,
        rng: random.Random,
        identity_email: str,
        identity_name: str,
        aliases: Sequence[str],
    ) -> None:
        self.rng = rng
        self.me = identity_email
        self.name = identity_name
        self.aliases = list(aliases)
        self.first = identity_name.split()[0] if identity_name.strip() else "there"
        self.domain = identity_email.rsplit("@", 1)[-1]
        self.colleagues = [(n, a.format(domain=self.domain)) for n, a in COLLEAGUES]
        self.seq: dict[str, itertools.count[int]] = {}

    def variant(self, kind: str) -> int:
        return next(self.seq.setdefault(kind, itertools.count()))

    # -- headers ---------------------------------------------------------------

    def new(
        self,
        sender: tuple[str, str],
        subject: str,
        when: datetime,
        *,
        to: str,
        cc: str | None = None,
        charset: str | None = None,
    ) -> EmailMessage:
        msg = EmailMessage(policy=SMTP)
        display, addr = sender
        # Written raw: EmailMessage would re-encode every name as UTF-8 and turn a
        # "(Google Calendar)" inside an encoded name into a comment.
        if display.isascii():
            msg.set_raw("From", formataddr((display, addr)))
        else:
            use_latin1 = charset == "iso-8859-1" or (_latin1(display) and self.rng.random() < 0.5)
            word = _encoded_word(display, "iso-8859-1" if use_latin1 else "utf-8", "From")
            # Fold by hand: a raw line over 78 characters would be re-parsed and
            # re-folded, which is exactly what writing it raw avoids.
            last = word.rsplit("\n", 1)[-1]
            sep = " " if len(last) + len(addr) + 9 <= 78 else "\n "
            msg.set_raw("From", f"{word}{sep}<{addr}>")
        msg["To"] = to
        if cc:
            msg["Cc"] = cc
        if charset and not subject.isascii():
            msg.set_raw("Subject", _encoded_word(subject, charset, "Subject"))
        else:
            msg["Subject"] = subject
        msg["Date"] = self.date_header(when)
        msg["Message-ID"] = self.message_id(addr.rsplit("@", 1)[-1])
        return msg

    def to_bytes(self, msg: EmailMessage) -> bytes:
        """Serialise with boundaries from our rng: the generator would otherwise draw
        them from the global `random`, and the same seed would give other bytes."""
        for part in msg.walk():
            if part.is_multipart() and part.get_boundary() is None:
                part.set_boundary(f"=_piper_{self.rng.getrandbits(64):016x}")
        return msg.as_bytes()

    def date_header(self, when: datetime) -> str:
        return format_datetime(when.astimezone(self.rng.choice(SENDER_ZONES)))

    def message_id(self, domain: str) -> str:
        return f"<{self.rng.getrandbits(64):016x}.{self.rng.getrandbits(24):06x}@{domain}>"

    def me_as_recipient(self) -> str:
        """The person as senders really write them: plain, alias, "Last, First",
        upper-case addresses, sometimes next to others or inside a group."""
        r = self.rng.random()
        alias = self.rng.choice(self.aliases) if self.aliases else self.me
        if r < 0.15:
            return alias
        if r < 0.25 and " " in self.name:
            first, last = self.name.split(" ", 1)
            return f'"{last}, {first}" <{alias.upper()}>'
        if r < 0.32:
            return self.me.upper()
        if r < 0.42:
            other = self.rng.choice(self.colleagues)
            return f"{formataddr((self.name, self.me))}, {formataddr(other)}"
        if r < 0.47:
            other = self.rng.choice(self.colleagues)
            return f"Project team: {formataddr(other)}, {formataddr((self.name, alias))};"
        return formataddr((self.name, self.me))

    # -- bodies ----------------------------------------------------------------

    def set_body(self, msg: EmailMessage, text: str, html: str | None, style: str) -> None:
        """style: plain | qp | latin1 | b64 | alt | html."""
        if style == "html" and html:
            msg.set_content(html, subtype="html", cte="quoted-printable")
        elif style == "alt" and html:
            msg.set_content(text, cte="quoted-printable")
            msg.add_alternative(html, subtype="html", cte="base64")
        elif style == "latin1" and _latin1(text):
            msg.set_content(text, charset="iso-8859-1", cte="quoted-printable")
        elif style == "b64":
            msg.set_content(text, cte="base64")
        elif style == "qp":
            msg.set_content(text, cte="quoted-printable")
        else:
            msg.set_content(text)

    @staticmethod
    def html(text: str, title: str = "") -> str:
        paras = "".join(f"<p>{escape(p).replace(chr(10), '<br>')}</p>" for p in text.split("\n\n"))
        head = f"<h2>{escape(title)}</h2>" if title else ""
        return f'<html><body style="font-family:sans-serif">{head}{paras}</body></html>'

    # -- kinds -----------------------------------------------------------------

    def newsletter(self, when: datetime) -> EmailMessage:
        v = self.variant("newsletter")
        rng = self.rng
        if v % 9 == 4:
            display, addr, list_id, subjects = LATIN1_NEWSLETTER
            subject = rng.choice(subjects).format(sujet=rng.choice(SUJETS))
            charset: str | None = "iso-8859-1"
        else:
            display, addr, list_id, subjects = rng.choice(NEWSLETTERS)
            subject = rng.choice(subjects).format(
                topic=rng.choice(NEWS_TOPICS),
                product=rng.choice(PRODUCTS),
                pct=rng.choice((10, 20, 30, 50)),
                price=rng.randrange(9, 199),
                n=rng.randrange(100, 700),
            )
            charset = None
        host = addr.rsplit("@", 1)[1]
        # Most bulk mail hides the recipient list; some is addressed to the person.
        to = rng.choice(
            (
                "undisclosed-recipients:;",
                f"{display} subscribers <subscribers@{host}>",
                formataddr((self.name, self.me)),
            )
        )
        msg = self.new((display, addr), subject, when, to=to, charset=charset)
        token = rng.getrandbits(48)
        msg["List-Unsubscribe"] = (
            f"<mailto:unsubscribe-{token:x}@{host}?subject=unsubscribe>, "
            f"<https://{host}/unsubscribe?u={token:x}>"
        )
        if v % 2:
            msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        msg["List-Id"] = f"{display} <{list_id}>"
        if v % 3 != 1:
            msg["Precedence"] = "bulk"
        if charset:
            text = (
                f"Bonjour,\n\nCette semaine au café : {rng.choice(SUJETS)}, et notre "
                "sélection de thés d'été. À très bientôt !\n\n"
                f"Se désinscrire : https://{host}/unsubscribe?u={token:x}"
            )
            self.set_body(msg, text, None, "latin1")
            return msg
        topic = rng.choice(NEWS_TOPICS)
        text = (
            f"In this issue: {topic}.\n\n"
            f"Plus: {rng.choice(NEWS_TOPICS)} — and why it matters for you. "
            "Read the full story on our site.\n\n"
            "You are receiving this because you subscribed. "
            f"Unsubscribe: https://{host}/unsubscribe?u={token:x}"
        )
        style = "html" if v % 5 == 2 else "alt"
        self.set_body(msg, text, self.html(text, display), style)
        return msg

    def notification(self, when: datetime) -> EmailMessage:
        v = self.variant("notification")
        rng = self.rng
        n = rng.randrange(12, 980)
        topic = rng.choice(TOPICS)
        which = v % 6
        if which in (0, 3):
            actor = rng.choice(self.colleagues)[0]
            subject = rng.choice(
                (
                    f"[acme/piper] Fix retry on IDLE timeout (PR #{n})",
                    f"Re: [acme/piper] Sync stalls after {topic} (Issue #{n})",
                    f"[acme/piper] Release v2.{n % 10}.0 published",
                )
            )
            msg = self.new(
                (actor, "notifications@github.com"),
                subject,
                when,
                to="acme/piper <piper@noreply.github.com>",
                cc=rng.choice(
                    (
                        "Subscribed <subscribed@noreply.github.com>",
                        "Review requested <review_requested@noreply.github.com>",
                    )
                ),
            )
            msg["List-ID"] = "acme/piper <piper.acme.github.com>"
            msg["List-Archive"] = "https://github.com/acme/piper"
            msg["List-Unsubscribe"] = (
                f"<mailto:unsub+{rng.getrandbits(40):x}@reply.github.com>, "
                f"<https://github.com/notifications/unsubscribe/{rng.getrandbits(40):x}>"
            )
            msg["X-GitHub-Reason"] = "subscribed"
            text = (
                f"{actor} commented on this pull request.\n\n"
                f"> Looks good overall; one question about {topic}.\n\n"
                "—\nReply to this email directly, view it on GitHub:\n"
                f"https://github.com/acme/piper/pull/{n}\n"
                "You are receiving this because you are subscribed to this thread."
            )
            self.set_body(msg, text, self.html(text), "alt")
        elif which == 1:
            device = rng.choice(DEVICES)
            msg = self.new(
                ("Google", "no-reply@accounts.google.com"),
                rng.choice((f"Security alert: new sign-in on {device}", "Security alert")),
                when,
                to=self.me,
            )
            text = (
                f"A new sign-in on {device}\n\n{self.me}\n\n"
                "We noticed a new sign-in to your Google Account. If this was you, "
                "you don't need to do anything. If not, we'll help you secure your account.\n\n"
                "Check activity: https://myaccount.google.com/notifications"
            )
            self.set_body(msg, text, self.html(text), "alt")
        elif which == 2:
            msg = self.new(
                ("LinkedIn", "messages-noreply@linkedin.com"),
                rng.choice(
                    (
                        f"You appeared in {n % 60 + 3} searches this week",
                        f"{rng.choice(PEOPLE)[0]} and others shared posts you may like",
                    )
                ),
                when,
                to=formataddr((self.name, self.me)),
            )
            msg["List-Unsubscribe"] = (
                f"<https://www.linkedin.com/e/v2?e=unsub&t={rng.getrandbits(40):x}>"
            )
            text = "See who's been looking at your profile.\n\nhttps://www.linkedin.com/me/"
            self.set_body(msg, text, self.html(text), "html")
        elif which == 4:
            msg = self.new(
                ("Jira", "jira@acme.atlassian.net"),
                f"[JIRA] (PIP-{n}) {topic.capitalize()}",
                when,
                to="piper-dev@" + self.domain,
            )
            msg["Auto-Submitted"] = "auto-generated"
            text = (
                f"{rng.choice(self.colleagues)[0]} updated PIP-{n}\n\n"
                "Status: In Progress -> In Review\n\n"
                f"https://acme.atlassian.net/browse/PIP-{n}"
            )
            self.set_body(msg, text, None, "qp")
        else:
            msg = self.new(
                ("Slack", "feedback@slack.com"),
                f"[Acme] {n % 40 + 2} new messages in #general",
                when,
                to="undisclosed-recipients:;",
            )
            text = (
                f"You have {n % 40 + 2} unread messages in #general and 2 in #releases.\n\n"
                "Open Slack: https://acme.slack.com/"
            )
            self.set_body(msg, text, self.html(text), "b64")
        if "Auto-Submitted" not in msg:
            msg["Auto-Submitted"] = "auto-generated"
        return msg

    def personal(self, when: datetime) -> EmailMessage:
        v = self.variant("personal")
        rng = self.rng
        person = rng.choice(PEOPLE)
        topic = rng.choice(TOPICS)
        subject = rng.choice((topic.capitalize(), f"Re: {topic}", f"Quick question on {topic}"))
        msg = self.new(person, subject, when, to=self.me_as_recipient())
        if subject.startswith("Re: "):
            ref = self.message_id(self.domain)
            msg["In-Reply-To"] = ref
            msg["References"] = ref
        greeting = rng.choice(("Hi {first},", "Hello {first},", "{first} —", "Hey {first}!"))
        text = (
            f"{greeting.format(first=self.first)}\n\n"
            f"{rng.choice(ASKS).format(topic=topic)}\n\n"
            f"Best,\n{person[0]}"
        )
        style = ("plain", "alt", "latin1", "plain", "b64", "alt", "html", "qp")[v % 8]
        self.set_body(msg, text, self.html(text), style)
        if v % 20 == 7:
            msg.add_attachment(
                PDF, maintype="application", subtype="pdf", filename=f"{topic} notes.pdf"
            )
        return msg

    def mention(self, when: datetime) -> EmailMessage:
        """The person is in neither To nor CC, only named in the body."""
        v = self.variant("mention")
        rng = self.rng
        sender = rng.choice(self.colleagues)
        topic = rng.choice(TOPICS)
        team = f"team@{self.domain}"
        msg = self.new(sender, f"Re: {topic}", when, to=f"Team <{team}>")
        if v % 2:
            msg["List-Id"] = f"Team <team.{self.domain}>"
            msg["Precedence"] = "list"
        text = (
            "Hi all,\n\n"
            f"{rng.choice(MENTIONS).format(first=self.first, topic=topic)}\n\n"
            f"Thanks,\n{sender[0].split()[0]}"
        )
        self.set_body(msg, text, self.html(text), ("plain", "alt", "qp")[v % 3])
        return msg

    def cc(self, when: datetime) -> EmailMessage:
        v = self.variant("cc")
        rng = self.rng
        person = rng.choice(PEOPLE)
        other = rng.choice([p for p in PEOPLE if p != person])
        topic = rng.choice(TOPICS)
        addressee = rng.choice([p for p in PEOPLE if p not in (person, other)])
        cc = self.me_as_recipient() if v % 3 else f"{formataddr(other)}, {self.me_as_recipient()}"
        msg = self.new(person, f"Re: {topic}", when, to=formataddr(addressee), cc=cc)
        # Only some CC mail says the name; being in CC alone must be enough.
        fyi = f"Adding {self.first} for visibility. " if v % 2 else ""
        text = (
            f"Hi {addressee[0].split()[0]},\n\n{fyi}"
            f"{rng.choice(ASKS).format(topic=topic)}\n\nBest,\n{person[0]}"
        )
        self.set_body(msg, text, self.html(text), ("plain", "alt", "latin1", "qp")[v % 4])
        return msg

    def zoom(self, when: datetime) -> EmailMessage:
        v = self.variant("zoom")
        rng = self.rng
        person = rng.choice(PEOPLE)
        topic = rng.choice(TOPICS)
        meeting = rng.randrange(10**9, 10**11)
        pwd = f"{rng.getrandbits(60):x}"
        start = (when + timedelta(days=rng.randrange(1, 8))).replace(
            hour=rng.choice((9, 10, 14, 16)), minute=rng.choice((0, 30)), second=0, microsecond=0
        )
        end = start + timedelta(minutes=30)
        link = f"https://zoom.us/j/{meeting}?pwd={pwd}"
        text = (
            f"{person[0]} is inviting you to a scheduled Zoom meeting.\n\n"
            f"Topic: {topic.capitalize()}\nTime: {start:%b %d, %Y %I:%M %p} UTC\n\n"
            f"Join Zoom Meeting\n{link}\n\nMeeting ID: {meeting}\nPasscode: {pwd[:6]}"
        )
        if v % 2 == 0:
            subject = f"Invitation: {topic.capitalize()} @ {start:%a %b %d, %Y %I:%M %p} (UTC)"
            msg = self.new(
                (f"{person[0]} (Google Calendar)", "calendar-notification@google.com"),
                subject + f" ({self.me})",
                when,
                to=self.me,
            )
            msg["Reply-To"] = formataddr(person)
            ics = "\r\n".join(
                (
                    "BEGIN:VCALENDAR",
                    "PRODID:-//Google Inc//Google Calendar 70.9054//EN",
                    "VERSION:2.0",
                    "METHOD:REQUEST",
                    "BEGIN:VEVENT",
                    f"DTSTART:{start:%Y%m%dT%H%M%SZ}",
                    f"DTEND:{end:%Y%m%dT%H%M%SZ}",
                    f"DTSTAMP:{when.astimezone(UTC):%Y%m%dT%H%M%SZ}",
                    f"ORGANIZER;CN={person[0]}:mailto:{person[1]}",
                    f"ATTENDEE;CN={self.name};PARTSTAT=NEEDS-ACTION;RSVP=TRUE:mailto:{self.me}",
                    f"UID:{rng.getrandbits(64):016x}@google.com",
                    f"SUMMARY:{topic.capitalize()}",
                    f"LOCATION:{link}",
                    f"DESCRIPTION:Join Zoom Meeting {link}",
                    "STATUS:CONFIRMED",
                    "END:VEVENT",
                    "END:VCALENDAR",
                    "",
                )
            )
            msg.set_content(text)
            msg.add_alternative(self.html(text), subtype="html")
            msg.add_alternative(ics, subtype="calendar", params={"method": "REQUEST"})
        else:
            msg = self.new(
                person, f"Invitation: {topic.capitalize()}", when, to=self.me_as_recipient()
            )
            self.set_body(msg, text, self.html(text, "Zoom meeting invitation"), "alt")
        return msg

    def receipt(self, when: datetime) -> EmailMessage:
        v = self.variant("receipt")
        rng = self.rng
        shop, addr, subject = rng.choice(SHOPS)
        n = rng.randrange(100000, 999999)
        amount = f"{rng.randrange(3, 400)}.{rng.randrange(100):02d}"
        msg = self.new(
            (shop, addr),
            subject.format(n=n, month=f"{when:%B %Y}", day=f"{when:%A}"),
            when,
            to=formataddr((self.name, self.me)),
        )
        text = (
            f"Thanks for your order.\n\nOrder #{n}\nTotal: ${amount}\n"
            f"Paid with Visa •••• {rng.randrange(1000, 9999)}\n\n"
            f"Questions? Reply to this email or visit https://{addr.rsplit('@', 1)[1]}/help"
        )
        self.set_body(msg, text, self.html(text, shop), ("html", "alt", "b64")[v % 3])
        if v % 12 == 3:
            msg.add_attachment(
                PDF, maintype="application", subtype="pdf", filename=f"invoice-{n}.pdf"
            )
        return msg

    def bcc_list(self, when: datetime) -> EmailMessage:
        """A list the person reads but is never named on: not in To, CC or body."""
        v = self.variant("list")
        rng = self.rng
        if v % 2 == 0:
            msg = self.new(
                ("Release Bot", "releases@lists.project.example"),
                f"[announce] piper-lib 2.{rng.randrange(1, 9)}.{rng.randrange(10)} released",
                when,
                to="announce@lists.project.example",
            )
            text = "A new release is out with new features and fixes.\n\nChangelog: https://project.example/changes"
        else:
            person = rng.choice(PEOPLE)
            msg = self.new(
                person,
                f"[python-users] {rng.choice(NEWS_TOPICS).capitalize()}?",
                when,
                to="python-users@lists.project.example",
            )
            text = f"Has anyone tried this yet? Curious about experiences.\n\n-- \n{person[0]}"
        name = "announce" if v % 2 == 0 else "python-users"
        msg["List-Id"] = f"{name} <{name}.lists.project.example>"
        msg["List-Post"] = f"<mailto:{name}@lists.project.example>"
        msg["List-Unsubscribe"] = (
            f"<mailto:{name}-leave@lists.project.example>, "
            f"<https://lists.project.example/mailman/options/{name}>"
        )
        msg["Precedence"] = "list"
        self.set_body(msg, text, None, "plain")
        return msg


def _kind_plan(count: int, rng: random.Random) -> list[str]:
    shares = KIND_SHARES
    exact = [count * share for _, share in shares]
    counts = [int(x) for x in exact]
    by_remainder = sorted(range(len(shares)), key=lambda i: exact[i] - counts[i], reverse=True)
    for i in by_remainder[: count - sum(counts)]:
        counts[i] += 1
    plan = [kind for (kind, _), n in zip(shares, counts, strict=True) for _ in range(n)]
    rng.shuffle(plan)
    return plan


def _when(rng: random.Random, now: datetime) -> datetime:
    if rng.random() < TODAY_SHARE:
        midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
        span = max(1, int((now - midnight).total_seconds()))
        return midnight + timedelta(seconds=rng.randrange(span))
    return now - timedelta(days=rng.randrange(1, HISTORY_DAYS), seconds=rng.randrange(86400))


def _flags(rng: random.Random, kind: str, age: timedelta) -> tuple[str, ...]:
    flags: list[str] = []
    recent = age < timedelta(days=3)
    read_share = {"notification": 0.6, "newsletter": 0.5, "list": 0.4}.get(kind, 0.9)
    if rng.random() < (read_share * (0.4 if recent else 1.0)):
        flags.append("\\Seen")
        if kind in ("personal", "cc") and rng.random() < 0.25:
            flags.append("\\Answered")
    if kind in ("personal", "zoom", "cc", "mention") and rng.random() < 0.1:
        flags.append("\\Flagged")
    return tuple(flags)


def _folder(rng: random.Random, kind: str, age: timedelta) -> str:
    if kind == "receipt" and rng.random() < 0.4:
        return "Receipts"
    if age > timedelta(days=30) and rng.random() < 0.12:
        return "Archive"
    return "INBOX"


_DATE_LINE = re.compile(rb"^Date: [^\r\n]*", re.MULTILINE)
_MSGID_LINE = re.compile(rb"^Message-ID: <[^@\r\n]*@([^>\r\n]*)>", re.MULTILINE)


def generate_mailbox(
    count: int = 300,
    *,
    identity_email: str = "alex.roy@example.com",
    identity_name: str = "Alex Roy",
    aliases: Sequence[str] = ("aroy@example.com",),
    now: datetime | None = None,
    seed: int = 7,
) -> list[SeedMessage]:
    """`count` messages, oldest first, ready for `seed_via_imap` or `write_maildir`."""
    messages = list(
        iter_mailbox(
            count,
            identity_email=identity_email,
            identity_name=identity_name,
            aliases=aliases,
            now=now,
            seed=seed,
        )
    )
    messages.sort(key=lambda m: m.internal_date)
    return messages


def iter_mailbox(
    count: int = 300,
    *,
    identity_email: str = "alex.roy@example.com",
    identity_name: str = "Alex Roy",
    aliases: Sequence[str] = ("aroy@example.com",),
    now: datetime | None = None,
    seed: int = 7,
) -> Iterator[SeedMessage]:
    """`generate_mailbox`'s messages one at a time, in the order they are made
    (not by date), so a mailbox of 100,000 is never held in memory at once.

    Enough for `write_maildir`, which orders UIDs by the date in each file's
    name; `seed_via_imap` wants them sorted (`generate_mailbox`).
    """
    now = now or datetime.now(UTC)
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    rng = random.Random(seed)
    b = _Builder(rng, identity_email, identity_name, aliases)
    makers: dict[str, Callable[[datetime], EmailMessage]] = {
        "newsletter": b.newsletter,
        "list": b.bcc_list,
        "notification": b.notification,
        "personal": b.personal,
        "mention": b.mention,
        "cc": b.cc,
        "zoom": b.zoom,
        "receipt": b.receipt,
    }
    built: dict[str, list[bytes]] = {}
    for i, kind in enumerate(_kind_plan(count, rng)):
        when = _when(rng, now)
        if i < UNIQUE_MESSAGES or kind not in built:
            raw = b.to_bytes(makers[kind](when))
            built.setdefault(kind, []).append(raw)
        else:
            raw = rng.choice(built[kind])
            raw = _DATE_LINE.sub(b"Date: " + b.date_header(when).encode(), raw, count=1)
            raw = _MSGID_LINE.sub(
                lambda m: b"Message-ID: " + b.message_id(m[1].decode()).encode(), raw, count=1
            )
        age = now - when
        yield SeedMessage(
            raw=raw,
            internal_date=when,
            kind=kind,
            folder=_folder(rng, kind, age),
            flags=_flags(rng, kind, age),
        )


def _batches(messages: Iterable[SeedMessage], size: int) -> Iterator[list[SeedMessage]]:
    """Runs of at most `size` consecutive messages bound for the same folder."""
    run: list[SeedMessage] = []
    for m in messages:
        if run and (m.folder != run[0].folder or len(run) >= size):
            yield run
            run = []
        run.append(m)
    if run:
        yield run


def seed_via_imap(
    client: imapclient.IMAPClient, messages: Iterable[SeedMessage], batch: int = 50
) -> int:
    """Append through IMAP, the way any client would; MULTIAPPEND sends `batch`
    messages per command, so 300 messages take a handful of round trips."""
    existing = {name for _, _, name in client.list_folders()}
    multi = b"MULTIAPPEND" in client.capabilities()
    n = 0
    for run in _batches(messages, max(1, batch)):
        folder = run[0].folder
        if folder not in existing:
            client.create_folder(folder)
            existing.add(folder)
        if multi and len(run) > 1:
            client.multiappend(
                folder, [{"msg": m.raw, "flags": m.flags, "date": m.internal_date} for m in run]
            )
        else:
            for m in run:
                client.append(folder, m.raw, flags=m.flags, msg_time=m.internal_date)
        n += len(run)
    return n


_MAILDIR_INFO = {"\\Draft": "D", "\\Flagged": "F", "\\Answered": "R", "\\Seen": "S"}
_maildir_seq = itertools.count()


def write_maildir(maildir: Path, messages: Iterable[SeedMessage]) -> int:
    """Fast path for big mailboxes (10,000+): files straight into the Maildir.

    Layout is Dovecot's LAYOUT=fs: INBOX is `<maildir>/cur`, folder X is
    `<maildir>/X/cur`. Flags go in the ":2," info suffix, the internal date is
    the file's mtime, and file names start with the internal date so Dovecot,
    which numbers new files in name order, gives UIDs in date order. Dovecot
    indexes everything on first access. Files are chowned to nobody, who
    Dovecot reads them as.
    """
    uid, gid = nobody_ids()
    maildir = Path(maildir)
    pid = os.getpid()
    ready: set[Path] = set()
    n = 0

    def make_folder(path: Path) -> None:
        for sub in ("cur", "new", "tmp"):
            (path / sub).mkdir(parents=True, exist_ok=True)
        for p in (path, path / "cur", path / "new", path / "tmp"):
            os.chown(p, uid, gid)

    make_folder(maildir)
    os.chown(maildir.parent, uid, gid)
    for m in messages:
        folder = maildir if m.folder.upper() == "INBOX" else maildir / m.folder
        if folder not in ready:
            make_folder(folder)
            ready.add(folder)
        ts = m.internal_date.timestamp()
        info = "".join(sorted(_MAILDIR_INFO[f] for f in m.flags if f in _MAILDIR_INFO))
        size = len(m.raw)
        name = (
            f"{int(ts)}.M{int(ts % 1 * 1e6)}P{pid}Q{next(_maildir_seq)}.piper-demo"
            f",S={size},W={size}:2,{info}"
        )
        # One open file for write, owner and mtime: fewer path lookups is what
        # makes 10,000 files take about a second.
        fd = os.open(folder / "cur" / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            data = memoryview(m.raw)
            while data:
                data = data[os.write(fd, data) :]
            os.fchown(fd, uid, gid)
            os.utime(fd, (ts, ts))
        finally:
            os.close(fd)
        n += 1
    return n


def seed_demo(
    server: DovecotServer,
    *,
    count: int = 300,
    identity_email: str = "alex.roy@example.com",
    identity_name: str = "Alex Roy",
    aliases: Sequence[str] = ("aroy@example.com",),
    now: datetime | None = None,
) -> int:
    """Seed the demo mailbox unless its INBOX already holds mail, so a persistent
    demo mailbox is never seeded twice; returns how many messages were added."""
    client = server.connect()
    try:
        if client.folder_status("INBOX", [b"MESSAGES"])[b"MESSAGES"]:
            return 0
        messages = generate_mailbox(
            count,
            identity_email=identity_email,
            identity_name=identity_name,
            aliases=aliases,
            now=now,
        )
        return seed_via_imap(client, messages)
    finally:
        client.logout()
