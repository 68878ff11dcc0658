"""Bulk mail that names the person in ways the standards allow but a naive
parser misses: each must stay out of /clean (SPEC §8), while the same
newsletter without the name stays a candidate (the control).

The name sits past the first 2,000 characters, so the excerpt (which the
clean verdict also reads) cannot catch it: only the whole-message check can.
"""

from __future__ import annotations

import base64
from collections.abc import Callable

import pytest

from app.mail.clean import assess_for_clean
from tests.unit.test_clean import FIXTURES, ME, Row, row_of

NEWSLETTER = (FIXTURES / "newsletter.eml").read_bytes().replace(b"\r\n", b"\n")
HEAD = b"\n".join(
    line
    for line in NEWSLETTER.split(b"\n\n", 1)[0].split(b"\n")
    if not line.lower().startswith(b"content-type:")
)
FILLER = "This week in machine learning. " * 80  # > 2,000 characters before the name


def _message(fields: str, body: bytes) -> bytes:
    return HEAD.replace(b"\n", b"\r\n") + b"\r\n" + fields.encode() + b"\r\n" + body


def _row(raw: bytes) -> Row:
    return row_of(raw)


def _plain(text: str) -> bytes:
    return text.encode()


def _split(name: str, joiner: str) -> str:
    """The name with `joiner` between its first letters ("Al" + joiner + "ex")."""
    return name[:2] + joiner + name[2:]


QP_PADDED_BREAK = "=  \r\n"  # a soft line break with the spaces transport added
# Each case writes `name` (the person's, or the control's) its own way.
CASES: dict[str, Callable[[str], bytes]] = {
    "utf-16le labelled charset=unicode": lambda name: _message(
        "Content-Type: text/plain; charset=unicode\r\n",
        (FILLER + f"Thanks, {name}").encode("utf-16-le"),
    ),
    "utf-16 with a byte order mark labelled utf-8": lambda name: _message(
        "Content-Type: text/plain; charset=utf-8\r\n",
        (FILLER + f"Thanks, {name}").encode("utf-16"),
    ),
    "NUL bytes between the letters": lambda name: _message(
        "Content-Type: text/plain; charset=utf-8\r\n",
        _plain(FILLER + "Thanks, " + "\0".join(name)),
    ),
    "base64 with a comment in Content-Transfer-Encoding": lambda name: _message(
        "Content-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: base64 (standard)\r\n",
        base64.encodebytes((FILLER + f"Thanks, {name}").encode()),
    ),
    "quoted-printable soft break padded with spaces": lambda name: _message(
        "Content-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: quoted-printable\r\n",
        _plain(FILLER.replace(". ", ".\r\n") + "Thanks, " + _split(name, QP_PADDED_BREAK) + "\r\n"),
    ),
    "a boundary followed by a comment": lambda name: _message(
        "Content-Type: multipart/mixed; boundary=XYZ (mime)\r\n",
        _plain(f"--XYZ\r\nContent-Type: text/plain\r\n\r\n{FILLER}Thanks, {name}\r\n--XYZ--\r\n"),
    ),
    "a forwarded message/news": lambda name: _message(
        "Content-Type: multipart/mixed; boundary=XYZ\r\n",
        _plain(
            f"--XYZ\r\nContent-Type: text/plain\r\n\r\n{FILLER}\r\n"
            "--XYZ\r\nContent-Type: message/news\r\n\r\n"
            f"From: {name} <news@thebatch.example>\r\nSubject: notes\r\n\r\nsee above\r\n--XYZ--\r\n"
        ),
    ),
    "a left-to-right mark inside the name": lambda name: _message(
        "Content-Type: text/plain; charset=utf-8\r\n",
        _plain(FILLER + f"Thanks, {_split(name, chr(0x200E))}"),
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_name_hidden_by_encoding_still_keeps_the_message_out(case: str) -> None:
    row = _row(CASES[case]("Alex"))
    assert row.mentions_you is not False, case
    assert not assess_for_clean(row, ME).candidate, case


@pytest.mark.parametrize("case", list(CASES))
def test_the_same_newsletter_without_the_name_is_a_candidate(case: str) -> None:
    """The control: each case above is out because of the name, not its shape."""
    row = _row(CASES[case]("Team"))
    assert row.mentions_you is False, case
    assert assess_for_clean(row, ME).candidate, case


def test_an_encoded_word_glued_to_a_word_still_names_the_person() -> None:
    raw = _message("Content-Type: text/plain; charset=utf-8\r\n", b"Hello there")
    raw = raw.replace(b"Subject: The Batch: issue #212", b"Subject: Hi=?utf-8?Q?Alex?=, news")
    row = _row(raw)
    assert row.mentions_you is True
    assert not assess_for_clean(row, ME).candidate


def test_old_mac_line_ends_are_read_not_taken_for_one_header() -> None:
    """CR-only line ends: read as one From line, the message had no To, no
    body and no mention, yet was proposed."""
    raw = _message("Content-Type: text/plain; charset=utf-8\r\n", _plain(FILLER + "Thanks, Alex"))
    row = _row(raw.replace(b"\r\n", b"\r"))
    assert row.subject == "The Batch: issue #212"
    assert row.mentions_you is True
    assert not assess_for_clean(row, ME).candidate
