"""The mirror's batch JSON (executor/mirror_writes.py `_dumps`) is the text
`json.dumps` wrote before orjson took over, for any row the mirror writes:
same escapes, same numbers, timestamps as `isoformat()`; and what orjson
refuses still goes the old way."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, time, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from executor.mirror_writes import _dumps, _iso


def _old(value: Any) -> str:
    return json.dumps(value, default=_iso, ensure_ascii=False, separators=(",", ":"))


def _text(out: bytes | str) -> str:
    return out.decode("utf-8") if isinstance(out, bytes) else out


zones = st.one_of(
    st.none(),
    st.just(UTC),
    st.integers(-86399, 86399).map(lambda s: timezone(timedelta(seconds=s))),
)
timestamps = st.builds(
    lambda when, zone: when.replace(tzinfo=zone),
    st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)),
    zones,
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    st.floats(0, 1).map(lambda f: round(f, 3)),  # the mirror's floats: confidences
    st.text(st.characters(exclude_categories=["Cs"])),
    timestamps,
)
rows = st.lists(
    st.dictionaries(
        st.text(min_size=1, max_size=12),
        st.one_of(scalars, st.lists(st.text(st.characters(exclude_categories=["Cs"])))),
        max_size=8,
    ),
    max_size=4,
)


@settings(max_examples=800, deadline=None)
@given(rows)
def test_the_batch_json_is_what_json_dumps_wrote(value: list[dict[str, Any]]) -> None:
    assert _text(_dumps(value)) == _old(value)


@settings(max_examples=300, deadline=None)
@given(st.floats(allow_nan=False, allow_infinity=False))
def test_any_float_is_the_same_number(value: float) -> None:
    """Below 1e-4 the texts differ (`1e-05` against `0.00001`); the numbers do not."""
    assert json.loads(_dumps([value])) == json.loads(_old([value]))


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.text(), st.integers(2**64, 2**80)))
def test_what_orjson_refuses_goes_the_old_way(value: Any) -> None:
    """A lone surrogate or a huge integer: the old text, or the old error."""
    row = [{"subject": value}]
    out = _dumps(row)
    assert (out.decode("utf-8") if isinstance(out, bytes) else out) == _old(row)


def test_anything_else_is_refused_as_before() -> None:
    for value, name in ((object(), "object"), (date(2026, 1, 1), "date"), (time(1, 2), "time")):
        with pytest.raises(TypeError, match=f"cannot store {name} in the mirror"):
            _dumps([{"x": value}])
