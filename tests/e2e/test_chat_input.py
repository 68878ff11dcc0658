"""The chat box keeps what the person types while Piper answers: when the
answer lands, only the text that was sent leaves the box."""

from __future__ import annotations

import time
from typing import Any


def test_text_typed_while_piper_answers_stays_in_the_box(web: Any, page: Any) -> None:
    page.goto(web.url)
    held: list[Any] = []
    page.route("**/ui/chat", lambda route: held.append(route))  # held until released below
    box = page.locator("#chat-input")
    box.fill("/status")
    box.press("Enter")
    deadline = time.monotonic() + 10
    while not held and time.monotonic() < deadline:
        page.wait_for_timeout(20)
    assert held, "the chat request never left the page"
    box.press("End")
    box.press_sequentially(" and the next question")
    held[0].continue_()
    page.wait_for_function(
        "document.querySelector('#chat-input').value === 'and the next question'", timeout=10_000
    )
    assert page.locator("#chat-log .msg.user", has_text="/status").count() >= 1


def test_a_failed_answer_leaves_the_box_as_it_was(web: Any, page: Any) -> None:
    page.goto(web.url)
    page.route("**/ui/chat", lambda route: route.fulfill(status=503, body="busy"))
    box = page.locator("#chat-input")
    box.fill("/status")
    box.press("Enter")
    page.wait_for_timeout(300)
    assert box.input_value() == "/status"
