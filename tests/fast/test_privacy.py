"""Private details become typed placeholders before training; ordinary text is left alone."""

from __future__ import annotations

import pytest

from training.ingest.privacy import PrivacySettings, scrub


@pytest.mark.parametrize(
    ("text", "kind", "placeholder"),
    [
        ("Ring me on +44 20 7946 0958 tonight", "phone", "[PHONE]"),
        ("my cell is (415) 555-2671, call after six", "phone", "[PHONE]"),
        ("write to kit.marlow+shop@example.co.uk please", "email", "[EMAIL]"),
        ("card 4111 1111 1111 1111 exp 12/29", "card", "[CARD NUMBER]"),
        ("pay into GB82 WEST 1234 5698 7654 32 by Friday", "iban", "[IBAN]"),
        ("we live at 221B Baker Street, come by", "address", "[ADDRESS]"),
        ("reset: https://example.com/reset?token=abc123XYZ&user=7 ok", "url_token", "[URL]"),
    ],
)
def test_each_kind_is_found_and_replaced(text: str, kind: str, placeholder: str) -> None:
    cleaned, counts = scrub(text)
    assert placeholder in cleaned and counts == {kind: 1}, (cleaned, counts)


@pytest.mark.parametrize(
    "text",
    [
        "In 1999 I had 3 cats and 12 dogs; it was 10:30 on 12/05/2024.",
        "Order number 12345678 and a receipt of 1234 5678 9012 3456 (not a card).",
        "See https://example.com/docs?page=2 for the recipe.",
        "The score was 2-1, then 3 more goals. Version 1.2.3 is out.",
        "Meet me at the corner of the street, by 10 tall trees.",
    ],
)
def test_ordinary_text_is_kept(text: str) -> None:
    assert scrub(text) == (text, {})


def test_allow_list_switch_and_kinds() -> None:
    text = "Shop: +44 20 7946 0958, me: ada@example.com"
    cleaned, counts = scrub(text, PrivacySettings(allow=("+44 20 7946 0958",)))
    assert cleaned == "Shop: +44 20 7946 0958, me: [EMAIL]" and counts == {"email": 1}
    assert scrub(text, PrivacySettings(enabled=False)) == (text, {})
    assert scrub(text, PrivacySettings(kinds=("phone",)))[0] == "Shop: [PHONE], me: ada@example.com"


def test_examples_carry_placeholders_and_the_report_counts_them_per_file(tmp_path) -> None:
    from store.card import PersonaCard
    from training.ingest import ExampleSettings, build_examples, format_report, load_logs

    logs = tmp_path / "logs"
    logs.mkdir()
    lines = []
    for day in range(6):
        lines += [f"Tom: where do I send it {day}?", f"Wren: to wren{day}@example.com or ring +44 20 7946 095{day}"]
    (logs / "chat.txt").write_text("\n".join(lines) + "\n")
    before = (logs / "chat.txt").read_text()
    settings = ExampleSettings(min_examples=1)
    examples = build_examples(load_logs(logs), "wren", PersonaCard(), settings)
    replies = [row["messages"][-1]["content"] for row in list(examples.train) + list(examples.heldout)]
    assert replies and all("[EMAIL]" in r and "[PHONE]" in r and "@" not in r for r in replies)
    assert examples.per_file["chat.txt"].private == {"email": 6, "phone": 6}
    report = format_report(load_logs(logs), examples)
    assert "private details replaced by placeholders: 6 email, 6 phone" in report
    assert "wren0@example.com" not in report and (logs / "chat.txt").read_text() == before
    kept = build_examples(load_logs(logs), "wren", PersonaCard(privacy={"enabled": False}), settings)
    assert "@example.com" in kept.train[0]["messages"][-1]["content"]
    with pytest.raises(ValueError, match="privacy.allow"):
        build_examples(load_logs(logs), "wren", PersonaCard(privacy={"allow": "x"}), settings)
