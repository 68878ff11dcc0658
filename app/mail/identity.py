"""Who the person is, for the safety rule that `/clean` never touches mail that
involves them: their addresses (To/CC) and their name (in the body)."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property

from app.mail.addresses import normalize_email, parse_address_list

# "Al" or "Li" as a whole word would match too much unrelated text; the full
# name still counts even when one of its parts is this short.
MIN_NAME_PART = 3
# Scripts written without spaces between words (CJK, kana, Thai) and Hangul,
# where particles attach to names: a name there is matched as a substring, and
# two characters are a usual given or family name.
_UNSPACED = re.compile(r"[\u0e00-\u0e7f\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af\uf900-\ufaff]")
MIN_UNSPACED_PART = 2
_PART_PUNCTUATION = ".,;:'\"()"
_HEADERISH = re.compile(r'[<>,;"()]')  # a display name or list, not a bare address


def _nfc(text: str) -> str:
    """Compose accents so "José" typed either way matches "José"."""
    return text if unicodedata.is_normalized("NFC", text) else unicodedata.normalize("NFC", text)


def _letters(part: str) -> int:
    return sum(c.isalpha() for c in part)


def _min_letters(part: str) -> int:
    return MIN_UNSPACED_PART if _UNSPACED.search(part) else MIN_NAME_PART


@dataclass(frozen=True)
class Identity:
    """The person's own address, aliases and name, as configured in settings."""

    email: str
    name: str = ""
    aliases: tuple[str, ...] = ()

    @cached_property
    def addresses(self) -> frozenset[str]:
        """Every address that reaches the person, compared case-insensitively."""
        return frozenset(normalize_email(a) for a in (self.email, *self.aliases) if a and a.strip())

    @cached_property
    def _name_pattern(self) -> re.Pattern[str] | None:
        parts = [p.strip(_PART_PUNCTUATION) for p in re.split(r"[\s,]+", _nfc(self.name))]
        parts = [p for p in parts if p]
        # (regex, text it stands for); longest first so the full name wins.
        names = [(re.escape(p), p) for p in set(parts) if _letters(p) >= _min_letters(p)]
        if len(parts) > 1:
            # The full name, however the text wraps or spaces it.
            names.append((r"\s+".join(re.escape(p) for p in parts), " ".join(parts)))
        alternatives = []
        for pattern, text in sorted(names, key=lambda n: len(n[1]), reverse=True):
            if _UNSPACED.search(text):
                alternatives.append(pattern)
            else:
                # Whole words, Unicode-aware: "Alex" matches "Hi Alex," not "Alexander".
                alternatives.append(rf"(?<!\w){pattern}(?!\w)")
        if not alternatives:
            return None
        return re.compile("|".join(alternatives), re.IGNORECASE)

    @staticmethod
    def _normalized(addrs: Iterable[str]) -> set[str]:
        """Parsed addresses normally; a whole header value is parsed rather than
        trusted, because missing the person's address would let `/clean` at it."""
        found: set[str] = set()
        for a in addrs:
            if not a:
                continue
            found.add(normalize_email(a))
            if _HEADERISH.search(a):
                found.update(email for _, email in parse_address_list(a))
        return found

    def is_recipient(self, to_addrs: Iterable[str], cc_addrs: Iterable[str]) -> bool:
        """In To or CC under any of the person's addresses (Bcc'd mail is not)."""
        mine = self.addresses
        return bool(mine & self._normalized(to_addrs)) or bool(mine & self._normalized(cc_addrs))

    def name_mentioned(self, text: str) -> bool:
        """Named as a whole word, so "Alex" counts in "Hi Alex," but not in "Alexander";
        errs towards True (an e-mail address with the name in it counts too)."""
        pattern = self._name_pattern
        return bool(text and pattern is not None and pattern.search(_nfc(text)))

    def directly_involved(
        self, to_addrs: Iterable[str], cc_addrs: Iterable[str], body: str
    ) -> bool:
        """The safety rule in one call: addressed to the person or naming them."""
        return self.is_recipient(to_addrs, cc_addrs) or self.name_mentioned(body)
