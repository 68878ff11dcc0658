"""The chat page streams a turn as it happens: a real model client
(langchain-openai) against the local OpenAI-compatible server, whose answer
arrives word by word with pauses, in a real Chromium. And a move the person
edits on the card before approving, against the real executor and Dovecot."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.conftest import Stack
from tests.support.executor_harness import server_state
from tests.support.fake_openai import FakeOpenAI, calls, serve_fake_openai, text
from tests.support.uvicorn_server import serve

ANSWER = "Nothing is running now. Your mailbox copy is empty, so try a sync first, then ask again."


@pytest.fixture
def model_page(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[str, FakeOpenAI]]:
    with serve_fake_openai() as fake:
        monkeypatch.setenv("OPENAI_BASE_URL", fake.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key")
        with serve(database_url, chat_model="openai:fake-model", chat_timeout=20.0) as web:
            yield web.url, fake


def say(page: Any, text_: str) -> None:
    page.fill("#chat-input", text_)
    page.press("#chat-input", "Enter")


def test_the_model_s_words_appear_in_the_page_before_the_turn_ends(
    model_page: tuple[str, FakeOpenAI], page: Any
) -> None:
    url, fake = model_page
    fake.script(calls(("job_status", {})), text(ANSWER, delay=0.25))
    page.goto(url)
    say(page, "what is going on?")
    page.locator(".msg.user", has_text="what is going on?").wait_for()
    page.locator(".live-tool", has_text="job_status").first.wait_for()
    streaming = page.locator(".msg.assistant.streaming")
    streaming.filter(has_text="Nothing is running").wait_for(timeout=15_000)
    seen = time.monotonic()
    partial = streaming.text_content() or ""
    # Mid-turn: part of the answer is on the page, the turn is still running.
    assert partial.strip() and partial.strip() != ANSWER
    assert page.locator(".live-turn .working").is_visible()
    # The streamed text can be whole a moment before chat_done swaps the turn in:
    # wait for the finished turn itself (not the live one) to replace it.
    final = page.locator("#chat-log .msg.assistant:not(.streaming)", has_text=ANSWER)
    final.wait_for(timeout=30_000)
    assert time.monotonic() - seen > 1.0  # the rest came later (15 words, 0.25 s apart)
    page.locator(".live-turn").wait_for(state="detached", timeout=10_000)
    assert (final.text_content() or "").strip() == ANSWER
    assert fake.pending == 0
    # The page's stream is the thread: a reload shows the same turn.
    page.reload()
    page.locator("#chat-log .msg.assistant", has_text=ANSWER).wait_for()


def test_a_move_edited_on_the_card_runs_the_edited_folder(stack: Stack, page: Any) -> None:
    page.goto(stack.url)
    say(page, "/sync")
    page.locator(".msg.assistant", has_text="Started a mailbox sync").wait_for()
    page.locator(".job-card").first.locator(".counts.complete").wait_for(timeout=60_000)
    before = server_state(stack.account)
    say(page, "move emails from billing@cloudhost.example to Receipts")
    card = page.locator(".approval")
    card.wait_for()
    target = card.locator("input[name=target]")
    assert target.input_value() == "Receipts"
    ids = card.locator("input[name=selection]").evaluate_all("els => els.map(e => e.value)")
    assert ids
    target.fill("Trash")  # refused, the card stays
    card.locator("button.approve").click()
    page.locator(".msg.error", has_text="Trash").wait_for()
    card = page.locator(".approval")
    card.locator("input[name=target]").fill("Paperwork/Billing")
    card.locator("button.approve").click()
    job = page.locator(".job-card", has_text="move")
    job.locator(".counts.complete").wait_for(timeout=60_000)
    state = server_state(stack.account)
    assert state["Receipts"] == before["Receipts"]  # the proposed folder got nothing
    assert len(state["Paperwork/Billing"]) == len(ids)
    assert len(state["INBOX"]) == len(before["INBOX"]) - len(ids)
