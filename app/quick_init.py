"""Frozen dataclasses that are built in one step, for the records a sync makes
per message (ParsedMessage, FetchedMessage, Scores and the verdicts).

A frozen dataclass's generated `__init__` stores each field with its own
`object.__setattr__` call (frozen forbids plain assignment); for records of
10-20 fields built several times per message that was ~5% of a sync's parse
CPU. `quick_init` gives the class an `__init__` with the same signature
(defaults and default factories included) that sets the instance's
`__dict__` once, in field order. Nothing else changes: the instance holds the
same attributes in the same order, and is as frozen, comparable, hashable,
printable and picklable as before (tests/unit/test_quick_init.py).
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

T = TypeVar("T")


class _Factory:
    """Default of a field with a default factory: call the factory."""


def quick_init(cls: type[T]) -> type[T]:
    """Replace a frozen dataclass's `__init__` (see the module docstring)."""
    params = getattr(cls, "__dataclass_params__", None)
    if params is None or not params.frozen or not params.init:
        raise TypeError(f"{cls.__name__}: quick_init is for frozen dataclasses with an __init__")
    if "__slots__" in cls.__dict__ or hasattr(cls, "__post_init__"):
        raise TypeError(f"{cls.__name__}: slots or __post_init__ need the generated __init__")
    fields = dataclasses.fields(cls)  # type: ignore[arg-type]
    if len(fields) != len(cls.__dataclass_fields__) or any(  # type: ignore[attr-defined]
        not f.init or f.kw_only for f in fields
    ):
        raise TypeError(f"{cls.__name__}: InitVar, init=False or kw_only fields are not handled")
    namespace: dict[str, Any] = {"__quick_set": object.__setattr__, "__quick_factory": _Factory}
    params_src: list[str] = []
    factories: list[str] = []
    for f in fields:
        if f.default is not dataclasses.MISSING:
            namespace[f"__quick_default_{f.name}"] = f.default
            params_src.append(f"{f.name}=__quick_default_{f.name}")
        elif f.default_factory is not dataclasses.MISSING:
            namespace[f"__quick_make_{f.name}"] = f.default_factory
            params_src.append(f"{f.name}=__quick_factory")
            factories.append(
                f"    if {f.name} is __quick_factory: {f.name} = __quick_make_{f.name}()\n"
            )
        else:
            params_src.append(f.name)
    values = ", ".join(f"{f.name!r}: {f.name}" for f in fields)
    source = (
        f"def __init__(self, {', '.join(params_src)}):\n"
        + "".join(factories)
        + f"    __quick_set(self, '__dict__', {{{values}}})\n"
    )
    exec(source, namespace)  # how dataclasses itself writes __init__
    init = namespace["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__module__ = cls.__module__
    cls.__init__ = init  # type: ignore[misc]
    return cls
