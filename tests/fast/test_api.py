"""The HTTP API over a fake engine: model resolution, request mapping, streaming, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import ServeSettings

from .fake_engine import SERVE_ONLY, FakeEngine
from .fake_store import write_version


@pytest.fixture()
def personas(tmp_path: Path, base_model) -> Path:
    root = tmp_path / "personas"
    alpha = root / "alpha"
    (alpha / "logs").mkdir(parents=True)
    (alpha / "persona.yaml").write_text(
        "display_name: Alpha\nsystem_prompt: You are Alpha, who says ahoy.\n"
        "sampling:\n  temperature: 0.3\n  max_tokens: 5\n"
    )
    write_version(alpha, 1, base_model.hash)
    beta = root / "beta"
    (beta / "logs").mkdir(parents=True)
    (beta / "persona.yaml").write_text("display_name: Beta\ndescription: A card-only persona.\n")
    broken = root / "broken"
    broken.mkdir()
    (broken / "persona.yaml").write_text("sampling:\n  temperature: hot\n")
    return root


@pytest.fixture()
def engine() -> FakeEngine:
    return FakeEngine()


def make_client(personas: Path, cache_dir: Path, engine: FakeEngine, base_model, **extra) -> TestClient:
    settings = ServeSettings(
        personas_dir=personas, cache_dir=cache_dir, base_model=str(base_model.path), ui=False, **{**SERVE_ONLY, **extra}
    )
    return TestClient(create_app(settings, engine_factory=lambda s, b: engine))


@pytest.fixture()
def client(personas: Path, cache_dir: Path, engine: FakeEngine, base_model):
    with make_client(personas, cache_dir, engine, base_model) as c:
        yield c


def chat(client: TestClient, model: str, content: str = "Hello", **params):
    return client.post(
        "/v1/chat/completions", json={"model": model, "messages": [{"role": "user", "content": content}], **params}
    )


def assert_openai_error(response, status: int, param: str | None = None, code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    if param is not None:
        assert error["param"] == param
    if code is not None:
        assert error["code"] == code
    return error


def test_models_lists_base_personas_and_versions(client: TestClient) -> None:
    data = client.get("/v1/models").json()["data"]
    ids = [m["id"] for m in data]
    assert ids[0] == "SmolLM2-135M-Instruct"
    assert {"alpha", "alpha@v1", "beta"} <= set(ids)
    assert "broken" not in ids
    by_id = {m["id"]: m for m in data}
    assert by_id["alpha"]["persona"]["status"] == "trained"
    assert by_id["alpha"]["persona"]["live_version"] == "v1"
    assert by_id["beta"]["persona"]["status"] == "card"
    assert by_id["alpha@v1"]["parent"] == "alpha"
    assert by_id["alpha@v1"]["persona"] == client.get("/v1/personas/alpha").json(), "one persona status everywhere"


def test_one_model_by_id(client: TestClient) -> None:
    assert client.get("/v1/models/alpha@v1").json()["parent"] == "alpha"
    assert client.get("/v1/models/SmolLM2-135M-Instruct").json()["persona"] is None
    for missing in ("nobody", "org/nobody", "alpha@v9"):
        assert_openai_error(client.get(f"/v1/models/{missing}"), 404, "model", "model_not_found")


def test_persona_uses_live_adapter_and_its_system_prompt(client: TestClient, engine: FakeEngine, base_model) -> None:
    body = chat(client, "alpha").json()
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"]["content"].startswith("[alpha@v1#")
    prompt_ids, params, adapter = engine.calls[-1]
    assert adapter is not None and adapter.path.name == "v1"
    from transformers import AutoTokenizer

    prompt = AutoTokenizer.from_pretrained(base_model.path).decode(prompt_ids)
    assert "You are Alpha, who says ahoy." in prompt
    assert prompt.rstrip().endswith("<|im_start|>assistant")
    assert params.temperature == 0.3 and params.max_tokens == 5  # the card's defaults
    assert body["usage"]["prompt_tokens"] == len(prompt_ids)
    assert body["usage"]["completion_tokens"] == 5
    assert body["usage"]["total_tokens"] == len(prompt_ids) + 5


def test_request_system_prompt_is_kept_and_values_override_card(
    client: TestClient, engine: FakeEngine, base_model
) -> None:
    response = client.post(
        "/v1/chat/completions",
        json={
            "model": "alpha",
            "temperature": 0.9,
            "max_tokens": 3,
            "top_p": 0.5,
            "seed": 7,
            "presence_penalty": 0.5,
            "frequency_penalty": -0.5,
            "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
        },
    )
    assert response.status_code == 200
    prompt_ids, params, _ = engine.calls[-1]
    from transformers import AutoTokenizer

    prompt = AutoTokenizer.from_pretrained(base_model.path).decode(prompt_ids)
    assert "Be brief." in prompt and "ahoy" not in prompt
    assert (params.temperature, params.max_tokens, params.top_p, params.seed) == (0.9, 3, 0.5, 7)
    assert (params.presence_penalty, params.frequency_penalty) == (0.5, -0.5)
    assert response.json()["choices"][0]["finish_reason"] == "length"


def test_max_completion_tokens_n_and_stop(client: TestClient, engine: FakeEngine) -> None:
    body = chat(client, "beta", max_completion_tokens=4, n=2, stop=[" three"]).json()
    assert [c["index"] for c in body["choices"]] == [0, 1]
    for choice in body["choices"]:
        assert choice["message"]["content"] == "[base] one two"
        assert choice["finish_reason"] == "stop"
    assert engine.calls[-1][1].max_tokens == 4


def test_version_and_base_model_names(client: TestClient, engine: FakeEngine) -> None:
    assert chat(client, "alpha@v1").status_code == 200
    assert engine.calls[-1][2].path.name == "v1"
    assert chat(client, "SmolLM2-135M-Instruct").status_code == 200
    assert engine.calls[-1][2] is None
    assert chat(client, "beta").json()["choices"][0]["message"]["content"].startswith("[base]")


@pytest.mark.parametrize(
    "model",
    [
        "nobody",
        "alpha@v9",
        "alpha@latest",
        "../alpha",
        "Alpha",
        "",
        "a" * 80,
        "alpha@v0",
        "alpha@x",
        "alpha@",
        "alpha@v1@v1",
        "../x",
        "alpha/../beta",
        "alpha\x00",
    ],
)
def test_unknown_model_is_openai_404(client: TestClient, model: str) -> None:
    assert_openai_error(chat(client, model), 404, "model", "model_not_found")


@pytest.mark.parametrize("stream", [False, True])
def test_a_persona_with_an_invalid_card_is_a_409_naming_the_file_and_field(client: TestClient, stream: bool) -> None:
    error = assert_openai_error(chat(client, "broken", stream=stream), 409, "model", "invalid_card")
    assert "broken/persona.yaml" in error["message"] and "sampling.temperature" in error["message"]
    assert_openai_error(chat(client, "broken@v1"), 409, "model", "invalid_card")


@pytest.mark.parametrize(
    "params, param",
    [
        ({"temperature": 5}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"n": 0}, "n"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"presence_penalty": 3}, "presence_penalty"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"top_logprobs": 21}, "top_logprobs"),
        ({"messages": []}, "messages"),
        ({"seed": False}, "seed"),  # not seed 0
        ({"top_k": True}, "top_k"),
        ({"temperature": False}, "temperature"),
        ({"logit_bias": {"50": True}}, "logit_bias"),
    ],
)
def test_bad_parameters_are_400_naming_the_parameter(client: TestClient, params: dict, param: str) -> None:
    body = {"model": "alpha", "messages": [{"role": "user", "content": "Hi"}], **params}
    assert_openai_error(client.post("/v1/chat/completions", json=body), 400, param)


def test_malformed_json_and_bad_role_are_400(client: TestClient) -> None:
    response = client.post("/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"})
    assert_openai_error(response, 400, code="invalid_json")
    body = {"model": "alpha", "messages": [{"role": "wizard", "content": "Hi"}]}
    assert_openai_error(client.post("/v1/chat/completions", json=body), 400, "messages[0].role")


@pytest.mark.parametrize(
    "content, headers",
    [
        (b'{"model": "alpha", "messages": [{"role": "user", "content": "Hi"}]}', {"content-type": "text/plain"}),
        (b"model=alpha", {"content-type": "application/x-www-form-urlencoded"}),
        (b"", {}),
        (b"[1, 2]", {}),
        (b'"alpha"', {}),
        (b"\xff\xfe", {"content-type": "application/json"}),
    ],
)
def test_a_body_that_is_not_a_json_object_is_400(client: TestClient, content: bytes, headers: dict) -> None:
    response = client.post(
        "/v1/chat/completions", content=content, headers={"content-type": "application/json", **headers}
    )
    error = assert_openai_error(response, 400)
    assert "JSON" in error["message"]


@pytest.mark.parametrize(
    "params, param",
    [
        ({"seed": 2**80}, "seed"),
        ({"seed": -(2**63) - 4096}, "seed"),
        ({"n": 17}, "n"),
        ({"n": 10**30}, "n"),
        ({"max_completion_tokens": 0}, "max_completion_tokens"),
        ({"top_p": 1.5}, "top_p"),
        ({"frequency_penalty": -2.5}, "frequency_penalty"),
        ({"temperature": "hot"}, "temperature"),
        ({"stop": 5}, "stop"),
        ({"stop": [1]}, "stop[0]"),
        ({"stream": "maybe"}, "stream"),
        ({"messages": "Hi"}, "messages"),
        ({"messages": [{"content": "Hi"}]}, "messages[0].role"),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
            "messages[0].content[0].type",
        ),
        ({"messages": [{"role": "tool", "content": "42", "tool_call_id": "a"}]}, "messages[0].role"),
        ({"model": 7}, "model"),
    ],
)
def test_values_out_of_range_or_of_the_wrong_type_are_400(client: TestClient, params: dict, param: str) -> None:
    body = {"model": "alpha", "messages": [{"role": "user", "content": "Hi"}], **params}
    assert_openai_error(client.post("/v1/chat/completions", json=body), 400, param, "invalid_value")


def test_not_a_number_is_400(client: TestClient) -> None:
    body = b'{"model": "alpha", "messages": [{"role": "user", "content": "Hi"}], "temperature": NaN}'
    response = client.post("/v1/chat/completions", content=body, headers={"content-type": "application/json"})
    assert_openai_error(response, 400, "temperature", "invalid_value")


@pytest.mark.parametrize(
    "params, param",
    [
        ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"functions": [{"name": "f"}]}, "functions"),
        ({"audio": {"voice": "alloy"}}, "audio"),
        ({"modalities": ["text", "audio"]}, "modalities"),
        ({"service_tier": "flex"}, "service_tier"),
        ({"prediction": {"type": "content", "content": "x"}}, "prediction"),
        (
            {
                "messages": [
                    {"role": "assistant", "content": None, "tool_calls": [{"id": "1"}]},
                    {"role": "user", "content": "Hi"},
                ]
            },
            "messages[0].tool_calls",
        ),
    ],
)
def test_what_the_server_cannot_honour_is_refused_by_name(
    client: TestClient, engine: FakeEngine, params: dict, param: str
) -> None:
    body = {"model": "alpha", "messages": [{"role": "user", "content": "Hi"}], **params}
    error = assert_openai_error(client.post("/v1/chat/completions", json=body), 400, param, "unsupported_parameter")
    assert "not supported by this server" in error["message"]
    assert engine.calls == []


def test_with_strict_parameters_unknown_and_ignored_fields_are_refused_by_name(
    personas: Path, cache_dir: Path, engine: FakeEngine, base_model
) -> None:
    with make_client(personas, cache_dir, engine, base_model, strict_parameters=True) as client:
        for extra in ("num_ctx", "temprature", "mirostat"):
            body = {"model": "alpha", "messages": [{"role": "user", "content": "Hi"}], extra: 1}
            error = assert_openai_error(
                client.post("/v1/chat/completions", json=body),
                400,
                extra,
                f"{'unknown' if extra != 'num_ctx' else 'unsupported'}_parameter",
            )
            assert extra in error["message"]
        for params, param in (
            ({"reasoning_effort": "high"}, "reasoning_effort"),
            ({"store": True}, "store"),
            ({"metadata": {"a": "b"}}, "metadata"),
        ):
            body = {"model": "alpha", "messages": [{"role": "user", "content": "Hi"}], **params}
            error = assert_openai_error(
                client.post("/v1/chat/completions", json=body), 400, param, "unsupported_parameter"
            )
            assert "not supported by this server" in error["message"]
        assert chat(client, "alpha", top_k=5, store=False).status_code == 200, (
            "what is honoured, or asks nothing, passes"
        )
    assert engine.calls and engine.calls[-1][1].top_k == 5


def test_nested_unknown_parameters_are_refused_by_name(client: TestClient) -> None:
    body = {
        "model": "alpha",
        "messages": [{"role": "user", "content": "Hi"}],
        "stream_options": {"include_usage": True, "x": 1},
    }
    assert_openai_error(client.post("/v1/chat/completions", json=body), 400, "stream_options.x", "unknown_parameter")


def test_values_that_ask_for_nothing_are_accepted(client: TestClient) -> None:
    """OpenAI's defaults, as clients send them, and an earlier reply echoed back with its empty fields."""
    echoed = {
        "role": "assistant",
        "content": "Ahoy.",
        "refusal": None,
        "tool_calls": None,
        "function_call": None,
        "audio": None,
        "annotations": [],
    }
    response = client.post(
        "/v1/chat/completions",
        json={
            "model": "alpha",
            "messages": [{"role": "user", "content": "Hi", "name": "sam"}, echoed, {"role": "user", "content": "And?"}],
            "logit_bias": {},
            "response_format": {"type": "text"},
            "logprobs": False,
            "tools": [],
            "tool_choice": "none",
            "parallel_tool_calls": True,
            "store": False,
            "service_tier": "auto",
            "modalities": ["text"],
            "user": "u-1",
            "metadata": None,
            "stream_options": None,
            "prompt_cache_key": "k",
        },
    )
    assert response.status_code == 200, response.text


def test_extreme_seeds_reach_the_engine_in_its_range(client: TestClient, engine: FakeEngine) -> None:
    """vLLM cannot take seeds past 64 bits and reads -1 as "no seed": a negative seed is folded onto a
    non-negative one, the same every time; the ends as a client holding doubles spells them are the ends."""
    seeds = []
    for seed in (2**63 - 1, -(2**63), -1, -1, 0, 9223372036854775808, -9223372036854776000):
        assert chat(client, "alpha", seed=seed).status_code == 200, seed
        seeds.append(engine.calls[-1][1].seed)
    assert seeds[0] == 2**63 - 1 and seeds[4] == 0, "seeds in vLLM's range reach it unchanged"
    assert all(s is not None and 0 <= s < 2**63 for s in seeds) and seeds[2] == seeds[3]
    assert seeds[5] == seeds[0] and seeds[6] == seeds[1], "2**63 spelled as a double is 2**63 - 1, -2**63 is itself"


def test_an_engine_failure_is_a_500_in_openai_shape(client: TestClient, engine: FakeEngine, monkeypatch) -> None:
    async def broken(*args, **kwargs):
        raise RuntimeError("engine died")
        yield

    monkeypatch.setattr(engine, "generate", broken)
    error = assert_openai_error(chat(client, "alpha"), 500, code="generation_failed")
    assert error["type"] == "server_error" and "engine died" in error["message"]
    assert client.get("/health").status_code == 200, "the server keeps answering"


def test_the_schema_documents_the_answers_the_server_gives(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    error = {"$ref": "#/components/schemas/ErrorResponse"}
    expected = {
        ("post", "/v1/chat/completions"): {"200", "400", "401", "404", "409", "500", "503"},
        ("get", "/v1/models"): {"200", "401", "503"},
        ("get", "/v1/models/{model_id}"): {"200", "401", "404", "503"},
        ("get", "/v1/personas"): {"200", "401"},
        ("get", "/v1/personas/{name}"): {"200", "401", "404"},
    }
    for (method, path), statuses in expected.items():
        responses = schema["paths"][path][method]["responses"]
        assert set(responses) == statuses, (path, set(responses))
        for status in statuses - {"200"}:
            assert responses[status]["content"]["application/json"]["schema"] == error, (path, status)
    chat_200 = schema["paths"]["/v1/chat/completions"]["post"]["responses"]["200"]["content"]
    assert set(chat_200) == {"application/json", "text/event-stream"}
    assert "422" not in json.dumps(schema["paths"]) and "HTTPValidationError" not in schema["components"]["schemas"]
    request = schema["components"]["schemas"]["ChatCompletionRequest"]["properties"]
    assert request["tools"]["x-unsupported"] and request["num_ctx"]["x-ignored"]
    assert "x-unsupported" not in request["logit_bias"] and "x-unsupported" not in request["response_format"]
    seed = request["seed"]["anyOf"][0]
    assert (seed["minimum"], seed["exclusiveMaximum"]) == (-(2**63), 2**63), "bounds in JSON Schema's words"
    assert not list(pydantic_bounds(schema["components"])), "no bound in words only pydantic knows (ge, lt...)"


def pydantic_bounds(node):
    """The parts of a schema with bounds named as pydantic names them, which JSON Schema readers ignore."""
    if isinstance(node, dict):
        if {"ge", "gt", "le", "lt"} & set(node) and "type" in node:
            yield node
        for value in node.values():
            yield from pydantic_bounds(value)
    elif isinstance(node, list):
        for value in node:
            yield from pydantic_bounds(value)


def test_prompt_longer_than_context_is_400(client: TestClient) -> None:
    error = assert_openai_error(chat(client, "alpha", "word " * 600), 400, "messages", "context_length_exceeded")
    assert "512" in error["message"]
    error = assert_openai_error(
        chat(client, "alpha", "Hi", max_tokens=600), 400, "max_tokens", "context_length_exceeded"
    )


def test_streaming_chunks_usage_and_done(client: TestClient) -> None:
    body = {
        "model": "alpha",
        "messages": [{"role": "user", "content": "Hi"}],
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": 4,
    }
    with client.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    events = [json.loads(line[len("data: ") :]) for line in lines[:-1]]
    assert all(e["object"] == "chat.completion.chunk" for e in events)
    assert events[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(e["choices"][0]["delta"].get("content") or "" for e in events if e["choices"])
    assert text.startswith("[alpha@v1#") and len(text.split()) == 4
    finishes = [e["choices"][0]["finish_reason"] for e in events if e["choices"] and e["choices"][0]["finish_reason"]]
    assert finishes == ["length"]
    assert events[-1]["choices"] == [] and events[-1]["usage"]["completion_tokens"] == 4
    assert all(e["usage"] is None for e in events[:-1])


def test_stream_without_usage_has_no_usage_chunk(client: TestClient) -> None:
    body = {"model": "beta", "messages": [{"role": "user", "content": "Hi"}], "stream": True, "max_tokens": 2}
    with client.stream("POST", "/v1/chat/completions", json=body) as response:
        lines = [line for line in response.iter_lines() if line]
    events = [json.loads(line[6:]) for line in lines[:-1]]
    assert all(e["choices"] for e in events) and all("usage" not in e for e in events)


def test_lora_ids_are_never_reused_for_other_weights(
    client: TestClient, engine: FakeEngine, personas: Path, base_model
) -> None:
    chat(client, "alpha")
    first = engine.calls[-1][2].lora_id
    chat(client, "alpha")
    assert engine.calls[-1][2].lora_id == first  # same weights, same id
    write_version(personas / "alpha", 2, base_model.hash, b"w2")
    chat(client, "alpha")
    second = engine.calls[-1][2]
    assert second.path.name == "v2" and second.lora_id != first  # new version goes live without restart
    chat(client, "alpha@v1")
    assert engine.calls[-1][2].lora_id == first
    weights = personas / "alpha" / "adapters" / "v1" / "adapter_model.safetensors"
    weights.unlink()
    weights.write_bytes(b"rewritten weights")
    chat(client, "alpha@v1")
    assert engine.calls[-1][2].lora_id not in (first, second.lora_id)


def test_new_persona_appears_without_restart(client: TestClient, personas: Path) -> None:
    (personas / "gamma" / "logs").mkdir(parents=True)
    assert "gamma" in [m["id"] for m in client.get("/v1/models").json()["data"]]
    assert chat(client, "gamma").status_code == 200


def test_adapter_for_another_base_is_refused(client: TestClient, personas: Path) -> None:
    write_version(personas / "alpha", 2, "0" * 64, b"other")
    error = assert_openai_error(chat(client, "alpha"), 409, "model", "adapter_not_servable")
    assert "base model" in error["message"]
    assert chat(client, "alpha@v1").status_code == 200


def test_adapter_over_the_rank_limit_is_refused(client: TestClient, personas: Path, base_model) -> None:
    write_version(personas / "alpha", 2, base_model.hash, b"big", r=64)
    error = assert_openai_error(chat(client, "alpha"), 409)
    assert "'r'" in error["message"] and "16" in error["message"]


def test_api_keys(personas: Path, cache_dir: Path, engine: FakeEngine, base_model) -> None:
    with make_client(personas, cache_dir, engine, base_model, api_keys=["s3cret"]) as client:
        assert_openai_error(chat(client, "alpha"), 401, code="invalid_api_key")
        ok = client.post(
            "/v1/chat/completions",
            headers={"Authorization": "Bearer s3cret"},
            json={"model": "alpha", "messages": [{"role": "user", "content": "Hi"}]},
        )
        assert ok.status_code == 200
        assert client.get("/health").status_code == 200


def test_health_metrics_and_persona_status(client: TestClient) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    chat(client, "alpha")
    chat(client, "nobody")
    text = client.get("/metrics").text
    assert 'persona_chat_requests_total{kind="adapter",status="ok"} 1.0' in text
    assert 'persona_http_errors_total{status="404"} 1.0' in text
    assert 'persona_personas{status="trained"} 1.0' in text and 'persona_personas{status="card"} 1.0' in text
    assert 'persona_personas{status="unreadable"} 1.0' in text
    status = client.get("/v1/personas").json()
    names = {p["name"]: p for p in status["data"]}
    assert names["alpha"]["status"] == "trained" and names["beta"]["status"] == "card"
    assert status["problems"][0]["persona"] == "broken"
    assert names["broken"]["status"] == "invalid card" and "sampling.temperature" in names["broken"]["error"]
    assert "temperature" in status["problems"][0]["message"]
    assert client.get("/v1/personas/beta").json()["description"] == "A card-only persona."
    assert_openai_error(client.get("/v1/personas/nobody"), 404)
