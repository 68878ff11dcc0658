"""Golden cases for /clean discovery: what may and may never be proposed.

Messages go through the executor's own parse (`parse_raw`, the same code a
sync runs, with the fetch prefix and the server's SEARCH verdict) and then
the /clean verdict, so "mentions you anywhere" is tested end to end.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from app.mail.clean import NOT_CHECKED, assess_for_clean
from app.mail.identity import Identity
from executor.parsing import RawMessage, parse_raw

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "clean"
ME = Identity(
    email="alex.roy@example.com", name="Alex Roy", aliases=("aroy@example.com", "aroy@netskope.com")
)
# Enough to hold these fixtures whole unless a test says otherwise (the parser's part; what
# a sync downloads, header + BODY_PREFIX_BYTES of body, is executor/handlers/sync.py's).
FETCH_PREFIX = 65536


@dataclass
class Row:
    from_addr: str | None
    to_addrs: list[str]
    cc_addrs: list[str]
    subject: str
    body_excerpt: str
    flags: list[str] = field(default_factory=list)
    list_unsubscribe: str | None = None
    list_id: str | None = None
    precedence: str | None = None
    auto_submitted: str | None = None
    # A row as a sync under ME stores it: checked, no mention found.
    mentions_you: bool | None = False
    mention_identity: str | None = ME.fingerprint


def load(
    name: str,
    flags: list[str] | None = None,
    *,
    identity: Identity = ME,
    prefix: int = FETCH_PREFIX,
    server_mentions: bool | None = None,
) -> Row:
    """The mirror row a sync would write for this fixture."""
    raw = (FIXTURES / name).read_bytes()
    return row_of(raw, flags, identity=identity, prefix=prefix, server_mentions=server_mentions)


def row_of(
    raw: bytes,
    flags: list[str] | None = None,
    *,
    identity: Identity = ME,
    prefix: int = FETCH_PREFIX,
    server_mentions: bool | None = None,
) -> Row:
    """The mirror row a sync would write for these bytes."""
    message = RawMessage(
        uid=1,
        flags=tuple(flags or ()),
        internal_date=None,
        size=len(raw),
        modseq=None,
        body=raw[:prefix],
        server_mentions=server_mentions,
    )
    [fetched], _problems = parse_raw([message], identity)
    p = fetched.parsed
    return Row(
        p.from_addr,
        list(p.to_addrs),
        list(p.cc_addrs),
        p.subject,
        p.body_excerpt,
        flags or [],
        p.list_unsubscribe,
        p.list_id,
        p.precedence,
        p.auto_submitted,
        fetched.mentions_you,
        fetched.mention_identity,
    )


@pytest.mark.parametrize(
    ("fixture", "why"),
    [
        ("to_user.eml", "To: the user"),
        ("cc_user.eml", "CC: the user"),
        ("to_alias.eml", "To: an alias"),
        ("display_name_comma.eml", '"Roy, Alex" <AROY@netskope.com> (the reported case)'),
        ("name_in_body.eml", "the user's name in the body"),
        ("newsletter_direct_to_user.eml", "a newsletter sent directly To the user"),
    ],
)
def test_direct_mail_is_never_a_candidate(fixture: str, why: str) -> None:
    verdict = assess_for_clean(load(fixture), ME)
    assert not verdict.candidate, why
    assert verdict.direct


# Bulk mail that mentions the person somewhere the excerpt does not show, or
# in a way only the whole message reveals.
MENTIONS = [
    ("digest_name_past_20k.eml", "a list digest naming the person 22 KB into its body"),
    ("html_unclosed_style.eml", "the name only in HTML after an unclosed <style>"),
    ("quoted_reply.eml", "the name only in a quoted reply"),
    ("alias_in_body.eml", "an alias address in the body"),
    ("encoded_subject.eml", "an RFC 2047-encoded subject naming them"),
    ("name_in_base64_attachment.eml", "the name in a base64 text attachment (RFC 2231 name)"),
    ("name_in_forwarded_message.eml", "the name in a forwarded message/rfc822, as an entity"),
]


@pytest.mark.parametrize(("fixture", "why"), MENTIONS)
def test_a_message_mentioning_the_person_anywhere_is_never_a_candidate(
    fixture: str, why: str
) -> None:
    row = load(fixture)
    assert row.mentions_you is True, why
    verdict = assess_for_clean(row, ME)
    assert not verdict.candidate and verdict.direct, why
    assert verdict.reason.startswith("mentions you"), verdict.reason


@pytest.mark.parametrize(
    "fixture",
    [
        "digest_name_past_20k.eml",
        "name_in_base64_attachment.eml",
        "name_in_forwarded_message.eml",
    ],
)
def test_only_the_stored_whole_message_verdict_keeps_these_out(fixture: str) -> None:
    """The mention is not in what the mirror keeps (excerpt, subject), so the
    old excerpt check alone would have proposed them: the verdict decides."""
    row = load(fixture)
    assert not ME.name_mentioned(row.body_excerpt) and not ME.name_mentioned(row.subject)
    assert assess_for_clean(dataclasses.replace(row, mentions_you=False), ME).candidate


def test_a_name_past_the_fetched_prefix_is_seen_by_the_server_search() -> None:
    # The whole message, parsed, names the person ~70 KB in...
    assert load("name_past_fetch_prefix.eml", prefix=1 << 20).mentions_you is True
    # ...the 64 KiB prefix does not; then the server's SEARCH BODY decides.
    hit = load("name_past_fetch_prefix.eml", server_mentions=True)
    assert hit.mentions_you is True and not assess_for_clean(hit, ME).candidate
    refused = load("name_past_fetch_prefix.eml", server_mentions=None)
    assert refused.mentions_you is None
    assert not assess_for_clean(refused, ME).candidate  # unknown is never proposed
    # Only the server's "no" makes a cut-off message a candidate.
    assert assess_for_clean(load("name_past_fetch_prefix.eml", server_mentions=False), ME).candidate


@pytest.mark.parametrize("fixture", ["newsletter.eml", "list_bcc.eml", "newsletter_near_miss.eml"])
def test_bulk_mail_not_addressed_to_the_user_is_a_candidate(fixture: str) -> None:
    row = load(fixture)
    assert row.mentions_you is False  # "Alexander", "royalty", "alexa" are other words
    verdict = assess_for_clean(row, ME)
    assert verdict.candidate
    assert 0.5 <= verdict.confidence <= 1.0
    assert verdict.category == "newsletter"
    assert "list_unsubscribe" in verdict.signals or "list_id" in verdict.signals


def test_a_row_not_checked_against_the_current_identity_is_never_a_candidate() -> None:
    row = load("newsletter.eml")
    assert assess_for_clean(row, ME).candidate
    for unchecked in (
        dataclasses.replace(row, mention_identity=None),  # synced before the check existed
        dataclasses.replace(row, mention_identity="0123456789abcdef"),  # another identity
    ):
        verdict = assess_for_clean(unchecked, ME)
        assert not verdict.candidate and verdict.reason == NOT_CHECKED
    unreadable = dataclasses.replace(row, mentions_you=None)
    assert not assess_for_clean(unreadable, ME).candidate


def test_changing_the_identity_invalidates_every_stored_verdict() -> None:
    row = load("newsletter.eml")
    renamed = Identity(ME.email, "Alexandra Roy", ME.aliases)
    new_alias = Identity(ME.email, ME.name, (*ME.aliases, "alex@home.example"))
    for other in (renamed, new_alias):
        assert other.fingerprint != ME.fingerprint
        assert assess_for_clean(row, other).reason == NOT_CHECKED
    # Spelling the same identity differently is the same identity.
    same = Identity(
        "ALEX.ROY@example.com", " alex  roy ", ("AROY@netskope.com", "aroy@example.com")
    )
    assert same.fingerprint == ME.fingerprint


def test_flagged_bulk_mail_is_left_alone() -> None:
    assert not assess_for_clean(load("newsletter.eml", flags=["\\Flagged"]), ME).candidate


def test_personal_mail_without_bulk_signals_is_not_a_candidate() -> None:
    row = Row("friend@example.org", ["someone@else.example"], [], "dinner", "see you at 8")
    verdict = assess_for_clean(row, ME)
    assert not verdict.candidate and not verdict.direct


def test_rows_without_the_verdict_columns_are_excluded() -> None:
    """Older row shapes (no `mentions_you`) fail safe rather than crash."""

    @dataclass
    class OldRow:
        from_addr: str | None = "news@list.example"
        to_addrs: list[str] = field(default_factory=list)
        cc_addrs: list[str] = field(default_factory=list)
        subject: str = "Weekly digest"
        body_excerpt: str = "unsubscribe"
        flags: list[str] = field(default_factory=list)
        list_unsubscribe: str | None = "<https://u>"
        list_id: str | None = "<list>"
        precedence: str | None = "bulk"
        auto_submitted: str | None = None

    assert assess_for_clean(OldRow(), ME).reason == NOT_CHECKED


def test_exclusion_outweighs_every_bulk_signal() -> None:
    row = Row(
        "noreply@github.com",
        ["ALEX.ROY@EXAMPLE.COM"],
        [],
        "weekly newsletter digest sale",
        "unsubscribe",
        [],
        "<https://u>",
        "<list>",
        "bulk",
        "auto-generated",
    )
    assert not assess_for_clean(row, ME).candidate


@pytest.mark.parametrize(
    "fixture",
    [
        "to_user.eml",
        "cc_user.eml",
        "name_in_body.eml",
        "newsletter.eml",
        "name_past_fetch_prefix.eml",
    ],
)
def test_the_verdict_stored_at_ingest_is_the_verdict_of_the_row(fixture: str) -> None:
    """What parse_raw stores (app/mail/scores.py) equals the live verdict of
    the mirror row it writes: /clean's SQL and assess_for_clean agree."""
    raw = (FIXTURES / fixture).read_bytes()
    message = RawMessage(1, (), None, len(raw), None, raw[:FETCH_PREFIX], None)
    [fetched], _ = parse_raw([message], ME)
    live = assess_for_clean(load(fixture), ME)
    assert fetched.scores is not None
    assert fetched.scores.clean_candidate == live.candidate
    assert fetched.scores.clean_confidence == live.confidence
    assert fetched.scores.clean_direct == live.direct


def test_without_an_identity_nothing_is_scored_and_the_row_is_never_a_candidate() -> None:
    from app.mail.scores import UNSCORED

    raw = (FIXTURES / "newsletter.eml").read_bytes()
    [fetched], _ = parse_raw([RawMessage(1, (), None, len(raw), None, raw, None)], None)
    assert fetched.scores is None
    assert UNSCORED["clean_candidate"] is False and UNSCORED["scores_version"] is None
