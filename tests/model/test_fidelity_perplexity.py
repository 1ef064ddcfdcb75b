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
