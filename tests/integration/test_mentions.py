"""/clean never proposes a message that mentions the person anywhere: decided
over the whole message at ingest by a real executor syncing a real Dovecot,
stored on the row, re-decided by a `rescore` job when the identity changes.

The golden messages are APPENDed as they are (tests/fixtures/clean); two
messages bigger than the 64 KiB fetch prefix are built here, so only the
server's `SEARCH BODY` can see their end.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from app.config import ImapAccount, Settings
from app.graph.deps import GraphDeps
from app.graph.tools.triage import make_triage_tools
from app.jobs.models import JobStatus, JobType
from app.jobs.store import JobStore
from app.mail.clean import NOT_CHECKED, assess_for_clean
from app.mail.identity import Identity
from app.mail.mirror_reads import folder_emails
from executor.handlers.sync import BODY_PREFIX_BYTES
from executor.mentions import enqueue_rescore_if_stale
from tests.support.executor_harness import (
    executor_settings,
    imap_connect,
    running_executor,
    wait_for_job,
)
from tests.support.tools import artifact

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "clean"
ALEX = Identity("alex.roy@example.com", "Alex Roy", ("aroy@example.com", "aroy@netskope.com"))
CAROL = Identity("carol@project.example", "Carol Diaz")
ZOE = Identity("zo@x.example", "Zoë Ørsted")

MENTIONS_ALEX = {
    "dev Digest, Vol 42, Issue 17",  # digest_name_past_20k.eml
    "Community update, November",  # html_unclosed_style.eml
    "Re: flaky cache test",  # quoted_reply.eml
    "[tracker] 3 issues were assigned",  # alias_in_body.eml
    "Glückwunsch, Alex Roy: your talk is in the programme",  # encoded_subject.eml
    "Minutes: release sync",  # name_in_base64_attachment.eml
    "Fwd: venue for the offsite",  # name_in_forwarded_message.eml
    "Weekly operations report",  # name_past_fetch_prefix.eml (only the server sees it)
    "Big sale, long letter",  # "Alexander" past the prefix: a substring hit, errs safe
}
PLAIN_BULK = {
    "The Batch: issue #212",  # newsletter.eml
    "[announce] v2.4.0 released",  # list_bcc.eml
    "The Batch: issue #213",  # newsletter_near_miss.eml ("Alexander", "royalty": fetched whole)
    "Big digest, nobody named",  # bigger than the prefix; the server says no
}
GOLDEN = [
    "digest_name_past_20k.eml",
    "html_unclosed_style.eml",
    "quoted_reply.eml",
    "alias_in_body.eml",
    "encoded_subject.eml",
    "name_in_base64_attachment.eml",
    "name_in_forwarded_message.eml",
    "name_past_fetch_prefix.eml",
    "newsletter.eml",
    "list_bcc.eml",
    "newsletter_near_miss.eml",
]
FILLER = "The quarterly numbers for the cache fleet are in, with latency and throughput charts. "


def big_newsletter(
    subject: str, tail: str, *, charset: str = "utf-8", kind: str = "text/plain"
) -> bytes:
    """A bulk message longer than the fetch prefix, `tail` only after the cut."""
    lines = [FILLER] * (BODY_PREFIX_BYTES // len(FILLER) + 200)
    body = "\r\n".join(lines) + "\r\n\r\n" + tail + "\r\n"
    head = (
        "From: Deals <deals@shop.example>\r\nTo: customers@shop.example\r\n"
        f"Subject: {subject}\r\nDate: Tue, 17 Nov 2026 12:00:00 +0000\r\n"
        "List-Id: Shop deals <deals.shop.example>\r\n"
        "List-Unsubscribe: <https://shop.example/unsubscribe>\r\nPrecedence: bulk\r\n"
        f"MIME-Version: 1.0\r\nContent-Type: {kind}; charset={charset}\r\n"
        "Content-Transfer-Encoding: 8bit\r\n\r\n"
    )
    raw = (head + body).encode(charset)
    assert raw.find(tail.encode(charset)) > BODY_PREFIX_BYTES
    return raw


def append(account: ImapAccount, messages: list[bytes]) -> None:
    client = imap_connect(account)
    try:
        for raw in messages:
            client.append("INBOX", raw, msg_time=datetime(2026, 11, 17, 12, tzinfo=UTC))
    finally:
        client.logout()


def seed_golden(account: ImapAccount) -> None:
    append(
        account,
        [(FIXTURES / name).read_bytes() for name in GOLDEN]
        + [
            big_newsletter("Big digest, nobody named", "See you next quarter."),
            big_newsletter("Big sale, long letter", "Thanks to Alexander for the photos."),
        ],
    )


def settings_for(identity: Identity, **kw: Any) -> Settings:
    return executor_settings(
        identity_email=identity.email,
        identity_name=identity.name,
        identity_aliases=identity.aliases,
        **kw,
    )


async def sync(pool: Any, store: JobStore, account: ImapAccount, identity: Identity) -> None:
    job = await store.enqueue("sync")
    async with running_executor(str(pool.conninfo), account, settings=settings_for(identity)):
        done = await wait_for_job(store, job.job_id)
    assert done.status is JobStatus.COMPLETED, done.error


async def quick_clean(pool: Any, identity: Identity) -> dict[str, Any]:
    deps = GraphDeps(pool=pool, store=JobStore(pool), settings=settings_for(identity))
    [quick_clean_inbox, _] = make_triage_tools(deps)
    return await artifact(quick_clean_inbox)


async def verdicts(pool: Any) -> dict[str, tuple[bool | None, str | None]]:
    async with pool.connection() as conn:
        rows = await (
            await conn.execute("SELECT subject, mentions_you, mention_identity FROM emails")
        ).fetchall()
    return {r["subject"]: (r["mentions_you"], r["mention_identity"]) for r in rows}


async def test_after_a_real_sync_no_message_mentioning_the_person_is_a_candidate(
    store: JobStore, pool: Any, imap_account: ImapAccount
) -> None:
    await asyncio.to_thread(seed_golden, imap_account)
    await sync(pool, store, imap_account, ALEX)

    stored = await verdicts(pool)
    assert set(stored) == MENTIONS_ALEX | PLAIN_BULK
    assert {s for s, (m, _) in stored.items() if m} == MENTIONS_ALEX
    assert {fp for _, fp in stored.values()} == {ALEX.fingerprint}

    out = await quick_clean(pool, ALEX)
    proposed = {c["subject"] for c in out["candidates"]}
    assert proposed == PLAIN_BULK
    assert out["scanned"] == len(stored) and out["not_yet_checked"] == 0


async def test_a_name_past_the_fetch_prefix_is_found_by_the_server_in_any_script(
    store: JobStore, pool: Any, imap_account: ImapAccount
) -> None:
    """Non-ASCII terms go to the server as UTF-8 (and without their accents)."""
    await asyncio.to_thread(
        append,
        imap_account,
        [
            big_newsletter("accented", "Merci, Zoë Ørsted !"),
            big_newsletter("bare", "Thanks, Zoe Orsted."),
            big_newsletter("latin-1", "Danke, Zoë.", charset="iso-8859-1"),
            big_newsletter("nobody", "Thanks, everyone."),
            # The server searches an HTML part's source, where the page's
            # generator escaped the accent: the entity forms are asked too.
            big_newsletter("html named", "<p>Merci, Zo&euml; !</p>", kind="text/html"),
            big_newsletter("html decimal", "<p>Danke, &#216;rsted.</p>", kind="text/html"),
            big_newsletter("html hex", "<p>Hej Zo&#xEB;</p>", kind="text/html"),
            big_newsletter("html nobody", "<p>Thanks &amp; see you.</p>", kind="text/html"),
        ],
    )
    await sync(pool, store, imap_account, ZOE)
    stored = await verdicts(pool)
    assert {s: m for s, (m, _) in stored.items()} == {
        "accented": True,
        "bare": True,
        "latin-1": True,
        "nobody": False,
        "html named": True,
        "html decimal": True,
        "html hex": True,
        "html nobody": False,
    }
    async with pool.connection() as conn:
        sizes = await (await conn.execute("SELECT min(size) AS s FROM emails")).fetchone()
    assert sizes["s"] > BODY_PREFIX_BYTES  # every one was cut short by the fetch


async def test_changing_the_identity_rescores_every_row_and_nothing_is_proposed_meanwhile(
    store: JobStore, pool: Any, imap_account: ImapAccount
) -> None:
    await asyncio.to_thread(seed_golden, imap_account)
    await sync(pool, store, imap_account, ALEX)

    # The person is now Carol: verdicts decided for Alex count for nothing.
    meanwhile = await quick_clean(pool, CAROL)
    assert meanwhile["candidates"] == []
    assert meanwhile["excluded_direct"] == meanwhile["scanned"] == len(GOLDEN) + 2
    for row in await folder_emails(pool):
        reason = assess_for_clean(row, CAROL).reason
        # Only what the row itself shows can be judged before the rescore.
        shown = CAROL.mentioned_in(row.subject) or CAROL.mentioned_in(row.body_excerpt)
        assert reason == ("mentions you" if shown else NOT_CHECKED), row.subject

    first = await enqueue_rescore_if_stale(store, CAROL)
    again = await enqueue_rescore_if_stale(store, CAROL)
    assert first is not None and again is not None and first.job_id == again.job_id
    assert first.job_type is JobType.RESCORE and first.approval_id is None  # read-only
    # While it waits or runs, the stale rows shrink; that is not new work.
    async with pool.connection() as conn:
        await conn.execute(
            "UPDATE emails SET mention_identity = %s WHERE uid = 1", (CAROL.fingerprint,)
        )
    meanwhile_job = await enqueue_rescore_if_stale(store, CAROL)
    assert meanwhile_job is not None and meanwhile_job.job_id == first.job_id
    async with pool.connection() as conn:
        await conn.execute("UPDATE emails SET mention_identity = NULL WHERE uid = 1")
        # Recipients an older parser missed (as it did `"alex.roy"@x`) are read
        # again from the rescore's fetch, with the verdict decided from them.
        recipients = await (
            await conn.execute("SELECT uid, to_addrs, cc_addrs FROM emails ORDER BY uid")
        ).fetchall()
        await conn.execute("UPDATE emails SET to_addrs = '{}', cc_addrs = '{}'")

    settings = settings_for(CAROL, sync_batch_size=3)
    async with running_executor(str(pool.conninfo), imap_account, settings=settings):
        done = await wait_for_job(store, first.job_id)
    assert done.status is JobStatus.COMPLETED, done.error
    assert done.processed == done.total_estimate == len(GOLDEN) + 2

    stored = await verdicts(pool)
    assert {fp for _, fp in stored.values()} == {CAROL.fingerprint}
    async with pool.connection() as conn:
        again_read = await (
            await conn.execute("SELECT uid, to_addrs, cc_addrs FROM emails ORDER BY uid")
        ).fetchall()
    assert again_read == recipients
    carol_named = {s for s, (m, _) in stored.items() if m}
    # Carol Diaz writes in the digest, is quoted in the reply and owns an issue.
    assert {"dev Digest, Vol 42, Issue 17", "Re: flaky cache test"} <= carol_named
    assert "Glückwunsch, Alex Roy: your talk is in the programme" not in carol_named

    after = await quick_clean(pool, CAROL)
    assert after["not_yet_checked"] == 0
    proposed = {c["subject"] for c in after["candidates"]}
    assert proposed and not proposed & carol_named
    assert await enqueue_rescore_if_stale(store, CAROL) is None  # nothing stale any more


async def test_a_sync_starts_the_rescore_itself_and_a_half_done_one_is_finished(
    store: JobStore, pool: Any, imap_account: ImapAccount
) -> None:
    await asyncio.to_thread(seed_golden, imap_account)
    await sync(pool, store, imap_account, ALEX)
    # A rescore that stopped half-way (worker killed, cancelled): some rows are
    # decided for Carol, the rest still carry Alex's verdict.
    async with pool.connection() as conn:
        await conn.execute(
            "UPDATE emails SET mention_identity = %s, mentions_you = false WHERE uid <= 6",
            (CAROL.fingerprint,),
        )
    rows = await folder_emails(pool)
    excluded = {r.uid for r in rows if assess_for_clean(r, CAROL).reason == NOT_CHECKED}
    assert excluded == {r.uid for r in rows if r.uid > 6}

    await sync(pool, store, imap_account, CAROL)  # the sync enqueues the rescore
    rescores = [j for j in await store.list() if j.job_type is JobType.RESCORE]
    assert len(rescores) == 1
    async with running_executor(str(pool.conninfo), imap_account, settings=settings_for(CAROL)):
        done = await wait_for_job(store, rescores[0].job_id)
    assert done.status is JobStatus.COMPLETED, done.error
    assert done.processed == len(excluded)  # only the stale rows were fetched again
    assert {fp for _, fp in (await verdicts(pool)).values()} == {CAROL.fingerprint}
    await sync(pool, store, imap_account, CAROL)
    assert len([j for j in await store.list() if j.job_type is JobType.RESCORE]) == 1


async def test_a_moved_row_keeps_its_verdict(
    store: JobStore, pool: Any, imap_account: ImapAccount
) -> None:
    """A clean (or its undo) moves rows between folders; the verdict goes along,
    so an undone clean is not "unchecked" and a moved mention is not forgotten."""
    from executor import mirror_writes as mirror

    await asyncio.to_thread(seed_golden, imap_account)
    await sync(pool, store, imap_account, ALEX)
    before = {r.uid: (r.mentions_you, r.mention_identity) for r in await folder_emails(pool)}
    async with pool.connection() as conn:
        validity = (await mirror.load_cursors(conn))["INBOX"].uidvalidity
        await mirror.move_rows(
            conn, "INBOX", validity, [(u, 100 + u, ("\\Seen",)) for u in before], "Archive", 7
        )
    moved = {
        r.uid - 100: (r.mentions_you, r.mention_identity)
        for r in await folder_emails(pool, "Archive")
    }
    assert moved == before


async def test_long_messages_over_many_batches_and_connections_each_get_their_own_verdict(
    store: JobStore, pool: Any, imap_account: ImapAccount
) -> None:
    """The server is asked a stretch ahead (executor/mentions.py `SearchAhead`):
    over small batches, a split first sync on 3 connections and UIDs the plan
    skips, every long message still gets exactly its own verdict."""
    short = (
        b"From: a@b.example\r\nTo: c@d.example\r\nSubject: short {i}\r\n"
        b"Date: Tue, 17 Nov 2026 12:00:00 +0000\r\n\r\nhello\r\n"
    )
    messages, named = [], set()
    for i in range(60):
        if i % 4 == 0:
            naming = i % 8 == 0
            tail = "Thanks, Alex Roy." if naming else "Thanks, everyone."
            messages.append(big_newsletter(f"long {i}", tail))
            if naming:
                named.add(f"long {i}")
        else:
            messages.append(short.replace(b"{i}", str(i).encode()))
    await asyncio.to_thread(append, imap_account, messages)
    job = await store.enqueue("sync", {"batch_size": 4})
    settings = settings_for(ALEX, sync_first_connections=3, imap_max_connections=4)
    async with running_executor(str(pool.conninfo), imap_account, settings=settings):
        done = await wait_for_job(store, job.job_id)
    assert done.status is JobStatus.COMPLETED, done.error
    evs = await store.events_after(job.job_id, limit=10_000)
    assert [e.data["connections"] for e in evs if e.data.get("phase") == "split"] == [3]
    stored = await verdicts(pool)
    longs = {s: m for s, (m, _) in stored.items() if s.startswith("long")}
    assert len(longs) == 15
    assert {s for s, m in longs.items() if m} == named
    assert all(m is False for s, m in longs.items() if s not in named)
