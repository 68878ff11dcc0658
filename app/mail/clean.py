"""Which messages `/clean` may propose, and how sure it is.

The safety exclusion runs first and nothing outweighs it: a message where the
person (identity email or any alias) is in To or CC, or whose subject or body
mentions them anywhere, is never a candidate; neither is a flagged message.
Only then do bulk/automation signals add up (noisy-OR) to a confidence in [0, 1].

"Anywhere in the body" is more than the mirror keeps (an excerpt), so the
executor decides it over the whole message at ingest and stores the verdict on
the row (`mentions_you`) with the fingerprint of the identity it was decided
against (`mention_identity`). A row without a verdict, or with a verdict for
another identity, is treated as mentioning the person: fail safe.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Protocol

from app.mail.identity import Identity
from app.mail.keywords import Keywords
from app.quick_init import quick_init

# Where cleaned mail goes (a folder; on Gmail, a label): the one place it is named.
CLEAN_FOLDER = "Secretary/Auto-Cleaned"
MIN_CONFIDENCE = 0.5

NOREPLY = re.compile(
    r"^(no[-_.]?reply|do[-_.]?not[-_.]?reply|donotreply|notifications?|notify|alerts?|mailer|"
    r"mailer-daemon|newsletters?|news|digest|updates?|marketing|promo(tions)?|info|hello|team|support|"
    r"billing|receipts?|orders?|noreply[-+].*|bounce[s]?.*)(@|[-+.])",
    re.IGNORECASE,
)
NOTIFICATION_DOMAINS = (
    "github.com",
    "gitlab.com",
    "linkedin.com",
    "facebookmail.com",
    "twitter.com",
    "x.com",
    "slack.com",
    "atlassian.net",
    "atlassian.com",
    "google.com",
    "accounts.google.com",
    "medium.com",
    "substack.com",
    "mailchimp.com",
    "mcsv.net",
    "sendgrid.net",
    "amazonses.com",
    "zendesk.com",
    "intercom.io",
    "hubspot.com",
    "stripe.com",
    "paypal.com",
    "amazon.com",
    "notion.so",
    "figma.com",
    "trello.com",
    "asana.com",
    "dropbox.com",
    "quora.com",
    "meetup.com",
    "eventbrite.com",
)
NEWSLETTER_WORDS = re.compile(
    r"\b(newsletter|digest|weekly|monthly|roundup|edition|issue #?\d+|webinar|% off|sale|deal|"
    r"unsubscribe|promo|offer|new features?|product update|what'?s new)\b",
    re.IGNORECASE,
)
_NEWSLETTER_WORDS = Keywords(NEWSLETTER_WORDS)
_NOTIFICATION_DOMAINS = frozenset(NOTIFICATION_DOMAINS)

WEIGHTS = {
    "list_unsubscribe": 0.6,
    "list_id": 0.45,
    "precedence_bulk": 0.4,
    "auto_submitted": 0.6,
    "noreply_sender": 0.5,
    "notification_domain": 0.45,
    "newsletter_words": 0.3,
    "not_addressed_to_you": 0.2,
}


class CleanInput(Protocol):
    """What the verdict reads of a mirror row. `mentions_you` and
    `mention_identity` may be absent (rows from older code): then the row
    counts as not yet checked, which excludes it."""

    from_addr: str | None
    to_addrs: list[str]
    cc_addrs: list[str]
    subject: str
    body_excerpt: str
    flags: list[str]
    list_unsubscribe: str | None
    list_id: str | None
    precedence: str | None
    auto_submitted: str | None


@quick_init
@dataclass(frozen=True)
class CleanVerdict:
    candidate: bool
    confidence: float = 0.0
    category: str = ""
    signals: list[str] = field(default_factory=list)
    reason: str = ""
    direct: bool = False  # excluded because it involves the person directly


NOT_CHECKED = "not yet checked against your current identity"


def exclusion_reason(
    row: CleanInput, identity: Identity, *, recipient: bool | None = None
) -> str | None:
    """Why a message may never be cleaned, or None. Checked before anything else.
    `recipient`: `identity.is_recipient(row.to_addrs, row.cc_addrs)`, when the
    caller already knows it (triage does)."""
    if recipient is None:
        recipient = identity.is_recipient(row.to_addrs, row.cc_addrs)
    if recipient:
        return "addressed to you (To/CC)"
    # What the row shows is checked here too, whatever was stored.
    if identity.mentioned_in(row.subject or "") or identity.mentioned_in(row.body_excerpt or ""):
        return "mentions you"
    if getattr(row, "mention_identity", None) != identity.fingerprint:
        return NOT_CHECKED
    mentions = getattr(row, "mentions_you", None)
    if mentions is None:
        return "could not be read in full to check it does not mention you"
    if mentions is not False:
        return "mentions you (further into the message)"
    if "\\Flagged" in (row.flags or []):
        return "you flagged it"
    return None


def _notification_domain(domain: str) -> bool:
    """`domain` is one of NOTIFICATION_DOMAINS or a subdomain of one: looked up
    suffix by suffix rather than compared with each of them."""
    if domain in _NOTIFICATION_DOMAINS:
        return True
    dot = domain.find(".")
    while dot >= 0:
        if domain[dot + 1 :] in _NOTIFICATION_DOMAINS:
            return True
        dot = domain.find(".", dot + 1)
    return False


@lru_cache(maxsize=4096)
def _sender_signals(sender: str) -> tuple[str, ...]:
    """What the sender's address alone says (lower-cased): a mailbox hears
    from the same few dozen senders over and over, so this is kept."""
    signals = []
    domain = sender.rsplit("@", 1)[-1] if "@" in sender else ""
    if NOREPLY.match(sender):
        signals.append("noreply_sender")
    if domain and _notification_domain(domain):
        signals.append("notification_domain")
    return tuple(signals)


# Subjects recur too (replies, notifications, newsletters' series); a long
# one (hostile, or rare) is searched, not kept.
_newsletter_subject = lru_cache(maxsize=2048)(_NEWSLETTER_WORDS.search)
_KEPT_SUBJECT_CHARS = 256


def bulk_signals(row: CleanInput) -> list[str]:
    signals = []
    sender = (row.from_addr or "").lower()
    if row.list_unsubscribe:
        signals.append("list_unsubscribe")
    if row.list_id:
        signals.append("list_id")
    if (row.precedence or "").lower() in ("bulk", "list", "junk"):
        signals.append("precedence_bulk")
    if row.auto_submitted and row.auto_submitted.lower() != "no":
        signals.append("auto_submitted")
    if len(sender) <= 320:  # the longest valid address; a hostile one is not kept
        signals += _sender_signals(sender)
    else:
        signals += _sender_signals.__wrapped__(sender)
    subject = row.subject or ""
    if (
        _newsletter_subject(subject)
        if len(subject) <= _KEPT_SUBJECT_CHARS
        else _NEWSLETTER_WORDS.search(subject)
    ) or "unsubscribe" in (row.body_excerpt or "").lower():
        signals.append("newsletter_words")
    return signals


def assess_for_clean(row: CleanInput, identity: Identity) -> CleanVerdict:
    return assess_with_signals(row, identity, None)


def assess_with_signals(
    row: CleanInput,
    identity: Identity,
    bulk: Sequence[str] | None,
    *,
    recipient: bool | None = None,
) -> CleanVerdict:
    """`assess_for_clean` for a caller that already has `bulk_signals(row)`
    (and whether the person is in To or CC; triage has both): nothing is
    worked out twice."""
    reason = exclusion_reason(row, identity, recipient=recipient)
    if reason is not None:
        return CleanVerdict(candidate=False, reason=reason, direct=True)
    signals = bulk_signals(row) if bulk is None else list(bulk)
    if not signals:
        return CleanVerdict(candidate=False, reason="looks like personal mail")
    signals.append("not_addressed_to_you")  # implied: the exclusion above passed
    remaining = 1.0
    for s in signals:
        remaining *= 1.0 - WEIGHTS[s]
    confidence = round(min(0.99, 1.0 - remaining), 3)
    if ("list_unsubscribe" in signals and "newsletter_words" in signals) or "list_id" in signals:
        category = "newsletter"
    elif {"noreply_sender", "auto_submitted", "notification_domain"} & set(signals):
        category = "notification"
    else:
        category = "bulk"
    if confidence < MIN_CONFIDENCE:
        return CleanVerdict(
            candidate=False,
            confidence=confidence,
            category=category,
            signals=signals,
            reason="not clearly bulk mail",
        )
    return CleanVerdict(candidate=True, confidence=confidence, category=category, signals=signals)
