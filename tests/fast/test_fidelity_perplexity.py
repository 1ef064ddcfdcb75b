"""Perplexity scoring on a tiny randomly initialised model (built in memory, no model file)."""

from __future__ import annotations

import copy
import math

import pytest

from store.chat_format import render_conversation
from training.fidelity.perplexity import Scorer, fit_length

SYSTEM = {"role": "system", "content": "You are Wren.", "weight": 0.0}


def conversation(i: int) -> list[dict]:
    context = [
        {"role": "user", "content": "scones " * (1 + i % 3), "weight": 0.0},
        {"role": "assistant", "content": "fox " * i, "weight": 0.0},
        {"role": "user", "content": "the stars?", "weight": 0.0},
    ]
    return [SYSTEM, *context[: 1 + 2 * (i % 2)], {"role": "assistant", "content": "oh crumbs, petal " * (i + 1)}]


@pytest.fixture(scope="module")
def tiny(base_model):
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(base_model.path)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
    )
    return LlamaForCausalLM(config), tokenizer


def test_a_model_that_knows_nothing_has_the_vocabulary_size_as_perplexity(tiny) -> None:
    import torch

    model, tokenizer = tiny
    flat = type(model)(model.config)
    with torch.no_grad():
        flat.lm_head.weight.zero_()  # every token equally likely
    scored = Scorer(flat, tokenizer, has_adapter=False).score([conversation(2)], adapter=False)
    assert scored.perplexity == pytest.approx(len(tokenizer), rel=1e-5)
    _, mask = render_conversation(tokenizer, conversation(2))
    assert scored.tokens == sum(mask)  # exactly the reply and its end-of-turn token


def test_batching_does_not_change_the_figure(tiny) -> None:
    model, tokenizer = tiny
    conversations = [conversation(i) for i in range(7)]
    one_by_one = Scorer(model, tokenizer, has_adapter=False, batch_size=1).score(conversations, adapter=False)
    batched = Scorer(model, tokenizer, has_adapter=False, batch_size=4).score(conversations, adapter=False)
    assert batched.tokens == one_by_one.tokens
    assert batched.loss == pytest.approx(one_by_one.loss, rel=1e-5)
    assert math.isfinite(batched.perplexity) and batched.perplexity > 1


def test_the_adapter_is_switched_off_for_the_base_figures(tiny) -> None:
    import torch
    from peft import LoraConfig, get_peft_model

    model, tokenizer = tiny
    conversations = [conversation(i) for i in range(3)]
    plain = Scorer(model, tokenizer, has_adapter=False).score(conversations, adapter=False)
    lora = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    peft_model = get_peft_model(copy.deepcopy(model), lora)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_" in name:
                param.mul_(20)
    scorer = Scorer(peft_model, tokenizer, has_adapter=True)
    assert scorer.score(conversations, adapter=False).loss == pytest.approx(plain.loss, rel=1e-5)
    assert scorer.score(conversations, adapter=True).loss != pytest.approx(plain.loss, rel=1e-3)
    with pytest.raises(ValueError, match="without an adapter"):
        Scorer(model, tokenizer, has_adapter=False).score(conversations, adapter=True)


def test_a_long_conversation_loses_its_oldest_context_and_keeps_the_reply(tiny) -> None:
    _, tokenizer = tiny
    long = (
        [SYSTEM]
        + [{"role": r, "content": "the quick brown fox " * 20, "weight": 0.0} for r in ("user", "assistant") * 4]
        + [{"role": "assistant", "content": "oh crumbs, petal"}]
    )
    full_ids, full_mask = render_conversation(tokenizer, long)
    ids, mask = fit_length(tokenizer, long, 200)
    assert len(ids) <= 200 < len(full_ids)
    assert sum(mask) == sum(full_mask) and ids[-20:] == full_ids[-20:]
    assert tokenizer.decode(ids).startswith("<|im_start|>system\nYou are Wren.")
