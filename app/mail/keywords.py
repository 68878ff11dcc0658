"""Keyword regexes (triage's "asks you something", /clean's newsletter words)
answered at C speed, with the regex itself as the one definition.

Python's regex engine tries a case-insensitive alternation of words at every
character of the text (~100 ns a character for triage's patterns, most of
the time a message's scoring took). But every alternative of those patterns
starts with a literal ("can you", "zoom", "?"): a match can only start where
one occurs. `Keywords` reads those literals off the parsed pattern, finds them
with `str.find` in a case-folded copy of the text, and tries the regex only
there. The answer is the regex's own (`bool(pattern.search(text))`), because
the folded copy keeps every position (see `_fold`) and holds a literal
wherever the case-insensitive pattern could match it. A pattern whose
alternatives do not all start with an ASCII literal is searched as before.
"""

from __future__ import annotations

import re
from re import _constants as sre  # type: ignore[attr-defined]
from re import _parser as sre_parse  # type: ignore[attr-defined]
from typing import Any

# Characters outside ASCII that a case-insensitive regex matches to an ASCII
# letter, with that letter (tests/unit/test_keywords.py finds them all in
# Unicode). İ is the only character whose str.lower() is two characters long,
# so it is replaced before lowering: the folded text keeps every position.
_TO_ASCII = {"\u0130": "i", "\u0131": "i", "\u017f": "s", "\u212a": "k"}
_MAX_CORES = 64


def fold(text: str) -> str:
    """Lower-cased text of the same length, where every character a
    case-insensitive regex matches to an ASCII letter is that letter (what
    `Keywords.search` looks for the literals in; fold once for several)."""
    if not text.isascii():
        for char, letter in _TO_ASCII.items():  # `in` and replace: C speed (translate is not)
            if char in text:
                text = text.replace(char, letter)
    return text.lower()


def _starts(items: Any) -> list[str] | None:
    """Literals one of which starts every match of a parsed regex sequence, or
    None when some match may start otherwise (then the regex is searched whole)."""
    prefix = ""
    for op, arg in items:
        if op is sre.LITERAL:
            prefix += chr(arg)
            continue
        if prefix:
            break
        if op is sre.AT:  # \b and the like: zero width, the literal after it starts the match
            continue
        if op is sre.SUBPATTERN:
            _group, add_flags, del_flags, inner = arg
            return None if add_flags or del_flags else _starts(inner)
        if op is sre.BRANCH:
            found: list[str] = []
            for alternative in arg[1]:
                starts = _starts(alternative)
                if starts is None:
                    return None
                found += starts
            return found
        if op is sre.IN and all(kind is sre.LITERAL for kind, _ in arg):
            return [chr(code) for _, code in arg]
        return None
    return [prefix] if prefix else None


def _cores(pattern: re.Pattern[str]) -> tuple[str, ...] | None:
    if pattern.flags & re.LOCALE or not isinstance(pattern.pattern, str):
        return None
    try:
        starts = _starts(sre_parse.parse(pattern.pattern, pattern.flags).data)
    except Exception:  # a construct this reader does not know: search the regex whole
        return None
    if not starts or len(starts) > _MAX_CORES or not all(s.isascii() for s in starts):
        return None
    if pattern.flags & re.IGNORECASE:
        starts = [s.lower() for s in starts]
    unique = sorted(set(starts), key=len)
    # A core that starts with another one adds no place to try the regex.
    return tuple(c for c in unique if not any(o != c and c.startswith(o) for o in unique))


class Keywords:
    """`bool(pattern.search(text))`, found at C speed where the pattern allows."""

    __slots__ = ("_cores", "_fold", "pattern")

    def __init__(self, pattern: re.Pattern[str]) -> None:
        self.pattern = pattern
        self._cores = _cores(pattern)
        self._fold = bool(pattern.flags & re.IGNORECASE)

    def search(self, text: str, folded: str | None = None) -> bool:
        """`folded`: `fold(text)`, when the caller searches the text for several patterns."""
        cores = self._cores
        if cores is None:
            return self.pattern.search(text) is not None
        if not self._fold:
            folded = text
        elif folded is None:
            folded = fold(text)
        match = self.pattern.match
        for core in cores:
            if core not in folded:  # the usual case, and `in` is cheaper than a find call
                continue
            at = folded.find(core)
            while at >= 0:
                if match(text, at) is not None:
                    return True
                at = folded.find(core, at + 1)
        return False
