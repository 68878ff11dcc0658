"""`distinct_batches` (executor/handlers/mutations.py): the batches a mutation
or an undo changes together never hold two messages with one Message-ID, so a
batch whose answer was lost is found again exactly by Message-ID."""

from __future__ import annotations

import math
from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from executor.handlers.mutations import distinct_batches

items = st.lists(
    st.tuples(st.integers(0, 10_000), st.sampled_from(["a", "b", "c", "d", None])),
    max_size=60,
    unique_by=lambda t: t[0],
)


@given(items, st.integers(1, 12))
def test_every_message_once_no_twins_together_no_batch_too_big(
    messages: list[tuple[int, str | None]], size: int
) -> None:
    batches = distinct_batches(messages, size, lambda m: m[1])
    assert sorted(m for b in batches for m in b) == sorted(messages)
    assert all(0 < len(b) <= size for b in batches)
    for batch in batches:
        mids = [mid for _, mid in batch if mid is not None]
        assert len(mids) == len(set(mids))
    # (Sanity: as many as the size and the most repeated Message-ID need.)
    most = max(Counter(mid for _, mid in messages if mid is not None).values(), default=0)
    assert len(batches) >= max(math.ceil(len(messages) / size), most)


def test_without_twins_the_batches_are_the_plain_slices() -> None:
    messages = [(n, f"m{n}") for n in range(7)]
    assert distinct_batches(messages, 3, lambda m: m[1]) == [
        messages[0:3],
        messages[3:6],
        messages[6:7],
    ]


def test_a_twin_waits_for_the_next_batch() -> None:
    messages = [(1, "x"), (2, "y"), (3, "x"), (4, "z")]
    assert distinct_batches(messages, 10, lambda m: m[1]) == [
        [(1, "x"), (2, "y"), (4, "z")],
        [(3, "x")],
    ]
