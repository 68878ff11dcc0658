"""The roadmap's E2E cases in a real browser: live progress, a responsive page
while jobs run, and independent cards for concurrent jobs."""

from __future__ import annotations

from typing import Any

import httpx
import psycopg

from tests.e2e.conftest import Stack

OBSERVE = """
window.__perf = {longtasks: [], events: []};
new PerformanceObserver(l => l.getEntries().forEach(e => window.__perf.longtasks.push(e.duration)))
  .observe({type: 'longtask', buffered: true});
new PerformanceObserver(l => l.getEntries().forEach(e => window.__perf.events.push(
    {name: e.name, delay: e.processingStart - e.startTime, duration: e.duration})))
  .observe({type: 'event', buffered: true, durationThreshold: 16});
"""


def job_row(stack: Stack, job_id: str) -> dict[str, Any]:
    with psycopg.connect(stack.database_url) as conn:
        row = conn.execute(
            "SELECT status, processed, total_estimate FROM imap_jobs WHERE job_id = %s", (job_id,)
        ).fetchone()
    assert row is not None
    return {"status": row[0], "processed": row[1], "total_estimate": row[2]}


def test_sync_streams_live_progress_while_the_page_stays_responsive(
    stack: Stack, page: Any
) -> None:
    page.goto(stack.url)
    page.evaluate(OBSERVE)
    page.click("#sync-button")
    card = page.locator(".job-card").first
    card.locator(".processed").wait_for()
    job_id = card.get_attribute("data-job-id")
    seen: list[int] = []
    typed = "typing while the sync runs"
    box = page.locator("#chat-input")
    box.click()
    for ch in typed:
        box.press(ch if ch != " " else "Space")
        page.mouse.wheel(0, 40)
        text = card.locator(".processed").first.text_content() or "0"
        seen.append(int(text))
    page.locator(f"#job-{job_id} .counts.complete").wait_for(timeout=60_000)
    assert box.input_value() == typed
    assert len(set(seen)) >= 2, f"progress did not move while typing: {seen}"
    final = job_row(stack, job_id or "")
    assert final["status"] == "completed" and final["processed"] == 400
    assert page.locator(f"#job-{job_id} .counts.complete .processed").text_content() == "400"
    perf = page.evaluate("window.__perf")
    assert max(perf["longtasks"], default=0) < 200, perf["longtasks"]
    delays = [
        e["delay"] for e in perf["events"] if e["name"] in ("keydown", "keypress", "keyup", "input")
    ]
    assert max(delays, default=0) < 100, delays


def test_three_jobs_at_once_each_card_shows_only_its_own_job(stack: Stack, page: Any) -> None:
    page.goto(stack.url)
    ids = []
    with httpx.Client(base_url=stack.url) as client:
        for folders in (["INBOX"], ["Receipts"], ["Archive"]):
            r = client.post("/api/jobs", json={"job_type": "sync", "params": {"folders": folders}})
            assert r.status_code == 201
            ids.append(r.json()["job_id"])
    page.reload()
    for job_id in ids:
        page.locator(f"#job-{job_id} .counts.complete").wait_for(timeout=60_000)
    totals = []
    for job_id in ids:
        row = job_row(stack, job_id)
        shown = page.locator(f"#job-{job_id} .counts.complete .processed").text_content()
        assert shown == str(row["processed"]), (job_id, shown, row)
        totals.append(row["processed"])
    assert len(set(totals)) == 3 and sum(totals) == 400
    page.reload()  # finished cards re-render from the database, not the stream
    for job_id, total in zip(ids, totals, strict=True):
        assert page.locator(f"#job-{job_id} .counts.complete .processed").text_content() == str(
            total
        )


def test_mail_text_in_the_chat_is_shown_as_text(stack: Stack, page: Any) -> None:
    page.goto(stack.url)
    page.fill("#chat-input", "<script>window.__pwned = 1</script>")
    page.press("#chat-input", "Enter")
    page.locator(".msg.user").last.wait_for()
    assert "<script>" in (page.locator(".msg.user").last.text_content() or "")
    assert page.evaluate("window.__pwned") is None
