"""A least-recently-used cache bounded by bytes, not by entries.

The web's caches hold values of very different sizes (an encoded event is a
few hundred bytes or, with a long UID list, tens of kilobytes), so a count
limit bounds nothing. Each value is weighed once when it is stored; the total
never exceeds the budget, and a value heavier than the whole budget is simply
not kept.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

# What an entry costs besides its value: the key, the OrderedDict's links and slot.
ENTRY_OVERHEAD = 160


class ByteLRU(Generic[K, V]):
    def __init__(self, budget: int, weigh: Callable[[V], int]) -> None:
        if budget <= 0:
            raise ValueError("a cache needs a positive byte budget")
        self.budget = budget
        self.weigh = weigh
        self._items: OrderedDict[K, tuple[V, int]] = OrderedDict()
        self.nbytes = 0

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def get(self, key: K) -> V | None:
        item = self._items.get(key)
        if item is None:
            return None
        self._items.move_to_end(key)
        return item[0]

    def put(self, key: K, value: V) -> None:
        size = self.weigh(value) + ENTRY_OVERHEAD
        self.discard(key)
        if size > self.budget:
            return
        self._items[key] = (value, size)
        self.nbytes += size
        while self.nbytes > self.budget:
            _, (_, dropped) = self._items.popitem(last=False)
            self.nbytes -= dropped

    def discard(self, key: K) -> None:
        item = self._items.pop(key, None)
        if item is not None:
            self.nbytes -= item[1]

    def clear(self) -> None:
        self._items.clear()
        self.nbytes = 0
