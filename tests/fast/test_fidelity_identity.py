"""The identity scorer and the turn-by-turn figures: who is speaking, and does it hold through a talk."""

from __future__ import annotations

import random

import numpy as np
import pytest

from training.fidelity.dialogue import Scene, Turn, converse, scenes_from_heldout, turn_figures
from training.fidelity.identity import IdentityScorer, IdentityUnavailable
from training.server_client import Reply, System

SUBJECTS = ["the kettle", "the tide", "your boots", "the lantern", "that gull", "the nets", "supper", "the fog"]


def _character_lines(n: int, rng: random.Random) -> list[str]:
    """A sailor who says 'aye', calls people 'lad' and trails off with '...'"""
    return [f"Aye, lad... {rng.choice(SUBJECTS)} won't mind itself, will it..." for _ in range(n)]


def _assistant_lines(n: int, rng: random.Random) -> list[str]:
    return [
        f"Certainly! Here is some information about {rng.choice(SUBJECTS)}. Let me know if you need anything else."
        for _ in range(n)
    ]


def test_the_scorer_tells_the_character_from_a_generic_assistant():
    rng = random.Random(0)
    scorer = IdentityScorer.fit(_character_lines(30, rng), _assistant_lines(30, rng), seed=1)
    assert scorer.auc > 0.95
    character, assistant = scorer.score(
        ["Aye, lad... mind the nets, will you...", "Certainly! Here is a summary. Let me know if you need more."]
    )
    assert character > 0.5 > assistant
    assert scorer.in_character(["Aye, lad... the fog's in..."]).tolist() == [True]


def test_the_scorer_says_it_cannot_tell_when_the_sides_talk_alike():
    rng = random.Random(2)
    lines = _assistant_lines(60, rng)
    scorer = IdentityScorer.fit(lines[:30], lines[30:], seed=1)
    assert scorer.auc < 0.75  # the same voice on both sides: near chance, and the report shows it


def test_the_scorer_uses_the_embeddings_it_is_given():
    rng = random.Random(3)
    mine, theirs = _character_lines(20, rng), _assistant_lines(20, rng)
    calls: list[int] = []

    def embed(texts):
        calls.append(len(texts))
        return np.array([[1.0, 0.0] if "Aye" in t else [0.0, 1.0] for t in texts])

    scorer = IdentityScorer.fit(mine, theirs, embed=embed)
    scorer.score(["Aye then"])
    assert calls == [40, 1]


def test_too_few_lines_are_refused_with_the_counts():
    with pytest.raises(IdentityUnavailable, match="got 3 and 30"):
        IdentityScorer.fit(["Aye.", "Aye, lad.", "  "] + ["Aye!"], _assistant_lines(30, random.Random(0)))


def _row(session: str, *turns: tuple[str, str]) -> dict:
    messages = [{"role": "system", "content": "You are Tam.", "weight": 0.0}]
    messages += [{"role": role, "content": text, "weight": 0.0} for role, text in turns]
    messages[-1]["weight"] = 1.0
    return {"messages": messages, "session": session}


def test_scenes_keep_user_turns_in_order_and_leave_out_openers():
    heldout = [
        _row("a", ("assistant", "Morning!")),  # the session opens with the character: no user turn
        _row("a", ("assistant", "Morning!"), ("user", "hi"), ("assistant", "Aye.")),
        _row("a", ("user", "hi"), ("assistant", "Aye."), ("user", "tea?"), ("assistant", "Always.")),
        _row("b", ("user", "who are you"), ("assistant", "Tam.")),
        _row("c", ("assistant", "Only me talking.")),
    ]
    scenes = scenes_from_heldout(heldout, turns=8, sessions=5)
    assert scenes == [
        Scene("a", (Turn("hi", "Aye."), Turn("tea?", "Always."))),
        Scene("b", (Turn("who are you", "Tam."),)),
    ]
    assert len(scenes_from_heldout(heldout, turns=1, sessions=1)[0].turns) == 1


def test_each_system_talks_with_its_own_history():
    scenes = [Scene("a", (Turn("one", "r1"), Turn("two", "r2"), Turn("three", "r3"))), Scene("b", (Turn("x", "rx"),))]
    systems = [System("card", "base", "You are Tam, a sailor."), System("adapter", "tam@v1")]
    rounds = []

    def ask_round(jobs):
        rounds.append([(system.key, [ask.conversation for ask in asks]) for system, asks in jobs])
        return [
            [Reply(f"{system.key}:{len(ask.conversation)}", len(ask.conversation)) for ask in asks]
            for system, asks in jobs
        ]

    replies = converse(scenes, systems, ask_round, seed=5)
    assert len(rounds) == 3  # one round per turn, every system and scene together
    assert [len(asks) for _, asks in rounds[0]] == [2, 2] and [len(asks) for _, asks in rounds[1]] == [1, 1]
    third = dict(rounds[2])["adapter"][0]
    assert [m["content"] for m in third] == ["one", "adapter:1", "two", "adapter:3", "three"]  # its own replies
    assert [r.text for r in replies["card"][0]] == ["card:1", "card:3", "card:5"]
    assert len(replies["adapter"][1]) == 1


def test_turn_figures_show_a_drift_away_from_the_character():
    drifting = [[0.9, 0.9, 0.8, 0.5, 0.3, 0.2], [0.8, 0.7, 0.7, 0.4, 0.3, 0.3]]
    steady = [[0.8, 0.8, 0.8, 0.8, 0.8, 0.8], [0.7, 0.7]]
    down, level = turn_figures(drifting, 0.5, [400, 410]), turn_figures(steady, 0.5)
    assert down.drift == pytest.approx(np.mean([0.45, 0.3, 0.25]) - np.mean([0.85, 0.8, 0.75]))
    assert down.drift < -0.4 and level.drift == pytest.approx(0.8 - (0.75 + 0.75 + 0.8) / 3)
    assert down.in_character == pytest.approx(7 / 12)  # 0.5 counts as in character
    assert level.worst == pytest.approx(0.7) and down.last_prompt_tokens == 405
    assert turn_figures([[0.6]], 0.5).drift is None


def _session_rows(session: str, pairs: list[tuple[str, str]]) -> list[dict]:
    """Per-reply rows of one session, each with the turns before its reply, as the examples carry them."""
    rows, turns = [], []
    for user, reply in pairs:
        turns += [("user", user), ("assistant", reply)]
        rows.append(_row(session, *turns))
    return rows


def _talk(session: int, rng: random.Random) -> list[tuple[str, str]]:
    lines = _character_lines(3, rng)
    return [(f"Kim: what about {x} on day {session}?", line) for x, line in zip(SUBJECTS, lines)]


def test_the_report_figures_put_a_system_that_keeps_the_voice_above_one_that_drifts(monkeypatch):
    from store.fidelity_settings import FidelitySettings
    from training.fidelity import identity_report
    from training.server_client import Sampling

    rng = random.Random(4)
    train = [row for s in range(12) for row in _session_rows(f"t{s}", _talk(s, rng))]
    heldout = [
        row for s in range(3) for row in _session_rows(f"h{s}", [(f"and {x}?", "Aye, lad.") for x in SUBJECTS[:5]])
    ]

    def fake_generate(url, jobs, sampling, concurrency=1):
        def answer(key, ask):
            turn = len(ask.conversation) // 2
            if key == "adapter" or (key == "card" and turn < 2):
                return f"Aye, lad... {rng.choice(SUBJECTS)}, will it..."
            return "Certainly! Here is some information. Let me know if you need anything else."

        return [[Reply(answer(system.key, ask), 10 * len(ask.conversation)) for ask in asks] for system, asks in jobs]

    monkeypatch.setattr(identity_report, "generate", fake_generate)
    systems = [System("card", "base", "You are Tam."), System("prompt", "base", "Tam"), System("adapter", "tam@v1")]
    figures = identity_report.identity_figures(
        url="http://x/v1", train_rows=train, heldout_rows=heldout, systems=systems, generic=System("base", "base"),
        sampling=Sampling(temperature=1.0, top_p=1.0, max_tokens=16), fidelity=FidelitySettings(dialogue_turns=5),
        embed=None, say=lambda _: None,
    )  # fmt: skip
    assert not isinstance(figures, str)
    assert figures.auc > 0.9 and figures.scenes == 3 and figures.turns == 5
    adapter, card, prompt = (figures.systems[k] for k in ("adapter", "card", "prompt"))
    assert adapter.mean > card.mean > prompt.mean
    assert card.drift < -0.3 and abs(adapter.drift) < 0.2
    assert adapter.in_character == 1.0 and figures.real.in_character == 1.0
    assert adapter.last_prompt_tokens == 90  # 9 turns of history at the fifth turn


def test_the_report_says_why_identity_cannot_be_taken():
    from store.fidelity_settings import FidelitySettings
    from training.fidelity import identity_report
    from training.server_client import Sampling

    openers_only = [_row("h", ("assistant", "Morning!")), _row("i", ("assistant", "Evening!"))]
    why = identity_report.identity_figures(
        url="http://x/v1", train_rows=[], heldout_rows=openers_only, systems=[], generic=System("base", "base"),
        sampling=Sampling(temperature=1.0, top_p=1.0, max_tokens=16), fidelity=FidelitySettings(),
        embed=None, say=lambda _: None,
    )  # fmt: skip
    assert why == "no held-out conversation has a user turn before one of the character's replies"
