"""The shared server starts as ``make run`` starts one: after ``persona warm`` compiled and saved the
model, it loads that instead of compiling again, and answers as the uncompiled model does (greedy
tokens and their log probabilities as transformers and PEFT give them, with and without an adapter,
the adapter served from its float16 copy)."""

from __future__ import annotations

import math

import pytest

from bench.served_adapter import round_as_served
from service.lora_cpu.kernel import LOADED
from store.chat_format import prompt_messages, render_prompt
from tests.support.greedy import greedy_ids

QUESTION = [{"role": "user", "content": "What do you bake on Sundays?"}]


def test_the_server_loaded_the_model_warm_compiled(live_server) -> None:
    log = live_server.log_path.read_text()
    assert "Directly load AOT compilation" in log, "the server loads the model `persona warm` compiled"
    assert "Compiling model again" not in log, "no load failed and fell back to compiling"
    assert f"{LOADED}: float32 layers keep their adapters in int8" in log, "adapters are served from int8 copies"
    assert "adapters loaded in memory, in bfloat16" in log, "the engine keeps them in bfloat16"


@pytest.mark.parametrize("with_adapter", [False, True], ids=["base model", "random adapter"])
def test_the_loaded_model_answers_as_the_uncompiled_one(
    client, live_server, base_model, random_personas, reference, with_adapter
):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from store.registry import PersonaStore

    model, tokenizer = reference
    name, system = client.models.list().data[0].id, None
    if with_adapter:  # on a copy of its own: the shared reference stays the base model
        persona = PersonaStore(live_server.personas_dir).get(random_personas[0])
        base = AutoModelForCausalLM.from_pretrained(base_model.path, dtype=torch.float32).eval()
        model = PeftModel.from_pretrained(base, str(persona.version_path(persona.live)))
        round_as_served(model)
        name, system = persona.name, persona.system_prompt
    reply = client.chat.completions.create(model=name, messages=QUESTION, max_tokens=8, temperature=0, logprobs=True)
    ids, expected = greedy_ids(model, render_prompt(tokenizer, prompt_messages(QUESTION, system)), 8)
    served = reply.choices[0].logprobs.content
    assert [t.token for t in served] == [tokenizer.decode([i]) for i in ids[: len(served)]], "the same greedy tokens"
    for token, logprob in zip(served, expected, strict=False):
        assert math.isclose(token.logprob, logprob, rel_tol=0.02, abs_tol=0.02), (token.token, token.logprob, logprob)
