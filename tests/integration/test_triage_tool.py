"""top_by_confidence over the mirror, and the chat prompt that drives it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from app.config import Settings
from app.graph.deps import GraphDeps
from app.graph.offline_model import ScriptedPlanner
from app.graph.service import ChatService
from app.graph.tools.triage import make_triage_tools
from app.jobs.store import JobStore
from tests.support.mirror_fixtures import email, github, insert_emails
from tests.support.tools import artifact

NOW = datetime(2026, 11, 20, 15, 0, tzinfo=UTC)  # 10:00 in New York
TZ = "America/New_York"


def at(hour: int, day: int = 20) -> datetime:
    return datetime(2026, 11, day, hour, 0, tzinfo=UTC)


FIXTURE = [
    # uid, when, subject/body, flags
    email(
        1,
        date=at(14),
        subject="Contract",
        body_excerpt="Could you sign the contract today? It is urgent.",
    ),
    email(2, date=at(13), subject="Lunch", body_excerpt="Can you join lunch?"),
    email(
        3,
        date=at(12),
        subject="Invitation: planning @ Fri",
        body_excerpt="Join Zoom Meeting https://zoom.us/j/123 - can you make it?",
        flags=["\\Seen"],
    ),
    email(
        4, date=at(3), subject="Late night", body_excerpt="Could you reply by tomorrow?"
    ),  # 22:00 yesterday in NY
    email(5, date=at(14, day=19), subject="Old ask", body_excerpt="Can you check this today?"),
    email(
        6,
        date=at(11),
        subject="FYI",
        to_addrs=["team@example.org"],
        cc_addrs=["alex.roy@example.com"],
        body_excerpt="The deck is up.",
    ),
    github(7, date=at(10)),
    email(
        8,
        date=at(9),
        subject="Zoom recording",
        body_excerpt="Recording: https://zoom.us/rec/abc",
        to_addrs=["team@example.org"],
    ),
]


@pytest.fixture
async def deps(pool: Any) -> GraphDeps:
    await insert_emails(pool, FIXTURE)
    return GraphDeps(
        pool=pool, store=JobStore(pool), settings=Settings(timezone=TZ), clock=lambda: NOW
    )


async def call(deps: GraphDeps, **args: Any) -> dict[str, Any]:
    [_, top] = make_triage_tools(deps)
    return await artifact(top, **args)


async def test_results_are_sorted_and_carry_scores_and_reasons(deps: GraphDeps) -> None:
    out = await call(deps, category="action_required", n=10, filters=[])
    conf = [r["confidence"] for r in out["results"]]
    assert conf == sorted(conf, reverse=True) and all(0 < c <= 1 for c in conf)
    assert all(r["reasons"] and r["category"] == "action_required" for r in out["results"])
    assert out["results"][0]["subject"] == "Contract"


async def test_today_uses_the_configured_timezone(deps: GraphDeps) -> None:
    out = await call(deps, category="action_required", n=10, filters=["today"])
    subjects = [r["subject"] for r in out["results"]]
    assert "Late night" not in subjects and "Old ask" not in subjects
    assert subjects[0] == "Contract" and set(subjects) <= {
        "Contract",
        "Lunch",
        "Invitation: planning @ Fri",
    }


async def test_unread_and_zoom_filters_and_their_combination(deps: GraphDeps) -> None:
    zoom = await call(deps, category=None, n=10, filters=["zoom"])
    assert {r["subject"] for r in zoom["results"]} == {
        "Invitation: planning @ Fri",
        "Zoom recording",
    }
    unread_zoom = await call(deps, category=None, n=10, filters=["zoom", "unread"])
    assert [r["subject"] for r in unread_zoom["results"]] == ["Zoom recording"]
    unread = await call(deps, category=None, n=20, filters=["unread"])
    assert all(r["unread"] for r in unread["results"]) and len(unread["results"]) == 7


async def test_ties_are_broken_by_newest_first(deps: GraphDeps) -> None:
    out = await call(deps, category=None, n=20, filters=[])
    for a, b in zip(out["results"], out["results"][1:], strict=False):
        if a["confidence"] == b["confidence"]:
            assert a["date"] >= b["date"]


async def test_bad_filter_or_category_is_a_clear_error(deps: GraphDeps) -> None:
    """The tool's schema refuses them, naming what is allowed (the model reads it)."""
    with pytest.raises(ValidationError, match="action_required"):
        await call(deps, category="bogus", n=5, filters=[])
    with pytest.raises(ValidationError, match="today"):
        await call(deps, category=None, n=5, filters=["tomorrow"])


async def test_chat_prompt_triggers_the_tool_and_lists_the_expected_messages(
    deps: GraphDeps,
) -> None:
    chat = ChatService(deps, ScriptedPlanner())
    await chat.setup()
    turn = await chat.send(None, "top 10 highest-confidence action-required from today")
    state = await chat.graph.aget_state(chat._config(turn.thread_id))
    calls = [c for m in state.values["messages"] if m.type == "ai" for c in m.tool_calls]
    assert calls == [
        {
            "name": "top_by_confidence",
            "args": {"n": 10, "filters": ["today"], "category": "action_required"},
            "id": calls[0]["id"],
            "type": "tool_call",
        }
    ]
    expected = await call(deps, category="action_required", n=10, filters=["today"])
    answer = turn.messages[-1].text
    for r in expected["results"]:
        assert r["subject"] in answer
    assert "Late night" not in answer and "Old ask" not in answer


# --------------------------------------------------------------------------
# Scores stored at ingest: SQL over the whole mirror, stale rows fail safe.

FILLER_SQL = """
INSERT INTO emails (folder, uidvalidity, uid, subject, date, from_addr, flags,
    triage_category, triage_confidence, triage_reasons, triage_zoom,
    clean_candidate, clean_confidence, clean_category, clean_signals, clean_direct,
    scores_version, mention_identity, mentions_you)
SELECT 'INBOX', 1000, 1000 + g, 'filler ' || g,
       %(newest)s::timestamptz - make_interval(mins => g), 'news@shop.example', '{}',
       'action_required', 0.2, '{"asks you something"}', false,
       true, 0.6, 'bulk', '{"noreply_sender"}', false,
       %(version)s, %(fingerprint)s, false
FROM generate_series(1, %(n)s) AS g
"""


async def clean(deps: GraphDeps, **args: Any) -> dict[str, Any]:
    [quick, _] = make_triage_tools(deps)
    return await artifact(quick, **args)


async def add_filler(deps: GraphDeps, n: int) -> None:
    from app.mail.scores import SCORES_VERSION

    async with deps.pool.connection() as conn:
        await conn.execute(
            FILLER_SQL,
            {
                "n": n,
                "newest": NOW,
                "version": SCORES_VERSION,
                "fingerprint": deps.identity.fingerprint,
            },
        )
        await conn.execute("ANALYZE emails")


async def test_the_whole_mirror_is_ranked_past_the_old_20000_row_cap(deps: GraphDeps) -> None:
    """25,000 newer rows no longer hide an old message from ranking or /clean."""
    await add_filler(deps, 25_000)
    old = github(90, date=datetime(2020, 1, 1, tzinfo=UTC), from_addr="noreply@github.com")
    await insert_emails(deps.pool, [old])
    top = await call(deps, category="action_required", n=1, filters=[])
    assert top["results"][0]["subject"] == "Contract"  # 0.2 filler ranks below
    cleanup = await clean(deps, limit=300)
    assert cleanup["scanned"] == len(FIXTURE) + 25_001
    # The oldest message is among the most confident (tied with uid 7, newer).
    assert [c["subject"] for c in cleanup["candidates"][:2]] == [
        "[piper/app] Issue #7 updated",
        old["subject"],
    ]
    assert len(cleanup["candidates"]) == 300


async def test_the_hot_queries_are_served_by_indexes(deps: GraphDeps) -> None:
    from app.db.queries import query
    from app.mail.scores import SCORES_VERSION

    await add_filler(deps, 20_000)
    params = {
        "folder": "INBOX",
        "category": "action_required",
        "limit": 10,
        "version": SCORES_VERSION,
        "fingerprint": deps.identity.fingerprint,
        "day_start": None,
        "day_end": None,
        "unread": False,
        "zoom": False,
    }
    async with deps.pool.connection() as conn:
        for name, indexes in (
            ("triage_top_category", ("emails_triage_category", "emails_triage_any")),
            ("triage_top_any", ("emails_triage_any",)),
            ("clean_candidates", ("emails_clean_candidates",)),
        ):
            cur = await conn.execute("EXPLAIN " + query(name), params)
            plan = "\n".join(r["QUERY PLAN"] for r in await cur.fetchall())
            # Walked in order off an index and stopped at the LIMIT: no scan, no sort.
            assert any(f"Index Scan using {i} on emails" in plan for i in indexes), plan
            assert "Seq Scan on emails" not in plan and "Sort" not in plan, plan


async def test_stale_scores_are_never_clean_candidates_and_show_as_stale(
    deps: GraphDeps,
) -> None:
    from app.mail.scores import SCORES_VERSION

    fresh = await clean(deps)
    assert [c["subject"] for c in fresh["candidates"]] == ["[piper/app] Issue #7 updated"]
    async with deps.pool.connection() as conn:  # scored under older rules
        await conn.execute(
            "UPDATE emails SET scores_version = %s WHERE uid IN (1, 7)", (SCORES_VERSION - 1,)
        )
    stale = await clean(deps)
    assert stale["candidates"] == [] and stale["not_yet_checked"] == 2
    assert stale["excluded_direct"] >= 2
    top = await call(deps, category="action_required", n=10, filters=[])
    assert top["stale_scores"] == 2
    marked = {r["subject"]: r.get("stale", False) for r in top["results"]}
    assert marked["Contract"] is True and marked["Lunch"] is False


async def test_flagging_a_candidate_removes_it_at_once_and_marks_its_scores_stale(
    deps: GraphDeps,
) -> None:
    from executor.mirror_writes import update_flags

    assert (await clean(deps))["candidates"]
    async with deps.pool.connection() as conn:
        await update_flags(conn, "INBOX", 1000, {7: (("\\Flagged",), None)})
        row = await (
            await conn.execute("SELECT scores_version, clean_candidate FROM emails WHERE uid = 7")
        ).fetchone()
    assert row == {"scores_version": None, "clean_candidate": False}
    assert (await clean(deps))["candidates"] == []
    async with deps.pool.connection() as conn:  # \Seen alone changes no score
        await update_flags(conn, "INBOX", 1000, {2: (("\\Seen",), None)})
        row = await (
            await conn.execute("SELECT scores_version FROM emails WHERE uid = 2")
        ).fetchone()
    assert row["scores_version"] is not None


async def test_a_rules_change_rescores_every_row_from_the_mirror_and_nothing_is_proposed_meanwhile(
    deps: GraphDeps, store: JobStore, imap_account: Any
) -> None:
    from app.jobs.models import JobStatus
    from app.mail.scores import SCORES_VERSION
    from executor.mentions import enqueue_rescore_if_stale
    from tests.support.executor_harness import executor_settings, running_executor, wait_for_job

    async with deps.pool.connection() as conn:
        before = await (
            await conn.execute(
                "SELECT uid, triage_category, triage_confidence, clean_candidate FROM emails"
                " ORDER BY uid"
            )
        ).fetchall()
        # As if written by code with older rules: other scores, older version.
        await conn.execute(
            "UPDATE emails SET scores_version = %s, triage_confidence = 0.001,"
            " clean_candidate = true, clean_confidence = 0.99",
            (SCORES_VERSION - 1,),
        )
    assert (await clean(deps))["candidates"] == []  # stale: nothing proposed meanwhile
    job = await enqueue_rescore_if_stale(store, deps.identity)
    assert job is not None
    assert (await enqueue_rescore_if_stale(store, deps.identity)).job_id == job.job_id
    async with running_executor(
        str(deps.pool.conninfo), imap_account, settings=executor_settings(timezone=TZ)
    ):
        done = await wait_for_job(store, job.job_id)
    assert done.status is JobStatus.COMPLETED, done.error
    assert done.processed == len(FIXTURE)  # every row scored again, none fetched
    async with deps.pool.connection() as conn:
        after = await (
            await conn.execute(
                "SELECT uid, triage_category, triage_confidence, clean_candidate FROM emails"
                " ORDER BY uid"
            )
        ).fetchall()
        versions = await (
            await conn.execute("SELECT DISTINCT scores_version AS v FROM emails")
        ).fetchall()
    assert after == before and versions == [{"v": SCORES_VERSION}]
    assert await enqueue_rescore_if_stale(store, deps.identity) is None


async def test_search_treats_percent_and_underscore_as_plain_characters(pool: Any) -> None:
    from app.mail.mirror_reads import search_emails

    await insert_emails(
        pool,
        [
            email(1, subject="50% off everything"),
            email(2, subject="file_name.txt attached"),
            email(3, subject="Plain subject"),
            email(4, subject="back\\slash path"),
        ],
    )

    async def subjects(**kw: Any) -> set[str]:
        return {r.subject for r in await search_emails(pool, **kw)}

    assert await subjects(words=["%"]) == {"50% off everything"}
    assert await subjects(words=["_"]) == {"file_name.txt attached"}
    assert await subjects(subject_contains="%") == {"50% off everything"}
    assert await subjects(subject_contains="e_n") == {"file_name.txt attached"}
    assert await subjects(words=["\\"]) == {"back\\slash path"}
    assert await subjects(from_contains="%") == set()
    assert await subjects(words=["PLAIN"]) == {"Plain subject"}  # still case-insensitive
