"""The one prompt format (store/chat_format.py): rendering, the loss mask, the role and system-prompt rules."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from store.chat_format import RenderError, prompt_messages, render_conversation, render_prompt, render_text


@pytest.fixture(scope="module")
def tokenizer(base_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(base_model.path)


def _template_ids(tokenizer, messages, add_generation_prompt=False) -> list[int]:
    plain = [{"role": m["role"], "content": m["content"]} for m in messages]
    out = tokenizer.apply_chat_template(plain, tokenize=True, add_generation_prompt=add_generation_prompt)
    return list(out["input_ids"] if hasattr(out, "keys") else out)


def _decode_masked(tokenizer, ids, mask) -> list[str]:
    """The trained token runs, decoded (special tokens kept)."""
    runs, current = [], []
    for token, flag in zip(ids, mask):
        if flag:
            current.append(token)
        elif current:
            runs.append(tokenizer.decode(current))
            current = []
    if current:
        runs.append(tokenizer.decode(current))
    return runs


CONVERSATION = [
    {"role": "system", "content": "You are Wren, the village baker.", "weight": 0.0},
    {"role": "user", "content": "Morning! Any scones left?", "weight": 0.0},
    {"role": "assistant", "content": "Oh crumbs, two left, petal.", "weight": 0.0},
    {"role": "user", "content": "I'll take both.", "weight": 0.0},
    {"role": "assistant", "content": "Lovely! That's three pounds, petal.", "weight": 1.0},
]


def test_ids_equal_the_servers_template_token_for_token(tokenizer):
    ids, mask = render_conversation(tokenizer, CONVERSATION)
    assert ids == _template_ids(tokenizer, CONVERSATION)
    assert len(mask) == len(ids)
    # The server's prompt (generation prompt after the history) is a token prefix of the training example.
    prompt = _template_ids(tokenizer, CONVERSATION[:-1], add_generation_prompt=True)
    assert ids[: len(prompt)] == prompt
    assert not any(mask[: len(prompt)])


def test_mask_covers_the_reply_and_its_end_of_turn_token_only(tokenizer):
    ids, mask = render_conversation(tokenizer, CONVERSATION)
    eos = tokenizer.eos_token  # <|im_end|> for ChatML
    assert _decode_masked(tokenizer, ids, mask) == ["Lovely! That's three pounds, petal." + eos]
    last = max(i for i, m in enumerate(mask) if m)
    assert ids[last] == tokenizer.eos_token_id
    # Whatever follows the end-of-turn token (ChatML's newline) is not trained.
    assert not any(mask[last + 1 :])


def test_system_user_headers_and_weight_zero_turns_are_not_trained(tokenizer):
    ids, mask = render_conversation(tokenizer, CONVERSATION)
    trained = tokenizer.decode([t for t, m in zip(ids, mask) if m])
    for text in ("village baker", "Any scones", "I'll take both", "two left", "assistant", "user", "system"):
        assert text not in trained
    header = tokenizer.encode("<|im_start|>assistant\n", add_special_tokens=False)
    first = mask.index(1)
    assert ids[first - len(header) : first] == header


def test_every_weighted_assistant_turn_is_trained(tokenizer):
    messages = [dict(m) for m in CONVERSATION]
    messages[2]["weight"] = 0.5
    ids, mask = render_conversation(tokenizer, messages)
    eos = tokenizer.eos_token
    assert _decode_masked(tokenizer, ids, mask) == [
        "Oh crumbs, two left, petal." + eos,
        "Lovely! That's three pounds, petal." + eos,
    ]


def test_missing_weight_counts_as_trained(tokenizer):
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    ids, mask = render_conversation(tokenizer, messages)
    assert ids == _template_ids(tokenizer, messages)  # the template adds its default system prompt
    assert _decode_masked(tokenizer, ids, mask) == ["hello" + tokenizer.eos_token]


def test_no_trained_turn_gives_an_empty_mask(tokenizer):
    ids, mask = render_conversation(tokenizer, CONVERSATION[:-1])
    assert ids and not any(mask)


def test_bad_messages_are_refused(tokenizer):
    with pytest.raises(RenderError, match="message 1"):
        render_conversation(tokenizer, [{"role": "user", "content": "x"}, {"role": "robot", "content": "y"}])


def test_template_that_rewrites_history_is_refused():
    class Rewriting:
        """A template that renders earlier turns differently once a later turn exists."""

        eos_token_id = 0

        def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=False):
            text = f"[{len(messages)}]" + "".join(f"<{m['role']}>{m['content']}" for m in messages)
            return text + ("<assistant>" if add_generation_prompt else "")

        def __call__(self, text, add_special_tokens=False, return_offsets_mapping=False):
            out = {"input_ids": [ord(c) for c in text]}
            if return_offsets_mapping:
                out["offset_mapping"] = [(i, i + 1) for i in range(len(text))]
            return out

    with pytest.raises(RenderError, match="prefixes"):
        render_conversation(Rewriting(), [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}])


def test_render_text_matches_the_template(tokenizer):
    text = render_text(tokenizer, CONVERSATION[:-1], add_generation_prompt=True)
    assert text.endswith("<|im_start|>assistant\n")


_text = st.text(alphabet=st.sampled_from(list("ab c\n\t:!?é😀<>|_-'\"")), min_size=1, max_size=20)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(turns=st.lists(st.tuples(_text, _text, st.sampled_from([0.0, 1.0])), min_size=1, max_size=4))
def test_any_text_renders_exactly_and_masks_whole_replies(tokenizer, turns):
    messages = [{"role": "system", "content": "S", "weight": 0.0}]
    for user, reply, weight in turns:
        messages.append({"role": "user", "content": user, "weight": 0.0})
        messages.append({"role": "assistant", "content": reply, "weight": weight})
    ids, mask = render_conversation(tokenizer, messages)
    assert ids == _template_ids(tokenizer, messages)
    runs = _decode_masked(tokenizer, ids, mask)
    expected = [reply + tokenizer.eos_token for _, reply, weight in turns if weight > 0]
    # Tokens may merge across the header/content boundary; the run then starts inside the reply.
    assert len(runs) == len(expected)
    for run, want in zip(runs, expected):
        assert want.endswith(run) and run.endswith(tokenizer.eos_token)


def test_developer_is_a_system_message_and_the_persona_prompt_is_added_only_without_one(tokenizer):
    said = [{"role": "user", "content": "Hi"}]
    assert prompt_messages(said, "You are Wren.") == [
        {"role": "system", "content": "You are Wren."},
        {"role": "user", "content": "Hi"},
    ]
    own = [{"role": "developer", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    assert prompt_messages(own, "You are Wren.") == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
    ]
    with pytest.raises(RenderError, match="message 0: role"):
        prompt_messages([{"role": "tool", "content": "x"}], None)


def test_served_prompt_is_the_trained_conversation_up_to_the_reply(tmp_path, tokenizer):
    """An example built from logs, served: the prompt ids are the training ids before the reply."""
    from store.card import PersonaCard
    from training.ingest import ExampleSettings, build_examples, load_logs

    logs = tmp_path / "wren" / "logs"
    logs.mkdir(parents=True)
    lines = []
    for day in range(12):
        lines += [f"Tom: Morning, any scones on day {day}?", f"Wren: Oh crumbs, {day} left, petal!"]
    (logs / "chat.txt").write_text("\n".join(lines) + "\n")
    card = PersonaCard(system_prompt="You are Wren, the village baker.")
    examples = build_examples(load_logs(logs), "wren", card, ExampleSettings(min_examples=1))
    row = examples.train[3]["messages"]
    ids, mask = render_conversation(tokenizer, row)
    served = render_prompt(tokenizer, prompt_messages(row[1:-1], card.effective_system_prompt("wren")))
    assert row[0] == {"role": "system", "content": "You are Wren, the village baker.", "weight": 0.0}
    assert ids[: len(served)] == served
    assert not any(mask[: len(served)]) and mask[len(served)] == 1
