"""Hostile requests generated from the server's own ``/openapi.json`` (schemathesis), against the app
over the fake engine: whatever a client sends, the answer is never a 5xx, an error is in OpenAI's
shape, and every answer is one the schema documents.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis.generation import GenerationMode

from service.app import create_app
from service.settings import ServeSettings

from .fake_engine import SERVE_ONLY, FakeEngine
from .fake_store import write_version

CASES = 1000
KEY = "fuzz-key"
SCHEMA_BLIND = {"context_length_exceeded", "invalid_token_id", "min_tokens_exceed_max_tokens", "invalid_json_schema"}
"""Codes of the 400s that depend on what the request schema cannot say."""
MODELS = ["alpha", "alpha@v1", "beta", "SmolLM2-135M-Instruct", "nobody", "alpha@v0", "alpha@x", "alpha@", "../x"]
"""Served ids and near misses, put in place of a generated ``model`` now and then so that requests
get past model resolution to sampling and the engine."""


@pytest.fixture()
def app(tmp_path: Path, cache_dir: Path, base_model):
    root = tmp_path / "personas"
    (root / "alpha" / "logs").mkdir(parents=True)
    (root / "alpha" / "persona.yaml").write_text("display_name: Alpha\nsampling:\n  max_tokens: 4\n")
    write_version(root / "alpha", 1, base_model.hash)
    (root / "beta" / "logs").mkdir(parents=True)
    (root / "broken").mkdir()
    (root / "broken" / "persona.yaml").write_text("sampling: [")
    settings = ServeSettings(
        personas_dir=root,
        cache_dir=cache_dir,
        base_model=str(base_model.path),
        ui=False,
        api_keys=[KEY],
        max_model_len=256,
        **SERVE_ONLY,
    )
    app = create_app(settings, engine_factory=lambda s, b: FakeEngine(max_model_len=256))
    with TestClient(app):  # runs the start-up, so the engine is ready for every case
        yield app


def requests_from_schema(app) -> st.SearchStrategy:
    """Requests for every operation: valid by the schema, or not (where it has a body or a path to spoil);
    the chat completions, where most can go wrong, half the time."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    strategies = []
    for operation in (result.ok() for result in schema.get_all_operations()):
        modes = [GenerationMode.POSITIVE]
        if operation.body or operation.path_parameters:
            modes.append(GenerationMode.NEGATIVE)
        weight = 6 if operation.label == "POST /v1/chat/completions" else 1
        strategies += [operation.as_strategy(generation_mode=mode) for mode in modes] * weight
    return st.one_of(strategies)


def assert_openai_error(response, sent: str) -> None:
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}, sent
    assert isinstance(error["message"], str) and error["message"], sent
    assert error["type"] in ("invalid_request_error", "server_error"), sent


def test_generated_requests_never_get_a_server_error(app) -> None:
    statuses: Counter[int] = Counter()

    # No shrinking: a failure names its request (as curl) at once, where shrinking a large body takes minutes.
    @settings(
        max_examples=CASES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.explicit, Phase.generate],
    )
    @given(
        case=requests_from_schema(app),
        model=st.one_of(st.none(), st.sampled_from(MODELS)),
        keyed=st.sampled_from([True] * 9 + [False]),
    )
    def run(case, model, keyed: bool) -> None:
        if model is not None and isinstance(case.body, dict) and "model" in case.body:
            case.body["model"] = model
        headers = {"Authorization": f"Bearer {KEY}" if keyed else "Bearer wrong-key"}
        case.headers = {**(case.headers or {}), **headers}
        response = case.call()
        statuses[response.status_code] += 1
        sent = f"{response.status_code} {response.text}\nfor {case.as_curl_command()}"
        assert response.status_code < 500, sent
        if response.status_code >= 400:
            assert_openai_error(response, sent)
        chat = case.operation.label == "POST /v1/chat/completions"
        if chat and response.status_code == 400 and case.meta.generation.mode is GenerationMode.POSITIVE:
            # The schema cannot say how many tokens the messages take, which token ids the vocabulary
            # has, or what a JSON schema in response_format asks: the only 400s a schema-valid chat
            # request may get are for those.
            assert response.json()["error"]["code"] in SCHEMA_BLIND, sent
        # The answer's status, content type and body are ones the schema documents.
        case.validate_response(
            response, headers=headers, excluded_checks=[schemathesis.checks.positive_data_acceptance]
        )

    run()
    assert sum(statuses.values()) >= CASES, statuses
    assert min(statuses[200], statuses[400], statuses[401], statuses[404]) >= 20, statuses
