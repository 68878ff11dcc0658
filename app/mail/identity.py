"""Who the person is, for the safety rule that `/clean` never touches mail that
involves them: their addresses (To/CC) and whether a message mentions them.

"Mentions" means the name (each part of it as a whole word, or the full name
however the text wraps it) or any of their addresses, compared case- and
accent-insensitively: both the pattern and the text are folded (canonical
decomposition, case folding, the accents of Latin, Greek and Cyrillic letters
dropped), so "JOSE", "José" and "Jose\u0301" are one name. The executor decides
it over the whole message at ingest and stores the verdict with `fingerprint`,
the identity it was decided against; a stored verdict for another fingerprint
is not trusted.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache, cached_property
from html.entities import codepoint2name
from typing import Any

from app.mail.addresses import normalize_email, parse_address_list

# Bump whenever the matching rules change: every stored verdict then carries a
# stale fingerprint and is re-evaluated (the `rescore` job), never trusted.
MATCHER_VERSION = 3

# "Al" or "Li" as a whole word would match too much unrelated text; the full
# name still counts even when one of its parts is this short.
MIN_NAME_PART = 3
# Scripts written without spaces between words (CJK, kana, Thai) and Hangul,
# where particles attach to names: a name there is matched as a substring, and
# two characters are a usual given or family name.
_UNSPACED = re.compile(r"[\u0e00-\u0e7f\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af\uf900-\ufaff]")
MIN_UNSPACED_PART = 2
_PART_PUNCTUATION = ".,;:'\"()"
# A display name, a list, or an address written with quotes, comments or
# (folding) whitespace (`alex.roy @ example.com`): parsed, not a bare address.
_HEADERISH = re.compile(r'[<>,;"()\s]')

# An address's local part counts on its own ("@aroy", "aroy wrote") when it is
# long enough to be a handle and is not a shared role mailbox (RFC 2142 and the
# usual others), which would make every message naming the team mention you.
MIN_LOCAL_PART = 4
ROLE_LOCAL_PARTS = frozenset(
    {"info", "team", "support", "sales", "admin", "hello", "contact", "office", "mail"}
    | {"email", "noreply", "no-reply", "postmaster", "hostmaster", "webmaster", "abuse"}
    | {"security", "billing", "marketing", "news", "newsletter", "help", "jobs", "careers"}
    | {"press", "service", "orders", "accounts", "root", "list", "lists", "notifications"}
)

# Padding characters newsletters put inside and between words: a name with one
# inside ("Al\u00adex") is found with them removed, one split by one
# ("Alex\u200bRoy") with them read as spaces; both readings are searched.
# Besides soft hyphen, zero-width space/joiners, word joiner and BOM: the
# direction marks, embeddings and isolates (U+200E-F, U+202A-E, U+2066-9),
# the invisible maths operators (U+2061-4), the Mongolian vowel separator and
# the variation selectors: none is visible, so none may hide a name. So is NUL
# ("A\0l\0e\0x": UTF-16 read as 8-bit text, or deliberate padding).
_INVISIBLE = re.compile(
    "[\x00\u00ad\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufe00-\ufe0f\ufeff]"
)


@cache
def _marks() -> str:
    """Every combining mark (Unicode category M), as the inside of a regex class.

    Marks count as part of a word at a name's edges: an NFD text keeps e.g. a
    Devanagari nukta or a kana voicing mark after its letter, and "がalex" is
    not the word "alex". (Used only in lookarounds, tried where a name's
    literal already matched: a class this size is slow to scan a text with.)
    """
    category = unicodedata.category
    ranges: list[str] = []
    start = prev = -2
    # Marks live in planes 0 and 1 and among plane 14's variation selectors:
    # reading only those keeps this at ~20 ms instead of ~150 ms.
    for code in (*range(0x20000), *range(0xE0000, 0xE0200)):
        if category(chr(code))[0] != "M":
            continue
        if code != prev + 1:
            if start >= 0:
                ranges.append(f"{chr(start)}-{chr(prev)}")
            start = code
        prev = code
    ranges.append(f"{chr(start)}-{chr(prev)}")
    return "".join(ranges)


# What makes "José", "JOSE" and "Jose\u0301" one name: NFD splits accented
# letters into letter + a mark from this block (Latin, Greek, Cyrillic,
# Vietnamese), and the marks are dropped. In UTF-8 the block starts with byte
# 0xCC or 0xCD, so a text without either has nothing to drop (a C-speed test;
# the regex costs ~20 ns a character even where it finds nothing).
_ACCENTS = re.compile("[\u0300-\u036f]+")


def fold(text: str) -> str:
    """Case- and accent-insensitive form of a text, for matching only.

    NFD (canonical) rather than NFKD: compatibility decomposition turns single
    letters and digits into punctuation ("⒈" → "1."), which would make a name
    glued to one count as a whole word.
    """
    if text.isascii():
        return text.lower()
    return _drop_accents(_casefold(unicodedata.normalize("NFD", text)))


# `str.casefold` costs twice `str.lower`; for names the difference is these.
_CASEFOLD_EXTRA = (("ß", "ss"), ("ſ", "s"), ("ς", "σ"))


def _casefold(text: str) -> str:
    text = text.lower()
    for char, folded in _CASEFOLD_EXTRA:
        if char in text:
            text = text.replace(char, folded)
    return text


def _drop_accents(decomposed: str) -> str:
    encoded = decomposed.encode("utf-8", "surrogatepass")
    if b"\xcc" in encoded or b"\xcd" in encoded:
        return _ACCENTS.sub("", decomposed)
    return decomposed


def _letters(part: str) -> int:
    return sum(c.isalpha() for c in part)


def _min_letters(part: str) -> int:
    return MIN_UNSPACED_PART if _UNSPACED.search(part) else MIN_NAME_PART


def _word(folded: str) -> str:
    """A folded name as a whole word, Unicode-aware: "alex" in "hi alex," not in
    "alexander"; a name in a script without spaces as a plain substring.

    The literal comes first and the "no letter before it" test after it (a
    lookbehind over the literal): the regex engine then jumps between places
    where the name's first letter occurs instead of testing a lookbehind at
    every character (~20x faster on a long text).
    """
    parts = folded.split()
    if _UNSPACED.search(folded):
        return r"\s+".join(re.escape(p) for p in parts)
    word = rf"[\w{_marks()}]"
    first = re.escape(parts[0])
    rest = "".join(rf"\s+{re.escape(p)}" for p in parts[1:])
    return rf"{first}(?<!{word}{first}){rest}(?!{word})"


def _address_word(folded: str) -> str:
    """An address (or its local part) not glued to a longer one: "x.alex@a.com" and
    "alex@a.com.au" are other addresses, "<alex@a.com>." and "mailto:alex@a.com" are it."""
    literal = re.escape(folded)
    return rf"{literal}(?<![\w.+{_marks()}-]{literal})(?![\w{_marks()}-]|\.\w)"


@dataclass(frozen=True)
class _Matcher:
    """One compiled search over folded text. `cores` are the literals the
    pattern's alternatives start with, so most texts are ruled out by a
    substring test at C speed and the regex runs only where one occurs."""

    pattern: re.Pattern[str] | None
    cores: tuple[str, ...]

    @cached_property
    def _ascii_cores(self) -> bool:
        return all(core.isascii() for core in self.cores)

    @cached_property
    def _sieve(self) -> tuple[str, ...]:
        """The cores that hold no other core: any core occurs only where one of
        these does, so they alone rule a text out (each test reads the text)."""
        return tuple(c for c in self.cores if not any(o != c and o in c for o in self.cores))

    @cached_property
    def _ascii_sieve(self) -> tuple[bytes, ...]:
        return tuple(core.encode("ascii") for core in self._sieve if core.isascii())

    def _scan(self, folded: str) -> bool:
        """Every alternative of the pattern starts with its core, so a match can
        only start where a core occurs: find those at C speed and try the
        pattern there alone (a full regex scan costs ~20 ns a character)."""
        for core in self._sieve:  # a loop, not any(): no generator per text
            if core in folded:
                break
        else:
            return False
        match = self.pattern.match  # type: ignore[union-attr]
        for core in self.cores:
            at = folded.find(core)
            while at >= 0:
                if match(folded, at):
                    return True
                at = folded.find(core, at + 1)
        return False

    @cached_property
    def _spaceless_sieve(self) -> bool:
        return self._ascii_cores and not any(c.isspace() for c in "".join(self._sieve))

    def could_match(self, text: str) -> bool:
        """False when no text made of `text` with whitespace put anywhere in it
        matches: a match starts with a sieve core, and (when this is False)
        none of those holds whitespace or is found in `text`. Else True."""
        if not text or self.pattern is None:
            return False
        if not self._spaceless_sieve:
            return True
        if "\x00" in text:  # `search` also reads the text without them
            text = text.replace("\x00", "")
        if text.isascii():
            lowered = text.lower()
            return any(core in lowered for core in self._sieve)
        ascii_only = _ascii_letters(unicodedata.normalize("NFD", text))
        return any(core in ascii_only for core in self._ascii_sieve)

    def search(self, text: str) -> bool:
        if not text or self.pattern is None:
            return False
        if text.isascii():
            lowered = text.lower()
            if "\x00" not in lowered:
                return self._scan(lowered)
            return self._scan(lowered.replace("\x00", "")) or self._scan(
                lowered.replace("\x00", " ")
            )
        decomposed = unicodedata.normalize("NFD", text)
        if self._ascii_cores:
            ascii_only = _ascii_letters(decomposed)
            for core in self._ascii_sieve:
                if core in ascii_only:
                    break
            else:
                return False
        folded = _drop_accents(_casefold(decomposed))
        if not _INVISIBLE.search(folded):
            return self._scan(folded)
        return self._scan(_INVISIBLE.sub("", folded)) or self._scan(_INVISIBLE.sub(" ", folded))


def _ascii_letters(decomposed: str) -> bytes:
    """The ASCII characters of an NFD text's fold (`_drop_accents(_casefold(..))`).

    Dropping every non-ASCII character keeps any ASCII core that the folded
    text contains (accents inside it included) contiguous. Lower-casing only
    what is left is the same as case folding first (at a fraction of the cost:
    most texts are ruled out on this), except for ß, ſ and ẞ, the only
    characters of an NFD text whose folding holds an ASCII letter
    (tests/unit/test_identity.py reads all of Unicode)."""
    if "\xdf" in decomposed or "\u017f" in decomposed or "\u1e9e" in decomposed:
        letters = _casefold(decomposed).encode("ascii", "ignore")
    else:
        letters = decomposed.encode("ascii", "ignore").lower()
    # NUL is invisible too (`_INVISIBLE`): the sieve must see "a\0l\0e\0x" as "alex".
    return letters.replace(b"\x00", b"") if b"\x00" in letters else letters


def _html_forms(term: str) -> list[str]:
    """`term` with every non-ASCII character written as an HTML entity: by name
    where HTML has one, in decimal, and in hex (each form throughout, as page
    generators write them); [] for an ASCII term."""
    if term.isascii():
        return []
    text = unicodedata.normalize("NFC", term)
    forms = [
        "".join(c if c.isascii() else f"&#{ord(c)};" for c in text),
        "".join(c if c.isascii() else f"&#x{ord(c):x};" for c in text),
    ]
    if all(c.isascii() or ord(c) in codepoint2name for c in text):
        forms.append("".join(c if c.isascii() else f"&{codepoint2name[ord(c)]};" for c in text))
    return forms


def _compile(words: Iterable[tuple[str, str]]) -> _Matcher:
    """(regex, core literal) pairs; the longest first so the full name wins."""
    unique = dict(words)
    if not unique:
        return _Matcher(None, ())
    ordered = sorted(unique, key=lambda w: len(unique[w]), reverse=True)
    cores = tuple(dict.fromkeys(unique[w] for w in ordered))
    return _Matcher(re.compile("|".join(ordered)), cores)


@dataclass(frozen=True)
class Identity:
    """The person's own address, aliases and name, as configured in settings."""

    email: str
    name: str = ""
    aliases: tuple[str, ...] = ()

    @classmethod
    def from_settings(cls, settings: Any) -> Identity:
        """The identity configured for this deployment (SECRETARY_IDENTITY_*)."""
        return cls(
            email=str(settings.identity_email or ""),
            name=str(settings.identity_name or ""),
            aliases=tuple(str(a) for a in (settings.identity_aliases or ()) if str(a).strip()),
        )

    @cached_property
    def addresses(self) -> frozenset[str]:
        """Every address that reaches the person, compared case-insensitively."""
        return frozenset(normalize_email(a) for a in (self.email, *self.aliases) if a and a.strip())

    @cached_property
    def name_parts(self) -> tuple[str, ...]:
        """The name's words as written (NFC), punctuation around them dropped."""
        name = unicodedata.normalize("NFC", self.name or "")
        parts = (p.strip(_PART_PUNCTUATION) for p in re.split(r"[\s,]+", name))
        return tuple(p for p in parts if p)

    @cached_property
    def _name_words(self) -> list[tuple[str, str]]:
        parts = self.name_parts
        words = [
            (_word(fold(p)), fold(p))
            for p in dict.fromkeys(parts)
            if _letters(p) >= _min_letters(p)
        ]
        if len(parts) > 1:
            # The full name, however the text wraps or spaces it.
            full = " ".join(fold(p) for p in parts)
            words.append((_word(full), full.split()[0]))
        return words

    @cached_property
    def local_parts(self) -> tuple[str, ...]:
        """Local parts of the person's addresses that count as a mention on their own."""
        found = []
        for addr in sorted(self.addresses):
            local = addr.rpartition("@")[0]
            if (
                len(local) >= MIN_LOCAL_PART
                and _letters(local) >= MIN_NAME_PART
                and local not in ROLE_LOCAL_PARTS
            ):
                found.append(local)
        return tuple(dict.fromkeys(found))

    @cached_property
    def _name_matcher(self) -> _Matcher:
        return _compile(self._name_words)

    @cached_property
    def _mention_matcher(self) -> _Matcher:
        words = list(self._name_words)
        for token in (*sorted(self.addresses), *self.local_parts):
            folded = fold(token)
            words.append((_address_word(folded), folded))
        return _compile(words)

    @cached_property
    def fingerprint(self) -> str:
        """A short hash of what the mention check looks for (addresses, folded name,
        matcher version): a stored verdict counts only under the same fingerprint."""
        canonical = json.dumps(
            {
                "v": MATCHER_VERSION,
                "addresses": sorted(self.addresses),
                "name": [fold(p) for p in self.name_parts],
            },
            sort_keys=True,
            ensure_ascii=True,
        )
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

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
        return self._name_matcher.search(text)

    def mentioned_in(self, text: str) -> bool:
        """Named, or one of the person's addresses (or a handle-like local part of
        one) written in the text: what "mentions you" means for `/clean`."""
        return self._mention_matcher.search(text)

    def could_be_mentioned_in(self, text: str) -> bool:
        """False only when `mentioned_in` is False for `text` and for every
        text made of it with whitespace (line breaks, spaces) put anywhere in
        it, such as an HTML page's text once its block elements break lines."""
        return self._mention_matcher.could_match(text)

    def mentioned_in_any(self, texts: Iterable[str]) -> bool:
        """`mentioned_in` over several texts, stopping at the first that mentions
        the person (the texts may be produced lazily, most likely first)."""
        return any(self.mentioned_in(t) for t in texts)

    def search_terms(self) -> list[str]:
        """What to ask an IMAP server to look for (`SEARCH BODY`, a case-insensitive
        substring match): every name part that counts, the full name when a part is
        too short to count alone, each address and handle, accented terms also
        without their accents (servers differ in folding them) and as HTML writes
        them (`Jos&eacute;`, `Jos&#233;`, `Jos&#xe9;`: servers search an HTML
        part's source, where the page's generator often escaped the accent);
        then only the terms that do not contain another one."""
        parts = self.name_parts
        counted = [p for p in dict.fromkeys(parts) if _letters(p) >= _min_letters(p)]
        terms = list(counted)
        if len(parts) > 1 and len(counted) < len(parts):
            terms.append(" ".join(parts))
        terms += sorted(self.addresses)
        terms += self.local_parts
        out: dict[str, None] = {}
        for term in terms:
            out.setdefault(term, None)
            bare = _ACCENTS.sub("", unicodedata.normalize("NFD", term))
            out.setdefault(unicodedata.normalize("NFC", bare), None)
            for written in _html_forms(term):
                out.setdefault(written, None)
        # One spelling per term: the search ignores case, and "Alex" beside the
        # handle "alex" must not leave neither (each holds the other).
        spellings: dict[str, str] = {}
        for term in out:
            if term.strip():
                spellings.setdefault(term.casefold(), term)
        found = list(spellings.values())
        # A substring search for "roy" already finds every "aroy@example.com":
        # a term holding another one adds nothing but server time (each term
        # is a pass over the message body on a server without a text index).
        folded = [t.casefold() for t in found]
        return [
            t
            for t, f in zip(found, folded, strict=True)
            if not any(o != f and o in f for o in folded)
        ]

    def directly_involved(
        self, to_addrs: Iterable[str], cc_addrs: Iterable[str], body: str
    ) -> bool:
        """The safety rule in one call: addressed to the person or naming them."""
        return self.is_recipient(to_addrs, cc_addrs) or self.name_mentioned(body)
