"""Chat flows in a real browser against the real executor and Dovecot:
/sync, an approved mark-read, and /clean from proposal to completion."""

from __future__ import annotations

from typing import Any

from tests.e2e.conftest import Stack
from tests.support.executor_harness import server_state

CLEANED = "Secretary/Auto-Cleaned"


def say(page: Any, text: str) -> None:
    page.fill("#chat-input", text)
    page.press("#chat-input", "Enter")


def sync_via_chat(page: Any) -> None:
    say(page, "/sync")
    page.locator(".msg.assistant", has_text="Started a mailbox sync").wait_for()
    card = page.locator(".job-card").first
    card.locator(".counts.complete").wait_for(timeout=60_000)


def approval_ids(page: Any) -> list[str]:
    return page.locator(".approval input[name=selection]").evaluate_all(
        "els => els.map(e => e.value)"
    )


def test_chat_sync_then_approved_mark_read_changes_exactly_those_messages(
    stack: Stack, page: Any
) -> None:
    page.goto(stack.url)
    sync_via_chat(page)
    before = server_state(stack.account)
    say(page, "mark the GitHub notifications as read")
    page.locator(".approval").wait_for()
    headers = page.locator(".approval thead th").all_text_contents()
    assert headers[1:6] == ["Date", "From", "To", "CC", "Subject"]
    ids = approval_ids(page)
    assert ids
    dropped = ids[0]
    page.locator(f".approval input[value='{dropped}']").uncheck()
    page.click(".approval button.approve")
    page.locator(".msg.assistant", has_text="Approved").wait_for()
    page.locator(".job-card", has_text="mark read").locator(".counts.complete").wait_for(
        timeout=60_000
    )
    after = server_state(stack.account)
    approved = {int(i.rsplit(":", 1)[1]) for i in ids[1:]}
    for uid, flags in after["INBOX"].items():
        if uid in approved:
            assert "\\Seen" in flags
        else:
            assert flags == before["INBOX"][uid], uid


def test_clean_proposes_approves_and_completes_with_the_archive_fragment(
    stack: Stack, page: Any
) -> None:
    page.goto(stack.url)
    sync_via_chat(page)
    say(page, "/clean")
    page.locator(".approval").wait_for()
    text = page.locator(".approval").text_content() or ""
    assert "Secretary/Auto-Cleaned" in text
    ids = approval_ids(page)
    assert ids
    page.click(".approval button.approve")
    card = page.locator(".job-card", has_text="clean")
    card.locator(".counts.complete").wait_for(timeout=90_000)
    assert CLEANED in (card.text_content() or "")
    state = server_state(stack.account)
    assert len(state[CLEANED]) == len(ids)
    assert all("\\Seen" in f for f in state[CLEANED].values())
    before_undo = server_state(stack.account)
    page.reload()
    card = page.locator(".job-card:has(.job-head strong:text-is('clean'))")
    card.locator("button.undo").click()  # the finished clean offers Undo, behind its own approval
    page.locator(".approval").wait_for()
    assert "Undo clean" in (page.locator(".approval").text_content() or "")
    page.click(".approval button.approve")
    undo_card = page.locator(".job-card:has(.job-head strong:text-is('undo'))")
    undo_card.locator(".counts.complete").wait_for(timeout=90_000)
    restored = server_state(stack.account)
    assert restored[CLEANED] == {}
    assert len(restored["INBOX"]) == len(before_undo["INBOX"]) + len(ids)


def test_triage_answer_is_a_sortable_table_with_scores_and_reasons(stack: Stack, page: Any) -> None:
    page.goto(stack.url)
    sync_via_chat(page)
    say(page, "top 10 action-required")
    table = page.locator("table.triage").last
    table.wait_for()
    scores = [float(x) for x in table.locator("tbody td:first-child").all_text_contents()]
    assert scores and scores == sorted(scores, reverse=True)
    assert all(r.strip() for r in table.locator("tbody td:last-child").all_text_contents())
    table.locator("th", has_text="Score").click()
    ascending = [float(x) for x in table.locator("tbody td:first-child").all_text_contents()]
    assert ascending == sorted(scores)


def test_a_finished_turn_replaces_only_itself_and_the_page_matches_a_reload(
    stack: Stack, page: Any
) -> None:
    """The end of a turn swaps in just that turn (old turns stay as they are),
    drops the greeting and a card the new request set aside: what the page
    shows then is what a reload shows."""
    page.goto(stack.url)
    assert page.locator("#chat-hello").count() == 1
    sync_via_chat(page)
    assert page.locator("#chat-hello").count() == 0
    first = page.locator("#chat-log > .msg").first.element_handle()
    say(page, "/clean")
    page.locator(".approval").wait_for()
    say(page, "/status")  # sets the card aside
    page.locator(".approval").wait_for(state="detached")
    page.locator("#chat-log > .msg.user", has_text="/status").wait_for()
    page.locator(".live-turn").wait_for(state="detached")
    assert first is not None and first.evaluate("e => e.isConnected")  # not re-rendered
    shown = page.locator("#chat-log > *").evaluate_all(
        "els => els.map(e => e.className + ' ' + e.textContent.trim())"
    )
    page.reload()
    again = page.locator("#chat-log > *").evaluate_all(
        "els => els.map(e => e.className + ' ' + e.textContent.trim())"
    )
    assert shown == again
