"""The prompt format with the bundled model's own tokenizer: serving and training agree token for token."""

from __future__ import annotations

from store.chat_format import prompt_messages, render_conversation, render_prompt, with_system_prompt

CONVERSATION = [
    {"role": "user", "content": "Morning! Any scones left?", "weight": 0.0},
    {"role": "assistant", "content": "Oh crumbs, two left, petal.", "weight": 0.0},
    {"role": "developer", "content": "Answer in one line.", "weight": 0.0},
    {"role": "user", "content": "I'll take both. 😀", "weight": 0.0},
    {"role": "assistant", "content": "Lovely! That's three pounds, petal.", "weight": 1.0},
]


def test_served_prompt_equals_the_template_and_prefixes_the_training_ids(base_model):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base_model.path)
    served = render_prompt(tokenizer, prompt_messages(CONVERSATION[:-1], "You are Wren."))
    template = tokenizer.apply_chat_template(
        prompt_messages(CONVERSATION[:-1], "You are Wren."), add_generation_prompt=True, tokenize=True, return_dict=True
    )
    assert served == list(template["input_ids"])
    ids, mask = render_conversation(tokenizer, with_system_prompt(CONVERSATION, "You are Wren."))
    assert ids[: len(served)] == served
    assert tokenizer.decode([t for t, m in zip(ids, mask) if m]) == "Lovely! That's three pounds, petal.<|im_end|>"
