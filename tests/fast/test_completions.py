"""``/v1/completions`` over the fake engine: the prompt as given, the persona's adapter and sampling,
OpenAI's legacy shapes (whole and streamed), and its errors."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from . import test_api
from .fake_engine import FakeEngine
from .test_api import assert_openai_error

personas, engine, client = test_api.personas, test_api.engine, test_api.client
"""The API tests' fixtures: personas alpha (trained, v1), beta (card only) and broken, over a fake engine."""


def complete(client: TestClient, prompt, model: str = "alpha", **params):
    return client.post("/v1/completions", json={"model": model, "prompt": prompt, **params})


def test_the_prompt_is_taken_as_given_with_the_persona_adapter(client: TestClient, engine: FakeEngine) -> None:
    prompt = "Once upon a time, Alpha said"
    response = complete(client, prompt, top_k=5, min_p=0.1)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "text_completion" and body["id"].startswith("cmpl-")
    prompt_ids, params, adapter = engine.calls[-1]
    tokenizer = client.app.state.chat.tokenizer
    assert prompt_ids == tokenizer.encode(prompt, add_special_tokens=False), "no template, no system prompt"
    assert adapter is not None and adapter.path.name == "v1"
    assert params.max_tokens == 5 and params.temperature == 0.3, "the card's defaults"
    assert (params.top_k, params.min_p) == (5, 0.1)
    choice = body["choices"][0]
    assert choice["text"].startswith("[alpha@v1#") and choice["finish_reason"] == "length"
    assert body["usage"] == {
        "prompt_tokens": len(prompt_ids),
        "completion_tokens": 5,
        "total_tokens": len(prompt_ids) + 5,
    }


def test_a_list_of_prompts_gets_n_choices_each(client: TestClient, engine: FakeEngine) -> None:
    body = complete(client, ["One", "Two"], n=2, max_tokens=2).json()
    assert [c["index"] for c in body["choices"]] == [0, 1, 2, 3]
    assert len(engine.calls) == 2 and body["usage"]["completion_tokens"] == 8
    tokenizer = client.app.state.chat.tokenizer
    ids = tokenizer.encode("Hello there", add_special_tokens=False)
    assert complete(client, ids, max_tokens=2).status_code == 200
    assert engine.calls[-1][0] == ids
    assert complete(client, [ids, ids], max_tokens=2).json()["choices"][1]["index"] == 1


def test_echo_puts_the_prompt_before_the_reply(client: TestClient) -> None:
    text = complete(client, "Ahoy there", echo=True, max_tokens=2).json()["choices"][0]["text"]
    assert text.startswith("Ahoy there[alpha@v1#")


def test_logprobs_in_the_legacy_shape(client: TestClient) -> None:
    choice = complete(client, "Hi", logprobs=2, max_tokens=3).json()["choices"][0]
    logprobs = choice["logprobs"]
    assert "".join(logprobs["tokens"]) == choice["text"]
    assert len(logprobs["token_logprobs"]) == 3 and all(lp <= 0 for lp in logprobs["token_logprobs"])
    assert all(len(top) == 2 for top in logprobs["top_logprobs"])
    offsets = [0]
    for token in logprobs["tokens"][:-1]:
        offsets.append(offsets[-1] + len(token))
    assert logprobs["text_offset"] == offsets
    assert complete(client, "Hi").json()["choices"][0]["logprobs"] is None


def test_streamed_completion(client: TestClient) -> None:
    response = complete(client, "Hi", stream=True, stream_options={"include_usage": True}, max_tokens=3, n=2)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    lines = [line for line in response.text.splitlines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    events = [json.loads(line[6:]) for line in lines[:-1]]
    assert all(e["object"] == "text_completion" and "choices" in e for e in events)
    texts = {0: "", 1: ""}
    for event in events[:-1]:
        for choice in event["choices"]:
            texts[choice["index"]] += choice["text"]
    assert all(t.startswith("[alpha@v1#") for t in texts.values())
    assert events[-1]["choices"] == [] and events[-1]["usage"]["completion_tokens"] == 6
    reasons = [c["finish_reason"] for e in events for c in e["choices"] if c["finish_reason"]]
    assert reasons == ["length", "length"]


def test_ignored_fields_are_named_in_the_warning_header(client: TestClient) -> None:
    response = complete(client, "Hi", num_ctx=4096, mirostat=2)
    assert response.status_code == 200
    assert response.headers["warning"] == '299 - "ignored fields: num_ctx, mirostat"'


@pytest.mark.parametrize(
    "params, status, param, code",
    [
        ({"model": "nobody"}, 404, "model", "model_not_found"),
        ({"prompt": ""}, 400, "prompt", "invalid_value"),
        ({"prompt": [10**9]}, 400, "prompt", "invalid_token_id"),
        ({"prompt": "word " * 600}, 400, "prompt", "context_length_exceeded"),
        ({"max_tokens": 600}, 400, "max_tokens", "context_length_exceeded"),
        ({"best_of": 3}, 400, "best_of", "unsupported_parameter"),
        ({"suffix": "end"}, 400, "suffix", "unsupported_parameter"),
        ({"logprobs": 6}, 400, "logprobs", "invalid_value"),
        ({"logit_bias": {"99999999": 1}}, 400, "logit_bias", "invalid_token_id"),
    ],
)
def test_errors_name_the_parameter(
    client: TestClient, engine: FakeEngine, params: dict, status: int, param: str, code: str
) -> None:
    body = {"model": "alpha", "prompt": "Hi", **params}
    assert_openai_error(client.post("/v1/completions", json=body), status, param, code)
    assert engine.calls == []


def test_the_schema_documents_the_endpoint(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    responses = schema["paths"]["/v1/completions"]["post"]["responses"]
    assert {"200", "400", "401", "404", "409", "500", "503"} == set(responses)
    assert set(responses["200"]["content"]) == {"application/json", "text/event-stream"}
