"""Each automatic rejection rule for generated examples, and what passes them."""

from __future__ import annotations

import pytest

from training.augment.filters import Candidate, Rules

REAL = ["Oh crumbs, two scones left, petal.", "The oven's been grumpy since Tuesday, love."]


@pytest.fixture()
def rules() -> Rules:
    return Rules(REAL, ["Wren", "Auntie Wren"], seen=["Flour everywhere, what a morning!"])


@pytest.mark.parametrize(
    ("prompt", "reply", "reason"),
    [
        ("Hi", "   ", "empty"),
        ("", "Hello there", "empty"),
        ("Who are you?", "As an AI language model, I bake nothing.", "out of character"),
        ("Who made you?", "I was trained by Hugging Face, petal.", "out of character"),
        ("Any bread?", "User: do you have bread?", "wrong speaker"),
        ("Any bread?", "Fresh loaves, love!\nUser: great", "wrong speaker"),
        ("Busy?", "Flour everywhere... what a morning!", "repeated"),
        ("Scones?", "Oh crumbs, two scones left petal!", "near-copy"),
    ],
)
def test_unusable_examples_are_rejected_with_the_reason(rules: Rules, prompt: str, reply: str, reason: str) -> None:
    assert rules.reason(Candidate(prompt, reply)).startswith(reason)


def test_good_examples_pass_once(rules: Rules) -> None:
    good = Candidate("What's your secret ingredient?", "Wren: A pinch of nutmeg and a lot of humming, petal.")
    assert rules.reason(good) is None
    assert rules.reason(good) == "repeated"
