"""Sampling controls the engine honours, and fields other servers invented, over the fake engine:
what reaches the engine, the replies' log probabilities, and the refusals that name what is wrong."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from . import test_api
from .fake_engine import FakeEngine
from .test_api import assert_openai_error, chat, make_client

personas, engine, client = test_api.personas, test_api.engine, test_api.client
"""The API tests' fixtures: personas alpha (trained, v1), beta (card only) and broken, over a fake engine."""


def test_every_control_reaches_the_engine(client: TestClient, engine: FakeEngine) -> None:
    response = chat(
        client,
        "alpha",
        top_k=40,
        min_p=0.05,
        repetition_penalty=1.15,
        min_tokens=2,
        stop_token_ids=[2, 7],
        logit_bias={"17": -100, "42": 250, "9": -300.5},
        max_tokens=4,
    )
    assert response.status_code == 200, response.text
    params = engine.calls[-1][1]
    assert (params.top_k, params.min_p, params.repetition_penalty) == (40, 0.05, 1.15)
    assert params.min_tokens == 2 and params.stop_token_ids == (2, 7)
    assert dict(params.logit_bias) == {17: -100.0, 42: 100.0, 9: -100.0}, "ids as ints, biases clamped to -100..100"
    assert "warning" not in response.headers


def test_the_card_sets_the_same_controls_and_the_request_wins(
    personas: Path,
    cache_dir: Path,
    engine: FakeEngine,
    base_model,
) -> None:
    (personas / "beta" / "persona.yaml").write_text(
        "display_name: Beta\nsampling:\n  min_p: 0.05\n  top_k: 20\n  repetition_penalty: 1.1\n"
    )
    with make_client(personas, cache_dir, engine, base_model) as client:
        assert chat(client, "beta").status_code == 200
        card = engine.calls[-1][1]
        assert (card.min_p, card.top_k, card.repetition_penalty) == (0.05, 20, 1.1)
        assert chat(client, "beta", min_p=0.2, top_k=0).status_code == 200
        asked = engine.calls[-1][1]
        assert (asked.min_p, asked.top_k, asked.repetition_penalty) == (0.2, 0, 1.1)
        assert chat(client, "SmolLM2-135M-Instruct").status_code == 200
        base = engine.calls[-1][1]
        assert (base.min_p, base.top_k, base.repetition_penalty) == (0.0, 0, 1.0), "engine defaults: all off"


def test_the_card_sets_token_level_controls_too(
    personas: Path, cache_dir: Path, engine: FakeEngine, base_model
) -> None:
    (personas / "beta" / "persona.yaml").write_text(
        "sampling:\n  logit_bias: {'17': -100}\n  stop_token_ids: [2]\n  min_tokens: 1\n"
    )
    with make_client(personas, cache_dir, engine, base_model) as client:
        assert chat(client, "beta").status_code == 200
        card = engine.calls[-1][1]
        assert (dict(card.logit_bias), card.stop_token_ids, card.min_tokens) == ({17: -100.0}, (2,), 1)
        assert chat(client, "beta", logit_bias={"9": 5}, stop_token_ids=[], min_tokens=0).status_code == 200
        asked = engine.calls[-1][1]
        assert (dict(asked.logit_bias), asked.stop_token_ids, asked.min_tokens) == ({9: 5.0}, (), 0)


def test_a_card_with_a_bias_on_a_word_is_refused_when_read(personas: Path) -> None:
    from store.card import load_card
    from store.errors import CardError

    (personas / "beta" / "persona.yaml").write_text("sampling:\n  logit_bias: {hello: -100}\n")
    with pytest.raises(CardError, match="sampling.logit_bias"):
        load_card(personas / "beta")


def vocab(client: TestClient) -> int:
    """The served tokenizer's vocabulary (the fast tier's tiny tokenizer is smaller than the model's)."""
    return client.app.state.chat.vocab_size


def test_top_k_beyond_the_vocabulary_or_minus_one_means_every_token(client: TestClient, engine: FakeEngine) -> None:
    for asked in (-1, vocab(client), 10**30):
        assert chat(client, "alpha", top_k=asked).status_code == 200
        assert engine.calls[-1][1].top_k == 0


@pytest.mark.parametrize(
    "params, param, named",
    [
        ({"logit_bias": {"VOCAB": -100}}, "logit_bias", "VOCAB"),
        ({"logit_bias": {"hello": 5}}, "logit_bias", "hello"),
        ({"logit_bias": {"-3": 5}}, "logit_bias", "-3"),
        ({"stop_token_ids": [1, 10**9]}, "stop_token_ids", str(10**9)),
    ],
)
def test_token_ids_outside_the_vocabulary_are_refused_naming_the_id(
    client: TestClient, engine: FakeEngine, params: dict, param: str, named: str
) -> None:
    size = vocab(client)
    if "VOCAB" in params.get("logit_bias", {}):
        params, named = {"logit_bias": {str(size): -100}}, str(size)
    error = assert_openai_error(chat(client, "alpha", **params), 400, param, "invalid_token_id")
    assert named in error["message"] and f"0 to {size - 1}" in error["message"]
    assert engine.calls == []


@pytest.mark.parametrize(
    "params, param",
    [
        ({"top_k": -2}, "top_k"),
        ({"min_p": 1.5}, "min_p"),
        ({"repetition_penalty": 0}, "repetition_penalty"),
        ({"min_tokens": -1}, "min_tokens"),
        ({"top_logprobs": 21, "logprobs": True}, "top_logprobs"),
        ({"logit_bias": {"5": "x"}}, "logit_bias"),
        ({"response_format": {"type": "json_schema"}}, "response_format"),
        ({"response_format": {"type": "xml"}}, "response_format"),
    ],
)
def test_control_values_out_of_range_are_400(client: TestClient, params: dict, param: str) -> None:
    error = assert_openai_error(chat(client, "alpha", **params), 400, code="invalid_value")
    assert error["param"].startswith(param), error


def test_min_tokens_above_the_reply_length_is_refused(client: TestClient) -> None:
    error = assert_openai_error(
        chat(client, "alpha", min_tokens=9, max_tokens=4), 400, "min_tokens", "min_tokens_exceed_max_tokens"
    )
    assert "9" in error["message"] and "4" in error["message"]


def test_logprobs_in_the_whole_reply(client: TestClient) -> None:
    body = chat(client, "alpha", logprobs=True, top_logprobs=3, max_tokens=4, n=2).json()
    for choice in body["choices"]:
        content = choice["logprobs"]["content"]
        assert "".join(t["token"] for t in content) == choice["message"]["content"]
        assert len(content) == body["usage"]["completion_tokens"] // 2
        for token in content:
            assert token["logprob"] <= 0 and token["bytes"] == list(token["token"].encode())
            assert len(token["top_logprobs"]) == 3 and token["top_logprobs"][0]["token"] == token["token"]
    no_top = chat(client, "alpha", logprobs=True).json()["choices"][0]["logprobs"]["content"]
    assert no_top and all(t["top_logprobs"] == [] for t in no_top)
    assert chat(client, "alpha").json()["choices"][0]["logprobs"] is None
    assert chat(client, "alpha", logprobs=False).json()["choices"][0]["logprobs"] is None
    alone = chat(client, "alpha", top_logprobs=2).json()["choices"][0]["logprobs"]["content"]
    assert alone and len(alone[0]["top_logprobs"]) == 2, "top_logprobs alone asks for log probabilities"


def stream_events(response) -> list:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    lines = [line for line in response.text.splitlines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    return [json.loads(line[6:]) for line in lines[:-1]]


def test_logprobs_in_the_stream(client: TestClient) -> None:
    body = {
        "model": "alpha",
        "messages": [{"role": "user", "content": "Hi"}],
        "stream": True,
        "logprobs": True,
        "top_logprobs": 2,
    }
    events = stream_events(client.post("/v1/chat/completions", json=body))
    text, tokens = "", ""
    for event in events:
        for choice in event["choices"]:
            if choice["delta"].get("content"):
                text += choice["delta"]["content"]
                content = choice["logprobs"]["content"]
                tokens += "".join(t["token"] for t in content)
                assert all(len(t["top_logprobs"]) == 2 for t in content)
    assert text and tokens == text


def test_response_format_reaches_the_engine_as_structured_output(client: TestClient, engine: FakeEngine) -> None:
    schema = {"type": "object", "properties": {"mood": {"type": "string"}}, "required": ["mood"]}
    fmt = {"type": "json_schema", "json_schema": {"name": "mood", "schema": schema, "strict": True}}
    assert chat(client, "alpha", response_format=fmt).status_code == 200
    assert json.loads(engine.calls[-1][1].json_schema) == schema
    assert chat(client, "alpha", response_format={"type": "json_object"}).status_code == 200
    assert engine.calls[-1][1].json_object and engine.calls[-1][1].json_schema is None
    assert chat(client, "alpha", response_format={"type": "text"}).status_code == 200
    assert not engine.calls[-1][1].json_object and engine.calls[-1][1].json_schema is None


def test_a_schema_the_grammar_cannot_follow_is_refused(client: TestClient, engine: FakeEngine) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "no-such-type"}}}
    error = assert_openai_error(
        chat(client, "alpha", response_format=fmt), 400, "response_format", "invalid_json_schema"
    )
    assert "JSON schema" in error["message"]
    assert engine.calls == []


FOREIGN = {
    "num_ctx": 4096,
    "repeat_penalty": 1.1,
    "reasoning_effort": "high",
    "reasoning": {"effort": "low"},
    "user": "u-1",
    "metadata": {"chat": "1"},
    "store": True,
    "parallel_tool_calls": True,
    "mirostat": 2,
}


@pytest.mark.parametrize("stream", [False, True])
def test_fields_other_servers_invented_are_ignored_with_a_warning(
    client: TestClient, engine: FakeEngine, caplog, stream: bool
) -> None:
    caplog.set_level(logging.WARNING, logger="persona.service")
    response = chat(client, "alpha", stream=stream, **FOREIGN)
    assert response.status_code == 200, response.text
    warning = response.headers["warning"]
    assert warning.startswith('299 - "ignored fields: ') and warning.endswith('"')
    named = warning.split(": ", 1)[1].rstrip('"').split(", ")
    assert sorted(named) == sorted(FOREIGN)
    logged = [r.getMessage() for r in caplog.records if "ignored request field" in r.getMessage()]
    assert len(logged) == len(FOREIGN) and all(any(repr(f) in line for line in logged) for f in FOREIGN)
    params = engine.calls[-1][1]
    assert params.repetition_penalty == 1.0, "Ollama's repeat_penalty is not taken for vLLM's repetition_penalty"


def test_fields_that_ask_for_nothing_bring_no_warning(client: TestClient) -> None:
    response = chat(client, "alpha", store=False, metadata=None, user="", parallel_tool_calls=False, logprobs=False)
    assert response.status_code == 200 and "warning" not in response.headers


def test_any_field_name_makes_a_valid_header(client: TestClient) -> None:
    response = chat(client, "alpha", **{'na"me\nø': 1, "x" * 500: 2, **{f"f{i}": i for i in range(30)}})
    assert response.status_code == 200, response.text
    warning = response.headers["warning"]
    assert warning.isascii() and "\n" not in warning and "and 12 more" in warning


def test_what_cannot_be_done_stays_a_400(client: TestClient, engine: FakeEngine) -> None:
    tools = [{"type": "function", "function": {"name": "f"}}]
    assert_openai_error(chat(client, "alpha", tools=tools, num_ctx=2048), 400, "tools", "unsupported_parameter")
    image = [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}}]
    body = {"model": "alpha", "messages": [{"role": "user", "content": image}], "num_ctx": 2048}
    assert_openai_error(client.post("/v1/chat/completions", json=body), 400, "messages[0].content[0].type")
    assert engine.calls == []
