"""The shared server starts as ``make run`` starts one: after ``persona warm`` compiled and saved the
model, it loads that instead of compiling again, and answers as the uncompiled model does (greedy
tokens and their log probabilities as transformers and PEFT give them, with and without an adapter)."""

from __future__ import annotations

import math

import pytest

from store.chat_format import prompt_messages, render_prompt

QUESTION = [{"role": "user", "content": "What do you bake on Sundays?"}]


def test_the_server_loaded_the_model_warm_compiled(live_server) -> None:
    log = live_server.log_path.read_text()
    assert "Directly load AOT compilation" in log, "the server loads the model `persona warm` compiled"
    assert "Compiling model again" not in log, "no load failed and fell back to compiling"


@pytest.fixture(scope="module")
def uncompiled(base_model):
    """The bundled model in transformers, float32 as the server runs it, and its tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(base_model.path, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(base_model.path)


def greedy(model, prompt_ids: list[int], count: int) -> tuple[list[int], list[float]]:
    import torch

    ids, logprobs = list(prompt_ids), []
    with torch.no_grad():
        for _ in range(count):
            step = torch.log_softmax(model(torch.tensor([ids])).logits[0, -1].float(), dim=-1)
            ids.append(int(step.argmax()))
            logprobs.append(float(step[ids[-1]]))
    return ids[len(prompt_ids) :], logprobs


@pytest.mark.parametrize("with_adapter", [False, True], ids=["base model", "random adapter"])
def test_the_loaded_model_answers_as_the_uncompiled_one(client, live_server, random_personas, uncompiled, with_adapter):
    from peft import PeftModel

    from store.registry import PersonaStore

    base, tokenizer = uncompiled
    if with_adapter:
        persona = PersonaStore(live_server.personas_dir).get(random_personas[0])
        adapter = persona.version_path(persona.live)
        model, name, system = PeftModel.from_pretrained(base, str(adapter)), persona.name, persona.system_prompt
    else:
        model, name, system = base, client.models.list().data[0].id, None
    try:
        reply = client.chat.completions.create(
            model=name, messages=QUESTION, max_tokens=8, temperature=0, logprobs=True
        )
        ids, expected = greedy(model, render_prompt(tokenizer, prompt_messages(QUESTION, system)), 8)
    finally:
        if with_adapter:
            model.unload()  # the base model stays as it was for the other case
    served = reply.choices[0].logprobs.content
    assert [t.token for t in served] == [tokenizer.decode([i]) for i in ids[: len(served)]], "the same greedy tokens"
    for token, reference in zip(served, expected, strict=False):
        assert math.isclose(token.logprob, reference, rel_tol=0.02, abs_tol=0.02), (
            token.token,
            token.logprob,
            reference,
        )
