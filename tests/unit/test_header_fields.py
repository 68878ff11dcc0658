"""A sync fetches only the header fields the parser reads (SPEC §9's 16 KB a
message): one `_parse` starts reading must be fetched too, or it would read
as missing on every synced message while every test built from whole
messages passed."""

from __future__ import annotations

import inspect
import re

from app.mail import mime
from app.mail.identity import Identity
from executor.handlers.sync import FETCH_ITEMS

ME = Identity("alex.roy@example.com", "Alex Roy")


def test_every_header_field_the_parser_reads_is_fetched() -> None:
    source = inspect.getsource(mime._parse)
    read = set(re.findall(r'headers\.(?:raw|text|joined)\("([a-z0-9-]+)"', source))
    read |= set(
        re.findall(r'headers\.(?:raw|text|joined)\("([a-z0-9-]+)"', inspect.getsource(mime._walk))
    )
    assert read  # the pattern still finds them
    fetched = {f.lower() for f in mime.HEADER_FIELDS}
    assert read <= fetched, read - fetched
    assert any(mime.HEADER_FIELDS[0] in item and "HEADER.FIELDS" in item for item in FETCH_ITEMS)


def test_a_message_parses_the_same_from_its_fetched_fields() -> None:
    """What the parser makes of the whole header and of the fetched fields alone
    is the same row (Received, DKIM and the like are read by nothing)."""
    header = (
        "Received: from mx.example ([192.0.2.1]) by mx.google.com; Tue, 17 Nov 2026\r\n"
        + "X-Google-Smtp-Source: "
        + "A" * 3000
        + "\r\n"
        + 'From: Deals <deals@shop.example>\r\nTo: "Roy, Alex" <alex.roy@example.com>\r\n'
        + "Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\nDate: Tue, 17 Nov 2026 12:00:00 +0000\r\n"
        + "Message-ID: <m1@shop.example>\r\nList-Unsubscribe: <https://shop.example/u>\r\n"
        + "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
    )
    body = "Hello Alex, see you.\r\n"
    fields = {f.lower() for f in mime.HEADER_FIELDS}
    kept = "".join(
        line + "\r\n"
        for line in header.split("\r\n")
        if line and line.split(":", 1)[0].lower() in fields
    )
    whole = mime.parse_message((header + "\r\n" + body).encode(), identity=ME)
    fetched = mime.parse_message((kept + "\r\n" + body).encode(), identity=ME)
    assert whole == fetched
    assert fetched.to_addrs == ("alex.roy@example.com",) and fetched.mentions_you is True
