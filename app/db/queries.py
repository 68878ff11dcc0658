"""Named SQL queries loaded from `app/db/sql/queries.sql` (inside the package, so a
wheel install finds it; the top-level `sql` is a link to that folder).

Keeping SQL in one file (one commented block per query, `-- name: x`) means a
reader finds every statement the product runs in one place, and Python never
builds SQL by concatenation.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

QUERIES_FILE = Path(__file__).resolve().parent / "sql" / "queries.sql"
_NAME = re.compile(r"^--\s*name:\s*(\w+)\s*$", re.MULTILINE)


@cache
def load_queries(path: Path = QUERIES_FILE) -> dict[str, str]:
    text = path.read_text()
    parts = _NAME.split(text)
    queries: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in queries:
            raise ValueError(f"duplicate query name {name!r} in {path}")
        queries[name] = _without_leading_comments(body).strip().rstrip(";")
    return queries


def _without_leading_comments(body: str) -> str:
    """The statement without the comment block it opens with: it is for the
    reader of this file, and psycopg caches the parsing of a statement only
    when it is short (4 KiB); `claim` is longer only with its comments."""
    lines = body.strip().splitlines()
    while lines and lines[0].lstrip().startswith("--"):
        lines.pop(0)
    return "\n".join(lines)


def query(name: str) -> str:
    try:
        return load_queries()[name]
    except KeyError:
        raise KeyError(f"no query named {name!r} in {QUERIES_FILE}") from None
