"""SPEC §5 in a real browser: with the page open, a message that arrives in
the mailbox shows up without a reload, and the chat's next answer knows it.

Nobody asks for a sync after the first one: the executor's INBOX watcher sees
the arrival (IDLE) and syncs it; the page's mirror stream brings the notice."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest

from tests.e2e.conftest import Stack
from tests.support.executor_harness import imap_connect
from tests.support.live_mail import message


@pytest.mark.parametrize("stack", [40], indirect=True)
def test_a_message_that_arrives_shows_up_in_the_open_page_without_a_reload(
    stack: Stack, page: Any
) -> None:
    page.goto(stack.url)
    page.locator("#mirror-notice .mirror-stats").wait_for()
    page.click("#sync-button")
    page.locator(".job-card .counts.complete").first.wait_for(timeout=60_000)
    # The counts follow the first sync live, too, and its rows are not "new".
    page.locator("#mirror-notice .messages").wait_for(timeout=10_000)
    page.locator("#mirror-notice .syncing").wait_for(state="detached", timeout=30_000)
    assert page.locator("#mirror-notice .new-count").count() == 0
    page.evaluate("window.__stillTheSamePage = true")

    word = f"zebrafish{uuid.uuid4().hex[:6]}"
    subject = f"Live arrival {word}"
    client = imap_connect(stack.account)
    try:
        client.append("INBOX", message(subject, sender="Dana Scully <dana@example.org>"))
    finally:
        client.logout()
    sent = time.monotonic()
    page.locator("#mirror-notice .arrival", has_text=subject).wait_for(timeout=15_000)
    took = time.monotonic() - sent
    assert page.evaluate("window.__stillTheSamePage === true"), "the page was reloaded"
    assert page.locator("#mirror-notice .new-count").text_content() == "1 new message"
    assert "Dana Scully" in (page.locator("#mirror-notice .arrival").first.text_content() or "")
    assert took < 10.0, took

    # The chat's next answer works from the same, fresh mirror.
    page.fill("#chat-input", f"find {word}")
    page.press("#chat-input", "Enter")
    answer = page.locator("#chat-log .msg.assistant", has_text=subject)
    try:
        answer.wait_for(timeout=15_000)
    except Exception:
        raise AssertionError(
            f"the chat did not find the new message: {page.locator('#chat-log').inner_text()}"
        ) from None
    print(f"\nAPPEND → notice in the page: {took:.2f}s")
