"""How a first sync is split into UID ranges, and the cursor the ranges allow."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from executor.sync_ranges import UidRange, cursor_of, split


def test_ranges_are_contiguous_from_the_cursor_and_hold_about_as_many_uids_each() -> None:
    uids = [3, 4, 5, 9, 10, 11, 12, 40, 41, 42]
    ranges = split(uids, 3, start=3)
    assert [(r.lo, r.hi) for r in ranges] == [(3, 5), (6, 11), (12, 42)]
    assert [len(r.todo(uids)) for r in ranges] == [3, 3, 4]
    assert all(r.done_uid == r.lo - 1 for r in ranges)


def test_never_more_ranges_than_uids() -> None:
    assert [(r.lo, r.hi) for r in split([7, 8], 5, start=1)] == [(1, 7), (8, 8)]
    assert split([], 3, start=1) == []


def test_the_cursor_stops_at_the_lowest_range_not_done() -> None:
    ranges = [UidRange(1, 10, 10), UidRange(11, 20, 14), UidRange(21, 30, 30)]
    assert cursor_of(ranges) == 14
    ranges[1].done_uid = 20
    assert cursor_of(ranges) == 30
    assert cursor_of([UidRange(1, 10, 0), UidRange(11, 20, 20)]) == 0


def test_todo_is_what_a_range_has_left() -> None:
    r = UidRange(11, 20, 13)
    assert r.todo([2, 11, 12, 13, 14, 17, 20, 21]) == [14, 17, 20]
    assert r.contains(11) and r.contains(20) and not r.contains(21)


@given(
    st.lists(st.integers(1, 10_000), min_size=1, unique=True).map(sorted),
    st.integers(1, 12),
    st.integers(0, 5),
)
def test_a_split_covers_every_uid_exactly_once(uids: list[int], parts: int, below: int) -> None:
    start = max(1, uids[0] - below)
    ranges = split(uids, parts, start)
    assert ranges[0].lo == start and ranges[-1].hi == uids[-1]
    assert all(a.hi + 1 == b.lo for a, b in zip(ranges, ranges[1:], strict=False))
    assert sorted(u for r in ranges for u in r.todo(uids)) == uids
    assert all(r.todo(uids) for r in ranges)
