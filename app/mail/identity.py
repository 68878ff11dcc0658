"""Who the person is, for the safety rules: their addresses and their name."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property

from app.mail.addresses import normalize_email, parse_address_list

MIN_NAME_PART = 3


@dataclass(frozen=True)
class Identity:
    email: str
    name: str = ""
    aliases: tuple[str, ...] = ()

    @cached_property
    def addresses(self) -> frozenset[str]:
        return frozenset(normalize_email(a) for a in (self.email, *self.aliases) if a and a.strip())

    @cached_property
    def _name_pattern(self) -> re.Pattern[str] | None:
        full = " ".join(self.name.split())
        parts = [p for p in re.split(r"[\s,]+", full) if len(p) >= MIN_NAME_PART]
        words = ([full] if full and " " in full else []) + parts
        if not words:
            return None
        alternatives = "|".join(re.escape(w) for w in sorted(set(words), key=len, reverse=True))
        # Whole words, Unicode-aware: "Alex" matches "Hi Alex," but not "Alexander".
        return re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE)

    def _normalized(self, addrs: Iterable[str]) -> set[str]:
        found: set[str] = set()
        for a in addrs:
            if not a:
                continue
            if "<" in a or "," in a or ";" in a or '"' in a:
                found.update(email for _, email in parse_address_list(a))
            else:
                found.add(normalize_email(a))
        return found

    def is_recipient(self, to_addrs: Iterable[str], cc_addrs: Iterable[str]) -> bool:
        return bool(self.addresses & (self._normalized(to_addrs) | self._normalized(cc_addrs)))

    def name_mentioned(self, text: str) -> bool:
        pattern = self._name_pattern
        return bool(text and pattern is not None and pattern.search(text))
