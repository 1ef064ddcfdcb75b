"""Held-out perplexity with the bundled SmolLM2: the figure transformers itself gives, and the adapter switch."""

from __future__ import annotations

import math

import pytest

from training.fidelity.perplexity import Scorer

QUESTION = {"role": "user", "content": "What is the capital of France?", "weight": 0.0}
ANSWER = "The capital of France is Paris."
SHUFFLED = "Paris France capital the is of."


def conversation(reply: str) -> list[dict]:
    return [QUESTION, {"role": "assistant", "content": reply, "weight": 1.0}]


@pytest.fixture(scope="module")
def scorer(base_model) -> Scorer:
    return Scorer.load(base_model.path)


def test_perplexity_of_a_fixed_reply_is_what_transformers_computes(scorer) -> None:
    import torch

    from store.chat_format import render_conversation

    scored = scorer.score([conversation(ANSWER)], adapter=False)
    ids, mask = render_conversation(scorer.tokenizer, conversation(ANSWER))
    labels = torch.tensor([i if m else -100 for i, m in zip(ids, mask)])
    with torch.inference_mode():
        reference = scorer.model(input_ids=torch.tensor([ids]), labels=labels[None]).loss
    assert scored.tokens == sum(mask)
    assert scored.perplexity == pytest.approx(math.exp(float(reference)), rel=1e-4)
    # The model knows its geography: a fluent answer is far likelier than the same words shuffled.
    assert scored.perplexity < 10 < scorer.score([conversation(SHUFFLED)], adapter=False).perplexity


def test_an_adapter_from_a_version_folder_changes_the_figure_only_when_on(base_model, scorer, tmp_path) -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base_model.path, dtype=torch.float32)
    peft_model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_" in name:
                param.normal_(0, 0.05, generator=torch.Generator().manual_seed(0))
    peft_model.save_pretrained(tmp_path)

    with_adapter = Scorer.load(base_model.path, tmp_path)
    texts = [conversation(ANSWER), conversation("Paris, of course. Lovely city.")]
    base = scorer.score(texts, adapter=False)
    assert with_adapter.score(texts, adapter=False).loss == pytest.approx(base.loss, rel=1e-5)
    assert with_adapter.score(texts, adapter=True).loss != pytest.approx(base.loss, rel=1e-3)


SYSTEM = {"role": "system", "content": "You are Wren, a baker.", "weight": 0.0}
HELDOUT_ROWS = [
    {"messages": [SYSTEM, QUESTION, {"role": "assistant", "content": ANSWER, "weight": 1.0}], "session": "a"},
    {
        "messages": [
            SYSTEM,
            {"role": "user", "content": "Any scones left? " * 12, "weight": 0.0},
            {"role": "assistant", "content": "Two, and they are mine.", "weight": 0.0},
            {"role": "user", "content": "Please?", "weight": 0.0},
            {"role": "assistant", "content": "Oh, go on then, petal.", "weight": 1.0},
        ],
        "session": "b",
    },
    {"messages": [SYSTEM, QUESTION, {"role": "assistant", "content": SHUFFLED, "weight": 0.5}], "session": "c"},
]
"""Held-out rows as the example builder writes them: one longer than the limit below (it loses context
as training's encoding does) and one reply weighted less than 1."""


def test_the_gates_perplexity_is_trainings_held_out_loss(base_model, tmp_path) -> None:
    """On the same held-out rows the scorer's loss is training's eval loss, with and without an adapter."""
    import torch
    from peft import LoraConfig, get_peft_model

    from training.batches import encode_split, pad_id
    from training.model import heldout_loss, load_adapter_model, load_base_model, load_tokenizer

    limit = 48
    tokenizer = load_tokenizer(base_model)
    split = encode_split(tokenizer, HELDOUT_ROWS, limit)
    assert split.truncated == 1
    conversations = [row["messages"] for row in HELDOUT_ROWS]

    base = load_base_model(base_model)
    trainings = heldout_loss(base, split, 4096, pad_id(tokenizer))
    scorer = Scorer(base, tokenizer, has_adapter=False, max_length=limit, batch_size=2)
    assert scorer.score(conversations, adapter=False).loss == pytest.approx(trainings, abs=1e-5)

    # A LoRA whose B is not zero, saved as a version folder, loaded by each side its own way.
    lora = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    peft_model = get_peft_model(load_base_model(base_model), lora)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_" in name:
                param.normal_(0, 0.05, generator=torch.Generator().manual_seed(1))
    peft_model.save_pretrained(tmp_path)
    trainings_adapter = heldout_loss(load_adapter_model(base_model, tmp_path), split, 4096, pad_id(tokenizer))
    gates = Scorer.load(base_model.path, tmp_path, max_length=limit, batch_size=2)
    assert gates.score(conversations, adapter=True).loss == pytest.approx(trainings_adapter, abs=1e-5)
    assert trainings_adapter != pytest.approx(trainings, abs=1e-3)
    assert gates.score(conversations, adapter=False).loss == pytest.approx(trainings, abs=1e-5)
