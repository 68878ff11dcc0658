"""SPEC §8: how an approval groups and shows messages."""

from __future__ import annotations

from app.graph.approval import group_cards


def cards(n: int, confidence: float) -> list[dict[str, object]]:
    return [
        {"id": f"INBOX:1:{i}", "confidence": confidence, "body_preview": "x" * 300}
        for i in range(n)
    ]


def test_high_confidence_groups_hold_at_most_100() -> None:
    groups = group_cards(cards(250, 0.95))
    assert [len(g["messages"]) for g in groups] == [100, 100, 50]
    assert all(g["band"] == "high" for g in groups)


def test_low_confidence_groups_hold_at_most_10() -> None:
    groups = group_cards(cards(25, 0.7) + cards(3, 0.9))
    assert [(g["band"], len(g["messages"])) for g in groups] == [
        ("high", 3),
        ("low", 10),
        ("low", 10),
        ("low", 5),
    ]


def test_low_confidence_cards_show_the_first_300_characters_of_the_body() -> None:
    from datetime import UTC, datetime

    from app.mail.mirror_reads import EmailRow

    row = EmailRow(
        "INBOX",
        1,
        7,
        "<m>",
        "a@b.c",
        "A",
        ["x@y.z"],
        ["c@d.e"],
        "X <x@y.z>",
        "c@d.e",
        "Hi",
        datetime(2026, 1, 1, tzinfo=UTC),
        [],
        [],
        "b" * 1000,
        None,
        None,
        None,
        None,
    )
    low = row.card(with_body=True)
    high = row.card(with_body=False)
    assert low["body_preview"] == "b" * 300
    assert "body_preview" not in high
    for card in (low, high):
        assert {"date", "from", "to", "cc", "subject"} <= card.keys()
