"""Hostile and malformed MIME through a real sync (issue 10, item 4): the
Python stdlib's own email test corpus (test.test_email's data/msg_*.txt) and
messages made malformed on purpose are APPENDed to a real Dovecot and synced
by a real executor. The job completes (no failed job), every message the
server took has a mirror row, and every row carries current scores."""

from __future__ import annotations

import asyncio
import base64
import os
from pathlib import Path
from typing import Any

import pytest

from app.config import ImapAccount
from app.jobs.models import JobStatus
from app.jobs.store import JobStore
from app.mail.scores import SCORES_VERSION
from tests.support.executor_harness import (
    executor_settings,
    imap_connect,
    running_executor,
    wait_for_job,
)


def stdlib_corpus() -> list[bytes]:
    try:
        import test.test_email as corpus
    except ImportError:  # a Python built without its test package
        return []
    data = Path(os.path.dirname(corpus.__file__)) / "data"
    return [p.read_bytes() for p in sorted(data.glob("msg_*.txt"))]


def hostile() -> list[bytes]:
    """Malformed on purpose: each one has broken a MIME parser somewhere."""
    crlf = b"\r\n"
    nested = b"".join(
        b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (i, i)
        for i in range(200)
    )
    return [
        b"",  # nothing at all
        b"no headers, just a line of text\r\n",
        b'Subject: unterminated multipart\r\nContent-Type: multipart/mixed; boundary="x"\r\n\r\n'
        b"--x\r\nContent-Type: text/plain\r\n\r\nbody without a closing boundary",
        b"Subject: nul\x00byte\r\nFrom: a\x00b@example.org\r\n\r\nbody \x00 with nul\r\n",
        b"Subject: =?unknown-charset?Q?caf=E9?=\r\nFrom: x@example.org\r\n"
        b"Content-Type: text/plain; charset=x-no-such-charset\r\n\r\ncaf\xe9\r\n",
        b"Subject: =?utf-7?B?" + base64.b64encode(b"+2D3cAA-") + b"?=\r\n\r\nutf-7 surrogates\r\n",
        b"Subject: bad base64\r\nContent-Transfer-Encoding: base64\r\n\r\n!!!not*base64===\r\n",
        b"Subject: bad qp\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n=ZZ=\r\n=\r\n",
        b"Date: not a date at all\r\nSubject: bad date\r\n\r\nx\r\n",
        b"Date: Mon, 32 Foo 99999 25:61:61 +9999\r\nSubject: worse date\r\n\r\nx\r\n",
        b'From: "unclosed <quote@example.org>\r\nTo: ;;;,,,<>@@\r\nCc: group: ; a@, @b\r\n'
        b"Subject: broken addresses\r\n\r\nx\r\n",
        b"Subject: " + b"A" * 20000 + crlf + b"X-Long: " + b"y " * 20000 + crlf + crlf + b"x\r\n",
        b"Subject: 8-bit header \xff\xfe\xc3\x28\r\nFrom: \xe9\xe9 <e@example.org>\r\n\r\n\xff\r\n",
        b"Subject: deep nesting\r\nMIME-Version: 1.0\r\n" + nested + b"\r\nend\r\n",
        b"Subject: html only\r\nContent-Type: text/html\r\n\r\n<style>"
        + b"a{}" * 5000
        + b"<script>alert(1)</script><p>unclosed",
        b"Subject: message/rfc822 loop\r\nContent-Type: message/rfc822\r\n\r\n"
        b"Content-Type: message/rfc822\r\n\r\nContent-Type: message/rfc822\r\n\r\n",
        b"Content-Type: multipart/alternative\r\nSubject: no boundary param\r\n\r\n--\r\n--\r\n",
        b"List-Unsubscribe: " + b"<" * 5000 + b"\r\nPrecedence: \xff\r\nAuto-Submitted: \x01\r\n"
        b"Subject: odd bulk headers\r\n\r\nunsubscribe\r\n",
    ]


def append_all(account: ImapAccount, messages: list[bytes]) -> int:
    """APPEND each message; returns how many the server accepted."""
    client = imap_connect(account)
    taken = 0
    try:
        for raw in messages:
            try:
                client.append("INBOX", raw or b"\r\n")
                taken += 1
            except Exception:  # the server may refuse some (e.g. NUL): its choice
                pass
    finally:
        client.logout()
    return taken


async def test_the_stdlib_corpus_and_malformed_mime_sync_without_a_failed_job(
    store: JobStore, pool: Any, imap_account: ImapAccount
) -> None:
    corpus = stdlib_corpus()
    if not corpus:
        pytest.skip("this Python has no test.test_email corpus")
    messages = corpus + hostile()
    taken = await asyncio.to_thread(append_all, imap_account, messages)
    assert taken >= len(corpus)  # the stdlib corpus is all well enough formed to append

    job = await store.enqueue("sync")
    async with running_executor(str(pool.conninfo), imap_account, settings=executor_settings()):
        done = await wait_for_job(store, job.job_id)
    assert done.status is JobStatus.COMPLETED, done.error
    assert not [j for j in await store.list() if j.status is JobStatus.FAILED]
    async with pool.connection() as conn:
        row = await (
            await conn.execute(
                "SELECT count(*) AS n,"
                " count(*) FILTER (WHERE scores_version = %s AND triage_category IS NOT NULL)"
                " AS scored FROM emails WHERE folder = 'INBOX'",
                (SCORES_VERSION,),
            )
        ).fetchone()
    assert row["n"] == taken and row["scored"] == taken
