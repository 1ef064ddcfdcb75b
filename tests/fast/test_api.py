"""The HTTP API over a fake engine: model resolution, request mapping, streaming, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import ServeSettings

from .fake_engine import FakeEngine
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
    settings = ServeSettings(personas_dir=personas, cache_dir=cache_dir, base_model=str(base_model.path), ui=False, **extra)
    return TestClient(create_app(settings, engine_factory=lambda s, b: engine))


@pytest.fixture()
def client(personas: Path, cache_dir: Path, engine: FakeEngine, base_model):
    with make_client(personas, cache_dir, engine, base_model) as c:
        yield c


def chat(client: TestClient, model: str, content: str = "Hello", **params):
    return client.post("/v1/chat/completions", json={"model": model, "messages": [{"role": "user", "content": content}], **params})


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


def test_request_system_prompt_is_kept_and_values_override_card(client: TestClient, engine: FakeEngine, base_model) -> None:
    response = client.post("/v1/chat/completions", json={
        "model": "alpha", "temperature": 0.9, "max_tokens": 3, "top_p": 0.5, "seed": 7,
        "presence_penalty": 0.5, "frequency_penalty": -0.5,
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
    })
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


@pytest.mark.parametrize("model", ["nobody", "alpha@v9", "alpha@latest", "../alpha", "Alpha", "broken", "", "a" * 80])
def test_unknown_model_is_openai_404(client: TestClient, model: str) -> None:
    assert_openai_error(chat(client, model), 404, "model", "model_not_found")


@pytest.mark.parametrize(
    "params, param",
    [({"temperature": 5}, "temperature"), ({"top_p": 0}, "top_p"), ({"n": 0}, "n"),
     ({"max_tokens": 0}, "max_tokens"), ({"presence_penalty": 3}, "presence_penalty"),
     ({"stop": ["a", "b", "c", "d", "e"]}, "stop"), ({"logprobs": True}, "logprobs"),
     ({"messages": []}, "messages")],
)
def test_bad_parameters_are_400_naming_the_parameter(client: TestClient, params: dict, param: str) -> None:
    body = {"model": "alpha", "messages": [{"role": "user", "content": "Hi"}], **params}
    assert_openai_error(client.post("/v1/chat/completions", json=body), 400, param)


def test_malformed_json_and_bad_role_are_400(client: TestClient) -> None:
    response = client.post("/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"})
    assert_openai_error(response, 400)
    body = {"model": "alpha", "messages": [{"role": "wizard", "content": "Hi"}]}
    assert_openai_error(client.post("/v1/chat/completions", json=body), 400)


def test_prompt_longer_than_context_is_400(client: TestClient) -> None:
    error = assert_openai_error(chat(client, "alpha", "word " * 600), 400, "messages", "context_length_exceeded")
    assert "512" in error["message"]
    error = assert_openai_error(chat(client, "alpha", "Hi", max_tokens=600), 400, "max_tokens", "context_length_exceeded")


def test_streaming_chunks_usage_and_done(client: TestClient) -> None:
    body = {"model": "alpha", "messages": [{"role": "user", "content": "Hi"}], "stream": True,
            "stream_options": {"include_usage": True}, "max_tokens": 4}
    with client.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    events = [json.loads(line[len("data: "):]) for line in lines[:-1]]
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


def test_lora_ids_are_never_reused_for_other_weights(client: TestClient, engine: FakeEngine, personas: Path, base_model) -> None:
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
        ok = client.post("/v1/chat/completions", headers={"Authorization": "Bearer s3cret"},
                         json={"model": "alpha", "messages": [{"role": "user", "content": "Hi"}]})
        assert ok.status_code == 200
        assert client.get("/health").status_code == 200


def test_health_metrics_and_persona_status(client: TestClient) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    chat(client, "alpha")
    chat(client, "nobody")
    text = client.get("/metrics").text
    assert 'persona_chat_requests_total{kind="adapter",status="ok"} 1.0' in text
    assert 'persona_http_errors_total{status="404"} 1.0' in text
    status = client.get("/v1/personas").json()
    names = {p["name"]: p for p in status["data"]}
    assert names["alpha"]["status"] == "trained" and names["beta"]["status"] == "card"
    assert status["problems"][0]["persona"] == "broken"
    assert "temperature" in status["problems"][0]["message"]
    assert client.get("/v1/personas/beta").json()["description"] == "A card-only persona."
    assert_openai_error(client.get("/v1/personas/nobody"), 404)
