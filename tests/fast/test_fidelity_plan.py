"""What an evaluation asks: held-out prompts, probes, the three prompt forms and the full card."""

from __future__ import annotations

from training.fidelity.card_prompt import example_exchanges, full_card_prompt
from training.fidelity.plan import make_plan, spread
from training.server_client import System

SYSTEM = {"role": "system", "content": "You are Wren.", "weight": 0.0}


def row(i: int, opening: bool = False) -> dict:
    turns = [] if opening else [{"role": "user", "content": f"question {i}?", "weight": 0.0}]
    return {
        "messages": [SYSTEM, *turns, {"role": "assistant", "content": f"reply {i}, petal", "weight": 1.0}],
        "session": f"s{i % 3}",
    }


HELDOUT = [row(0, opening=True)] + [row(i) for i in range(1, 11)]


def test_spread_takes_items_evenly_and_never_more_than_there_are() -> None:
    assert spread(list(range(10)), 5) == [0, 2, 4, 6, 8]
    assert spread([1, 2], 5) == [1, 2]


def test_prompts_skip_conversations_no_user_started_and_keep_the_real_reply() -> None:
    plan = make_plan(HELDOUT, [], prompts=4, probes=2, sessions=3, scored=100)
    assert len(plan.prompts) == 4
    assert all(p.conversation[-1]["role"] == "user" for p in plan.prompts)
    first = plan.prompts[0]
    assert first.real == "reply 1, petal" and first.conversation == ({"role": "user", "content": "question 1?"},)
    assert len(plan.scored) == 10 and all(c[-2]["role"] == "user" for c in plan.scored)


def test_probes_are_the_cards_questions_first_then_held_out_prompts() -> None:
    plan = make_plan(HELDOUT, ["What's fresh?"], prompts=4, probes=3, sessions=2, scored=5)
    assert plan.probes[0] == "What's fresh?" and len(plan.probes) == 3
    assert all(p.startswith("question") for p in plan.probes[1:])
    asks = plan.probe_asks()
    assert len(asks) == 6 and len({a.seed for a in asks}) == 6
    assert [a.conversation[0]["content"] for a in asks[:3]] == [a.conversation[0]["content"] for a in asks[3:]]


def test_the_three_systems_differ_only_in_the_system_message() -> None:
    plan = make_plan(HELDOUT, [], prompts=4, probes=1, sessions=2, scored=3)
    base, card, adapter = plan.scored_as(None), plan.scored_as("FULL CARD"), plan.scored_as("You are Wren.")
    assert all(m["role"] != "system" for c in base for m in c)
    assert all(c[0] == {"role": "system", "content": "FULL CARD", "weight": 0.0} for c in card)
    assert [c[1:] for c in card] == base == [c[1:] for c in adapter]
    assert base[1][-1]["weight"] == 1.0  # the real reply is what gets scored
    sent = System("card", "SmolLM2-135M-Instruct", "FULL CARD").messages(plan.prompts[0].conversation)
    assert sent[0] == {"role": "system", "content": "FULL CARD"} and sent[-1]["role"] == "user"
    assert System("adapter", "wren@v2").messages(plan.prompts[0].conversation)[0]["role"] == "user"


def test_the_full_card_has_name_description_prompt_and_training_exchanges() -> None:
    train = [row(i) for i in range(20, 40)]
    train[5]["messages"][-1]["content"] = "no"  # too short to show a voice
    train[7]["messages"][-1]["content"] = "reply 27, petal, with a longer answer"
    exchanges = example_exchanges(train, 3)
    assert exchanges == [
        ("question 20?", "reply 20, petal"),
        ("question 27?", "reply 27, petal, with a longer answer"),
        ("question 33?", "reply 33, petal"),
    ]
    assert ("question 25?", "no") not in example_exchanges(train, 8)
    prompt = full_card_prompt("Wren", "Wren runs the Crooked Loaf.", "You are Wren, the baker.", exchanges)
    assert prompt.startswith("You are Wren, the baker.")
    assert "Character: Wren\nWren runs the Crooked Loaf." in prompt
    assert "User: question 33?\nWren: reply 33, petal" in prompt
    assert example_exchanges([row(0, opening=True)], 3) == []
