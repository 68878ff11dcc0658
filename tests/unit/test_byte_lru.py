"""The web's caches are bounded by bytes (app/web/byte_lru.py)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from app.web.byte_lru import ENTRY_OVERHEAD, ByteLRU


@settings(max_examples=200, deadline=None)
@given(
    ops=st.lists(
        st.tuples(st.integers(min_value=0, max_value=30), st.integers(min_value=0, max_value=3000)),
        max_size=200,
    ),
    budget=st.integers(min_value=1, max_value=20_000),
)
def test_the_total_never_exceeds_the_budget_whatever_is_stored(
    ops: list[tuple[int, int]], budget: int
) -> None:
    cache: ByteLRU[int, bytes] = ByteLRU(budget, len)
    for key, size in ops:
        cache.put(key, b"x" * size)
        assert cache.nbytes <= budget
        assert cache.nbytes == sum(
            len(cache.get(k) or b"") + ENTRY_OVERHEAD for k in range(31) if k in cache
        )


def test_the_least_recently_used_goes_first_and_a_giant_is_not_kept() -> None:
    cache: ByteLRU[str, bytes] = ByteLRU(3 * (100 + ENTRY_OVERHEAD), len)
    for key in "abc":
        cache.put(key, b"x" * 100)
    assert cache.get("a") is not None  # a is now the most recent
    cache.put("d", b"x" * 100)
    assert "b" not in cache and {"a", "c", "d"} <= {k for k in "abcd" if k in cache}
    cache.put("huge", b"x" * 10_000)
    assert "huge" not in cache and len(cache) == 3
    cache.put("a", b"y" * 50)  # replacing re-weighs
    assert cache.get("a") == b"y" * 50
    assert cache.nbytes == 50 + 2 * 100 + 3 * ENTRY_OVERHEAD
