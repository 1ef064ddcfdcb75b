"""Property tests: the evaluation plan takes every held-out shape ingest can give, never raises, and
never builds a conversation the chat template cannot render or the server would refuse.

Held-out rows are generated in the ``ExampleSet`` shape (a system prompt, a window of earlier turns
with weight 0, the character's reply last): sessions that open with the character, one-line sessions,
long sessions, many speakers (``Name: `` prefixes), replies that are only an emoji or a media
placeholder. Every conversation is rendered with the bundled model's template on a tiny tokenizer.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from store.chat_format import prompt_messages, render_conversation, render_prompt
from tests.support.tiny_base import make_tiny_base
from training.fidelity.perplexity import fit_length
from training.fidelity.plan import MIN_PROMPTS, PERPLEXITY, PROBES, STYLE, make_plan
from training.server_client import System

PROPERTIES = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
SYSTEM_PROMPT = "You are Nova."
FORMS = (None, "Character: Nova\nNova keeps bees.", SYSTEM_PROMPT)
"""The three scored forms: the base model (no system message), the full card, the adapter as served."""

TEXTS = st.one_of(
    st.sampled_from(["hi", "😀", "🐝🍯", "<Media omitted>", "ok?", " ", "", "word " * 300, "Nova: yes"]),
    st.text(max_size=40),
)
OTHERS = st.lists(st.sampled_from(["Sam", "Kit", "Mr. Pell", "Ada", "Bo", "Cy"]), min_size=1, max_size=6, unique=True)


@st.composite
def sessions(draw) -> list[tuple[str, str]]:
    """One session as ``(speaker, text)`` turns; ``Nova`` is the character."""
    others = draw(OTHERS)
    speakers = st.sampled_from(["Nova", *others])
    turns = draw(st.lists(st.tuples(speakers, TEXTS), min_size=1, max_size=30))
    if draw(st.booleans()):
        turns.insert(0, ("Nova", draw(TEXTS)))  # the session opens with the character's own line
    return turns


def rows_of(session: list[tuple[str, str]], name: str, window: int, weight: float) -> list[dict]:
    """The held-out rows ingest makes of a session: one per character turn, with the turns before it."""
    several = len({who for who, _ in session if who != "Nova"}) > 1
    messages = [
        {"role": "assistant", "content": text, "weight": weight}
        if who == "Nova"
        else {"role": "user", "content": f"{who}: {text}" if several else text, "weight": 0.0}
        for who, text in session
    ]
    system = {"role": "system", "content": SYSTEM_PROMPT, "weight": 0.0}
    return [
        {
            "messages": [system, *({**m, "weight": 0.0} for m in messages[max(0, i - window) : i]), target],
            "session": name,
        }
        for i, target in enumerate(messages)
        if target["role"] == "assistant"
    ]


HELDOUT = st.builds(
    lambda groups, window, weight: [row for i, s in enumerate(groups) for row in rows_of(s, f"s{i}", window, weight)],
    st.lists(sessions(), min_size=0, max_size=5),
    st.integers(min_value=1, max_value=8),
    st.sampled_from([1.0, 0.5, 0.0]),
)
COUNTS = st.tuples(*(st.integers(min_value=0, max_value=12) for _ in range(4)))


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory) -> object:
    from transformers import AutoTokenizer

    folder: Path = tmp_path_factory.mktemp("tiny-base")
    make_tiny_base(folder)
    return AutoTokenizer.from_pretrained(folder)


def answers_a_user(row: dict) -> bool:
    turns = [m for m in row["messages"] if m["role"] != "system" and m["content"].strip()]
    return bool(turns) and turns[-1]["role"] == "assistant" and any(m["role"] == "user" for m in turns[:-1])


@PROPERTIES
@given(heldout=HELDOUT, counts=COUNTS, questions=st.lists(TEXTS, max_size=3))
def test_the_plan_renders_and_sends_every_conversation_it_builds(tokenizer, heldout, counts, questions) -> None:
    prompts, probes, sessions_, scored = counts
    plan = make_plan(heldout, questions, prompts=prompts, probes=probes, sessions=sessions_, scored=scored, seed=3)

    assert len(plan.scored) <= scored and len(plan.prompts) <= prompts and len(plan.probes) <= probes
    for form in FORMS:
        for conversation in plan.scored_as(form):
            ids, mask = render_conversation(tokenizer, conversation)
            assert any(mask[1:]), "the real reply is scored"
            short_ids, short_mask = fit_length(tokenizer, conversation, 48)
            assert len(short_ids) <= 48 and any(short_mask[1:]), "a long session is cut, its reply kept"
    for prompt in plan.prompts:
        assert prompt.conversation and prompt.conversation[-1]["role"] == "user" and prompt.real.strip()
        assert all(m["content"].strip() for m in prompt.conversation), "no empty turn is sent"
        for form in FORMS:
            sent = prompt_messages(System("x", "m", form).messages(prompt.conversation), SYSTEM_PROMPT)
            assert render_prompt(tokenizer, sent)
    for _, asks in plan.jobs([System("base", "m"), System("adapter", "nova@v1")]):
        assert all(ask.conversation and render_prompt(tokenizer, list(ask.conversation)) for ask in asks)
    assert all(p.strip() for p in plan.probes)

    assert (PERPLEXITY in plan.missing) == (not plan.scored)
    assert (STYLE in plan.missing) == (not plan.prompts)
    assert (PROBES in plan.missing) == (not plan.probes or not plan.sessions)
    answerable = [row for row in heldout if answers_a_user(row)]
    if len(answerable) >= MIN_PROMPTS and prompts:
        assert len(plan.prompts) == min(prompts, len(answerable)), "every reply to a user can be a prompt"


@PROPERTIES
@given(heldout=HELDOUT)
def test_a_prompt_too_long_for_the_server_is_cut_from_its_oldest_turn(tokenizer, heldout) -> None:
    def fits(conversation) -> bool:
        return len(render_prompt(tokenizer, prompt_messages(conversation, SYSTEM_PROMPT))) <= 160

    plan = make_plan(heldout, [], prompts=12, probes=0, sessions=0, scored=0, fits=fits)
    for prompt in plan.prompts:
        assert fits(prompt.conversation) and prompt.conversation[-1]["role"] == "user"


def test_openings_and_one_line_sessions_leave_the_figures_missing_with_a_reason() -> None:
    system = {"role": "system", "content": SYSTEM_PROMPT, "weight": 0.0}
    openings = [
        {"messages": [system, {"role": "assistant", "content": f"Morning {i}! 🐝", "weight": 1.0}], "session": f"s{i}"}
        for i in range(4)
    ]
    plan = make_plan(openings, [], prompts=4, probes=2, sessions=2, scored=8)
    assert plan.scored == [] and plan.prompts == [] and plan.probes == []
    assert set(plan.missing) == {PERPLEXITY, STYLE, PROBES}
    assert "answer a user's turn" in plan.missing[STYLE]
    with_card = make_plan(openings, ["What's in the hive?"], prompts=4, probes=2, sessions=2, scored=8)
    assert with_card.probes == ["What's in the hive?"] and PROBES not in with_card.missing
