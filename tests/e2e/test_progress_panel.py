"""The roadmap's E2E cases in a real browser: live progress, a responsive page
while jobs run, and independent cards for concurrent jobs."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from typing import Any

import httpx
import psycopg

from app.db.pool import open_pool
from app.jobs.models import JobStatus, Lease
from app.jobs.store import JobStore
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


# -- a simulated worker: exact control over what the events say ---------------


class SimulatedWorker(threading.Thread):
    """Claims the next job and writes its events from its own thread and event
    loop, the way the executor would, but with the text and pace the test picks."""

    def __init__(self, database_url: str, *, batches: int, delay: float, message: str) -> None:
        super().__init__(daemon=True)
        self.database_url = database_url
        self.batches = batches
        self.delay = delay
        self.message = message
        self.error: BaseException | None = None
        self.outcome: str | None = None

    def run(self) -> None:
        try:
            asyncio.run(self._work())
        except BaseException as exc:  # noqa: BLE001 - reported to the test thread
            self.error = exc

    async def _work(self) -> None:
        pool = await open_pool(self.database_url, max_size=2)
        try:
            store = JobStore(pool)
            deadline = time.monotonic() + 30
            claimed: list[Any] = []
            while not claimed and time.monotonic() < deadline:
                claimed = await store.claim(["sim"], lease_seconds=60)
                await asyncio.sleep(0.05)
            [job] = claimed
            lease = Lease.of(job)
            total = self.batches * 10
            for i in range(1, self.batches + 1):
                await asyncio.sleep(self.delay)
                result = await store.progress(
                    lease,
                    self.message.format(i=i),
                    processed=i * 10,
                    total_estimate=total,
                    data={"phase": "fetch", "batch": i, "items_found": 10, "has_more": True},
                )
                if result.cancel_requested:
                    await store.finish(lease, JobStatus.CANCELLED, "cancelled on request")
                    self.outcome = "cancelled"
                    return
            await store.finish(
                lease, JobStatus.COMPLETED, "completed", data={"summary": {"uids": [1, 2]}}
            )
            self.outcome = "completed"
        finally:
            await pool.close()

    def result(self) -> str | None:
        self.join(timeout=60)
        if self.error is not None:
            raise self.error
        return self.outcome


def test_card_follows_a_worker_and_shows_mail_text_as_text(web: Any, page: Any) -> None:
    worker = SimulatedWorker(
        web.database_url,
        batches=12,
        delay=0.25,
        message="<script>window.__pwned = 1</script> Re: <b>invoice</b> #{i}",
    )
    worker.start()
    page.goto(web.url)
    page.click("#sync-button")
    card = page.locator(".job-card").first
    job_id = card.get_attribute("data-job-id")
    seen: set[str] = set()
    deadline = time.monotonic() + 30
    while page.locator(f"#job-{job_id} .counts.complete").count() == 0:
        assert time.monotonic() < deadline, f"the card never completed; saw {seen}"
        seen.add(page.locator(f"#job-{job_id} .processed").first.text_content() or "")
        page.wait_for_timeout(50)
    assert worker.result() == "completed"
    assert len(seen - {"0"}) >= 3, f"progress did not move live: {sorted(seen)}"
    last = page.locator(f"#job-{job_id} .last")
    if last.count():  # the final card shows the summary, the live one the event text
        assert "<script>" not in (last.first.inner_html() or "")
    assert page.locator(f"#job-{job_id} .counts.complete .processed").text_content() == "120"
    assert page.evaluate("window.__pwned") is None
    assert page.locator("b", has_text="invoice").count() == 0


def test_event_text_is_rendered_as_text_while_running(web: Any, page: Any) -> None:
    worker = SimulatedWorker(
        web.database_url,
        batches=40,
        delay=0.2,
        message="<script>window.__pwned = 1</script><img src=x onerror='window.__pwned=2'> #{i}",
    )
    worker.start()
    page.goto(web.url)
    page.click("#sync-button")
    card = page.locator(".job-card").first
    job_id = card.get_attribute("data-job-id")
    last = page.locator(f"#job-{job_id} .last")
    last.wait_for()
    page.wait_for_function(
        f"document.querySelector('#job-{job_id} .last')?.textContent.includes('<script>')"
    )
    assert page.locator(f"#job-{job_id} img").count() == 0
    assert page.evaluate("window.__pwned") is None
    page.click(f"#job-{job_id} button.cancel")  # also ends the worker
    page.locator(f"#job-{job_id}.status-cancelled").wait_for(timeout=20_000)
    assert worker.result() == "cancelled"


# -- one fold: a reload shows exactly what the live card showed ------------------


def card_view(page: Any, job_id: str) -> tuple[str, str]:
    """The card as the person sees it: its text, and its markup inside."""
    card = page.locator(f"#job-{job_id}")
    page.wait_for_timeout(100)  # let htmx finish settling the last swap
    text = " ".join((card.inner_text() or "").split())
    html = " ".join((card.inner_html() or "").split())
    return text, html


def test_a_reload_shows_exactly_what_the_finished_live_card_showed(stack: Stack, page: Any) -> None:
    """A real sync of 400 messages in batches of 20: the live card ends with
    "N batch(es)", and after a reload the same card says the same, to the byte."""
    page.goto(stack.url)
    page.click("#sync-button")
    card = page.locator(".job-card").first
    job_id = card.get_attribute("data-job-id") or ""
    page.locator(f"#job-{job_id} .counts.complete").wait_for(timeout=60_000)
    live_text, live_html = card_view(page, job_id)
    batches = re.search(r"· (\d+) batch\(es\)", live_text)
    assert batches and int(batches.group(1)) >= 20, live_text  # 400 messages, 20 a batch
    page.reload()
    page.locator(f"#job-{job_id} .counts.complete").wait_for()
    assert card_view(page, job_id) == (live_text, live_html)


def test_a_reload_mid_run_resumes_the_card_and_ends_as_a_fresh_page_shows_it(
    web: Any, page: Any
) -> None:
    worker = SimulatedWorker(web.database_url, batches=16, delay=0.2, message="batch {i}")
    worker.start()
    page.goto(web.url)
    page.click("#sync-button")
    job_id = page.locator(".job-card").first.get_attribute("data-job-id") or ""
    page.wait_for_function(
        f"Number(document.querySelector('#job-{job_id} .processed')?.textContent) >= 30"
    )
    page.reload()  # mid-run: the card comes back live, from the seq the page rendered
    resumed = page.locator(f"#job-{job_id}")
    connect = resumed.get_attribute("sse-connect") or ""
    assert re.fullmatch(rf"/ui/jobs/{job_id}/stream\?after=\d+", connect), connect
    assert int(connect.rsplit("=", 1)[1]) >= 3
    page.locator(f"#job-{job_id} .counts.complete").wait_for(timeout=30_000)
    assert worker.result() == "completed"
    live = card_view(page, job_id)
    assert "16 batch(es)" in live[0]
    page.reload()
    page.locator(f"#job-{job_id} .counts.complete").wait_for()
    assert card_view(page, job_id) == live


def test_a_cancelled_card_reads_the_same_after_a_reload(web: Any, page: Any) -> None:
    worker = SimulatedWorker(web.database_url, batches=60, delay=0.2, message="batch {i}")
    worker.start()
    page.goto(web.url)
    page.click("#sync-button")
    job_id = page.locator(".job-card").first.get_attribute("data-job-id") or ""
    page.locator(f"#job-{job_id} .state", has_text="running").wait_for()
    page.wait_for_timeout(800)
    page.click(f"#job-{job_id} button.cancel")
    page.locator(f"#job-{job_id}.status-cancelled").wait_for(timeout=20_000)
    assert worker.result() == "cancelled"
    live = card_view(page, job_id)
    assert "batch" in live[0] and "error" in live[0]
    page.reload()
    page.locator(f"#job-{job_id}.status-cancelled").wait_for()
    assert card_view(page, job_id) == live
