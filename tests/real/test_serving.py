"""The real server: per-request LoRA in vLLM, through the official ``openai`` client over HTTP."""

from __future__ import annotations

import asyncio
import json

import httpx
import openai
import pytest

from bench.random_adapter import publish_random_adapter
from tests.support.greedy import opening
from tests.support.polling import wait_until

pytestmark = pytest.mark.real

BASE = "SmolLM2-135M-Instruct"
QUESTION = [{"role": "user", "content": "Tell me about your favourite place."}]


def ask(client, model: str, messages=QUESTION, **params) -> str:
    params.setdefault("max_tokens", 24)
    params.setdefault("temperature", 0)
    reply = client.chat.completions.create(model=model, messages=messages, **params)
    return reply.choices[0].message.content


def test_models_include_base_personas_and_versions(client, random_personas) -> None:
    ids = [m.id for m in client.models.list().data]
    assert ids[0] == BASE
    for name in ("wren", "corvin", "zeph", *random_personas):
        assert name in ids
    assert f"{random_personas[0]}@v1" in ids


def test_concurrent_requests_each_get_their_own_adapter(client, async_client, live_server, random_personas) -> None:
    """With the server's defaults, so through this project's grouped CPU LoRA ops (the plugin)."""
    assert "persona LoRA plugin: grouped CPU LoRA ops" in live_server.log_path.read_text(errors="replace")
    a, b = random_personas
    alone = {model: ask(client, model) for model in (a, b, BASE)}
    assert len({opening(t) for t in alone.values()}) == 3, alone  # the adapters really change the replies

    async def batch():
        models = [a, b, BASE] * 3
        replies = await asyncio.gather(
            *(
                async_client.chat.completions.create(model=m, messages=QUESTION, temperature=0, max_tokens=24)
                for m in models
            )
        )
        return list(zip(models, (r.choices[0].message.content for r in replies)))

    for model, text in asyncio.run(batch()):
        assert opening(text) == opening(alone[model]), (model, text, alone[model])


def test_version_name_selects_that_version(client, own_persona, base_model) -> None:
    """``name@v1`` answers with v1 after v2 went live, and ``name`` with v2: the two really differ."""
    folder = own_persona()
    (folder / "persona.yaml").write_text("system_prompt: You are a helpful assistant.\n")
    assert publish_random_adapter(folder, base_model, seed=31) == 1
    assert publish_random_adapter(folder, base_model, seed=32) == 2  # v2 is live now
    name = folder.name

    def reply(model: str):
        return client.chat.completions.create(model=model, messages=QUESTION, temperature=0, max_tokens=24)

    live = wait_until(lambda: (r := reply(name)).system_fingerprint == "v2" and r, 30, f"{name} to serve v2")
    first = reply(f"{name}@v1")
    second = reply(f"{name}@v2")
    assert first.system_fingerprint == "v1" and second.system_fingerprint == "v2"
    assert second.choices[0].message.content == live.choices[0].message.content
    assert first.choices[0].message.content != live.choices[0].message.content, "v1 and v2 answer alike"


def test_streaming_yields_chunks_usage_and_done(client, live_server, random_personas) -> None:
    a, _ = random_personas
    stream = client.chat.completions.create(
        model=a, messages=QUESTION, temperature=0, max_tokens=16, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 3
    assert opening(text) == opening(ask(client, a, max_tokens=16))
    assert chunks[-1].usage.completion_tokens == 16 and chunks[-1].choices == []
    with httpx.stream(
        "POST",
        live_server.url + "/v1/chat/completions",
        timeout=120,
        json={
            "model": a,
            "messages": QUESTION,
            "max_tokens": 4,
            "stream": True,
        },
    ) as response:
        lines = [line for line in response.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    assert json.loads(lines[0][6:])["choices"][0]["delta"]["role"] == "assistant"


def test_persona_card_prompt_changes_the_reply(client) -> None:
    assert ask(client, "wren") != ask(client, BASE)


def test_n_stop_and_seed(client) -> None:
    reply = client.chat.completions.create(model="zeph", messages=QUESTION, n=2, max_tokens=12, temperature=1.0, seed=3)
    assert [c.index for c in reply.choices] == [0, 1]
    again = client.chat.completions.create(
        model="zeph", messages=QUESTION, n=1, max_tokens=12, temperature=1.0, seed=11
    )
    same = client.chat.completions.create(model="zeph", messages=QUESTION, n=1, max_tokens=12, temperature=1.0, seed=11)
    assert again.choices[0].message.content == same.choices[0].message.content
    full = ask(client, BASE, max_tokens=24)
    cut = full.split()[3]
    stopped = ask(client, BASE, max_tokens=24, stop=[cut])
    assert cut not in stopped and full.startswith(stopped.rstrip())


def test_seeded_requests_with_long_prompts_at_once(client, async_client) -> None:
    """More prompt tokens at once than one engine step takes, each request seeded (as evaluation
    harnesses do): every request is answered and the server keeps serving."""
    topics = ["bread", "rivers", "trains", "owls", "maps", "tea", "snow", "clocks"]

    async def burst():
        return await asyncio.gather(
            *(
                async_client.chat.completions.create(
                    model="wren",
                    max_tokens=8,
                    temperature=0.9,
                    seed=i,
                    messages=[{"role": "user", "content": f"Let me tell you about {topic}. " + "It was long. " * 150}],
                )
                for i, topic in enumerate(topics)
            )
        )

    replies = asyncio.run(burst())
    assert all(r.choices[0].message.content and r.usage.prompt_tokens > 400 for r in replies)
    assert sum(r.usage.prompt_tokens for r in replies) > 2048  # more than one engine step's token budget
    assert ask(client, BASE, max_tokens=4)


def test_unknown_model_and_bad_input_are_openai_errors(client) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        ask(client, "no-such-persona")
    assert missing.value.body["code"] == "model_not_found"
    with pytest.raises(openai.BadRequestError) as too_long:
        ask(client, "wren", messages=[{"role": "user", "content": "word " * 2000}])
    assert too_long.value.body["code"] == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model="wren", messages=QUESTION, temperature=7)
    assert bad.value.body["param"] == "temperature"


def test_hostile_values_are_refused_or_served_never_a_server_error(client, live_server) -> None:
    """Seeds at the ends of the 64-bit range reach vLLM (a negative one still seeds), larger ones and
    values and parameters the server cannot honour are 400s naming the parameter, and the server keeps serving."""
    replies = {seed: ask(client, BASE, max_tokens=6, temperature=1.0, seed=seed) for seed in (2**63 - 1, -(2**63), -1)}
    assert all(replies.values()), replies
    assert ask(client, BASE, max_tokens=6, temperature=1.0, seed=-1) == replies[-1], "a negative seed is a seed"
    for params, param in (
        ({"seed": 2**80}, "seed"),
        ({"logit_bias": {"999999999": 5}}, "logit_bias"),  # no such token
        ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
        ({"n": 17}, "n"),
    ):
        with pytest.raises(openai.BadRequestError) as refused:
            client.chat.completions.create(model="wren", messages=QUESTION, max_tokens=4, **params)
        assert refused.value.body["param"] == param
    response = httpx.post(
        live_server.url + "/v1/chat/completions", content=b"{", timeout=30, headers={"content-type": "application/json"}
    )
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_json"
    assert ask(client, BASE, max_tokens=4)
