"""Private details become typed placeholders before training; ordinary text is left alone."""

from __future__ import annotations

import pytest

from training.ingest.privacy import PrivacySettings, scrub


@pytest.mark.parametrize(("text", "kind", "placeholder"), [
    ("Ring me on +44 20 7946 0958 tonight", "phone", "[PHONE]"),
    ("my cell is (415) 555-2671, call after six", "phone", "[PHONE]"),
    ("write to kit.marlow+shop@example.co.uk please", "email", "[EMAIL]"),
    ("card 4111 1111 1111 1111 exp 12/29", "card", "[CARD NUMBER]"),
    ("pay into GB82 WEST 1234 5698 7654 32 by Friday", "iban", "[IBAN]"),
    ("we live at 221B Baker Street, come by", "address", "[ADDRESS]"),
    ("reset: https://example.com/reset?token=abc123XYZ&user=7 ok", "url_token", "[URL]"),
])
def test_each_kind_is_found_and_replaced(text: str, kind: str, placeholder: str) -> None:
    cleaned, counts = scrub(text)
    assert placeholder in cleaned and counts == {kind: 1}, (cleaned, counts)


@pytest.mark.parametrize("text", [
    "In 1999 I had 3 cats and 12 dogs; it was 10:30 on 12/05/2024.",
    "Order number 12345678 and a receipt of 1234 5678 9012 3456 (not a card).",
    "See https://example.com/docs?page=2 for the recipe.",
    "The score was 2-1, then 3 more goals. Version 1.2.3 is out.",
    "Meet me at the corner of the street, by 10 tall trees.",
])
def test_ordinary_text_is_kept(text: str) -> None:
    assert scrub(text) == (text, {})


def test_allow_list_switch_and_kinds() -> None:
    text = "Shop: +44 20 7946 0958, me: ada@example.com"
    cleaned, counts = scrub(text, PrivacySettings(allow=("+44 20 7946 0958",)))
    assert cleaned == "Shop: +44 20 7946 0958, me: [EMAIL]" and counts == {"email": 1}
    assert scrub(text, PrivacySettings(enabled=False)) == (text, {})
    assert scrub(text, PrivacySettings(kinds=("phone",)))[0] == "Shop: [PHONE], me: ada@example.com"
