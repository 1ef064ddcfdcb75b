"""DPO jobs through OpenAI's fine-tuning API: preference JSONL checked line by line, the hyperparameters
reaching the training settings, the method echoed in OpenAI's shape."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from openai.types.fine_tuning import FineTuningJob

from store.jobs import JobStore
from store.preference import PreferenceFileError, chat_line, parse_preference_file, read_persona_pairs
from training.config import TrainConfig

from .test_api import assert_openai_error
from .test_fine_tuning_api import client, upload  # noqa: F401  (the fixture)


def pair_line(i: int = 0, **changes) -> dict:
    line = {
        "input": {"messages": [{"role": "user", "content": f"Any scones {i}?"}]},
        "preferred_output": [{"role": "assistant", "content": "Oh crumbs, petal, two left!"}],
        "non_preferred_output": [{"role": "assistant", "content": "As an AI, I have no scones."}],
    }
    return line | changes


def jsonl(*lines: dict) -> str:
    return "".join(json.dumps(line) + "\n" for line in lines)


@pytest.mark.parametrize(
    ("line", "where"),
    [
        (pair_line(input={"messages": []}), "line 2: field 'input.messages'"),
        (pair_line(input={"messages": [{"role": "assistant", "content": "hi"}]}), "must hold a user message"),
        (pair_line(preferred_output=[]), "line 2: field 'preferred_output'"),
        (pair_line(non_preferred_output=[{"role": "assistant", "content": 3}]), "non_preferred_output[0].content"),
        (pair_line(input={"messages": [{"role": "robot", "content": "x"}]}), "input.messages[0].role"),
    ],
)
def test_malformed_preference_lines_name_file_line_and_field(tmp_path: Path, line: dict, where: str) -> None:
    path = tmp_path / "pairs.jsonl"
    path.write_text(jsonl(pair_line(), line))
    with pytest.raises(PreferenceFileError, match="^pairs.jsonl: ") as error:
        parse_preference_file(path)
    assert where in str(error.value)


def test_a_good_file_gives_pairs_and_their_supervised_lines(tmp_path: Path) -> None:
    path = tmp_path / "pairs.jsonl"
    path.write_text(jsonl(pair_line(0), pair_line(1)) + "\n")
    pairs = parse_preference_file(path)
    assert len(pairs) == 2 and pairs[1].prompt[0]["content"] == "Any scones 1?"
    assert chat_line(pairs[0])["messages"][-1] == {"role": "assistant", "content": "Oh crumbs, petal, two left!"}


def _dpo_body(file_id: str, **hyper) -> dict:
    return {"model": "SmolLM2-135M-Instruct", "training_file": file_id, "suffix": "wren",
            "method": {"type": "dpo", "dpo": {"hyperparameters": hyper}}}  # fmt: skip


def test_a_dpo_job_is_accepted_and_its_hyperparameters_reach_the_settings(client: TestClient, tmp_path) -> None:  # noqa: F811
    file_id = upload(client, jsonl(pair_line(0), pair_line(1)), name="wren.jsonl").json()["id"]
    response = client.post("/v1/fine_tuning/jobs", json=_dpo_body(file_id, beta=0.2, n_epochs=2))
    assert response.status_code == 200, response.text
    job = FineTuningJob.model_validate(response.json())
    assert job.method.type == "dpo" and job.method.dpo.hyperparameters.beta == 0.2
    record = JobStore(tmp_path / "personas").get(job.id)
    config = TrainConfig.from_overrides(None, record.overrides)
    assert config.preference and config.preference_beta == 0.2 and config.preference_epochs == 2
    persona = tmp_path / "personas" / "wren"
    assert len(read_persona_pairs(persona)) == 2
    [log] = (persona / "logs").iterdir()
    assert json.loads(log.read_text().splitlines()[0])["messages"][-1]["role"] == "assistant"


def test_a_dpo_validation_file_holds_out_its_preferred_replies(client: TestClient, tmp_path) -> None:  # noqa: F811
    from store.registry import PersonaStore
    from training.ingest import persona_examples

    train = upload(client, jsonl(*(pair_line(i) for i in range(24))), name="wren.jsonl").json()["id"]
    held = {"input": {"messages": [{"role": "user", "content": "Open on Sunday?"}]},
            "preferred_output": [{"role": "assistant", "content": "Never on a Sunday, petal."}],
            "non_preferred_output": [{"role": "assistant", "content": "Opening hours vary."}]}  # fmt: skip
    validation = upload(client, jsonl(held), name="held.jsonl").json()["id"]
    body = _dpo_body(train) | {"validation_file": validation}
    response = client.post("/v1/fine_tuning/jobs", json=body)
    assert response.status_code == 200, response.text
    assert FineTuningJob.model_validate(response.json()).validation_file == validation
    examples = persona_examples(PersonaStore(tmp_path / "personas").get("wren"))
    replies = [m["content"] for c in examples.heldout for m in c["messages"] if m["role"] == "assistant"]
    assert replies == ["Never on a Sunday, petal."], "the preferred reply is the held-out set, not the rejected one"
    chat = {"messages": [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello."}]}
    wrong = upload(client, jsonl(chat)).json()["id"]
    response = client.post("/v1/fine_tuning/jobs", json=_dpo_body(train) | {"validation_file": wrong})
    assert_openai_error(response, 400, code="invalid_file_format")
    assert f"validation_file {wrong}: line 1: field 'input.messages'" in response.json()["error"]["message"]


def test_a_supervised_job_echoes_its_method(client: TestClient) -> None:  # noqa: F811
    line = {"messages": [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello, petal."}]}
    file_id = upload(client, jsonl(line, line)).json()["id"]
    body = {"model": "SmolLM2-135M-Instruct", "training_file": file_id, "suffix": "nova",
            "method": {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 2}}}}  # fmt: skip
    job = FineTuningJob.model_validate(client.post("/v1/fine_tuning/jobs", json=body).json())
    assert job.method.type == "supervised" and job.method.supervised.hyperparameters.n_epochs == 2


def test_a_bad_preference_file_or_beta_is_a_400_naming_it(client: TestClient) -> None:  # noqa: F811
    response = upload(client, jsonl(pair_line(), pair_line(preferred_output="no")), name="bad.jsonl")
    assert_openai_error(response, 400, code="invalid_file_format")
    assert "bad.jsonl: line 2: field 'preferred_output'" in response.json()["error"]["message"]
    line = {"messages": [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello."}]}
    chat = upload(client, jsonl(line)).json()["id"]
    response = client.post("/v1/fine_tuning/jobs", json=_dpo_body(chat))  # a chat file is no preference file
    assert_openai_error(response, 400, code="invalid_file_format")
    assert f"training_file {chat}: line 1: field 'input.messages'" in response.json()["error"]["message"]
    good = upload(client, jsonl(pair_line()), name="good.jsonl").json()["id"]
    response = client.post("/v1/fine_tuning/jobs", json=_dpo_body(good, beta=0))
    assert_openai_error(response, 400)
    assert "method.dpo.hyperparameters.beta" in response.json()["error"]["message"]
