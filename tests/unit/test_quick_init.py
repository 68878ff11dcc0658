"""`quick_init` (app/quick_init.py) builds instances indistinguishable from the
ones the dataclass's own `__init__` builds. The oracle is that `__init__`:
each product class is rebuilt here as a plain frozen dataclass with the same
fields, and both are built from the same arguments."""

from __future__ import annotations

import dataclasses
import pickle
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.mail.clean import CleanVerdict
from app.mail.mime import ParsedMessage
from app.mail.scores import Scores
from app.mail.triage import Triage
from app.quick_init import quick_init
from executor.mirror_writes import FetchedMessage

CLASSES = [ParsedMessage, FetchedMessage, Scores, CleanVerdict, Triage]


def _plain(cls: type) -> type:
    """The same fields as a frozen dataclass with the generated __init__."""
    fields = [
        (f.name, f.type, dataclasses.field(default=f.default, default_factory=f.default_factory))
        for f in dataclasses.fields(cls)
    ]
    return dataclasses.make_dataclass(cls.__name__, fields, frozen=True)


values = st.one_of(
    st.none(), st.booleans(), st.integers(), st.text(max_size=5), st.tuples(st.text(max_size=3))
)


@settings(max_examples=300, deadline=None)
@given(cls=st.sampled_from(CLASSES), data=st.data())
def test_instances_hold_what_the_generated_init_would_have_stored(cls: type, data: Any) -> None:
    fields = dataclasses.fields(cls)
    required = [
        f
        for f in fields
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    optional = [f for f in fields if f not in required]
    given_optional = data.draw(st.lists(st.sampled_from(optional), unique=True)) if optional else []
    positional = data.draw(st.integers(0, len(required)))
    args = [data.draw(values) for _ in required[:positional]]
    kwargs = {f.name: data.draw(values) for f in [*required[positional:], *given_optional]}
    fast, plain = cls(*args, **kwargs), _plain(cls)(*args, **kwargs)
    assert list(vars(fast).items()) == list(vars(plain).items())  # values and order
    assert dataclasses.astuple(fast) == dataclasses.astuple(plain)


@pytest.mark.parametrize("cls", CLASSES)
def test_instances_stay_frozen_comparable_and_picklable(cls: type) -> None:
    fields = dataclasses.fields(cls)
    kwargs = {
        f.name: f"v{i}"
        for i, f in enumerate(fields)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    }
    one, two = cls(**kwargs), cls(**kwargs)
    assert one == two and repr(one) == repr(two)
    with pytest.raises(dataclasses.FrozenInstanceError):
        one.__setattr__(fields[0].name, "x")
    assert pickle.loads(pickle.dumps(one)) == one
    changed = dataclasses.replace(one, **{fields[0].name: "other"})
    assert getattr(changed, fields[0].name) == "other" and changed != one


def test_default_factories_make_a_new_value_each_time() -> None:
    first, second = CleanVerdict(candidate=False), CleanVerdict(candidate=False)
    assert first.signals == [] and first.signals is not second.signals


def test_what_it_cannot_build_the_same_way_is_refused() -> None:
    @dataclasses.dataclass
    class Mutable:
        x: int

    @dataclasses.dataclass(frozen=True)
    class Later:
        x: int

        def __post_init__(self) -> None:
            pass

    @dataclasses.dataclass(frozen=True, slots=True)
    class Slotted:
        x: int

    for cls in (Mutable, Later, Slotted):
        with pytest.raises(TypeError):
            quick_init(cls)
