"""OpenAI's files and fine-tuning jobs API over a fake engine: objects in the ``openai`` package's own
types, paging, one job list for every source, and every error in OpenAI's shape. No job runs here
(the worker is off); the real tier trains one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from openai.types import FileObject
from openai.types.fine_tuning import FineTuningJob, FineTuningJobEvent

from service.app import create_app
from service.settings import ServeSettings

from .fake_engine import FakeEngine
from .test_api import assert_openai_error

LINE = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Ahoy, traveller!"}]}


@pytest.fixture()
def client(tmp_path: Path, cache_dir: Path, base_model):
    settings = ServeSettings(
        personas_dir=tmp_path / "personas",
        cache_dir=cache_dir,
        base_model=str(base_model.path),
        ui=False,
        train=False,
        auto_train=False,
    )
    with TestClient(create_app(settings, engine_factory=lambda s, b: FakeEngine())) as c:
        yield c


def upload(client: TestClient, text: str, name: str = "nova.jsonl", purpose: str = "fine-tune"):
    return client.post(
        "/v1/files", files={"file": (name, text.encode(), "application/jsonl")}, data={"purpose": purpose}
    )


def good_file(client: TestClient) -> str:
    response = upload(client, "\n".join(json.dumps(LINE) for _ in range(3)) + "\n")
    assert response.status_code == 200, response.text
    return FileObject.model_validate(response.json()).id


def test_files_upload_list_retrieve_content_delete(client: TestClient) -> None:
    file_id = good_file(client)
    listed = client.get("/v1/files").json()
    assert [f["id"] for f in listed["data"]] == [file_id]
    got = FileObject.model_validate(client.get(f"/v1/files/{file_id}").json())
    assert got.filename == "nova.jsonl" and got.purpose == "fine-tune" and got.bytes > 0
    assert client.get(f"/v1/files/{file_id}/content").content.startswith(b'{"messages"')
    assert client.delete(f"/v1/files/{file_id}").json() == {"id": file_id, "object": "file", "deleted": True}
    assert_openai_error(client.get(f"/v1/files/{file_id}"), 404, code="file_not_found")


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ('{"messages": [{"role": "user", "content": "Hi"}]}\n{"messages": "nope"}\n', "line 2: field 'messages'"),
        ('{"messages": [{"role": "robot", "content": "Hi"}]}\n', "line 1: field 'messages[0].role'"),
        ('{"messages": [{"role": "user", "content": 3}]}\n', "line 1: field 'messages[0].content'"),
        ('{"messages": [{"role": "user", "content": "x"}]}\n{oops\n', "line 2: not valid JSON"),
    ],
)
def test_a_malformed_training_file_is_refused_naming_line_and_field(client: TestClient, text: str, where: str) -> None:
    error = assert_openai_error(upload(client, text), 400, param="file", code="invalid_file_format")
    assert where in error["message"]
    assert client.get("/v1/files").json()["data"] == []


def test_bad_uploads_and_paths(client: TestClient) -> None:
    assert_openai_error(upload(client, "x", purpose="batch"), 400, param="purpose")
    assert_openai_error(upload(client, ""), 400, param="file", code="empty_file")
    assert_openai_error(client.get("/v1/files/..%2F..%2Fetc%2Fpasswd"), 404)
    assert_openai_error(client.get("/v1/files/file-nope/content"), 404, code="file_not_found")


def test_a_job_creates_the_persona_and_lists_with_paging(client: TestClient, tmp_path: Path) -> None:
    file_id = good_file(client)
    created = client.post(
        "/v1/fine_tuning/jobs",
        json={
            "model": "SmolLM2-135M-Instruct",
            "training_file": file_id,
            "suffix": "nova",
            "seed": 7,
            "hyperparameters": {"n_epochs": 2},
        },
    )
    assert created.status_code == 200, created.text
    job = FineTuningJob.model_validate(created.json())
    assert job.status == "queued" and job.seed == 7 and job.hyperparameters.n_epochs == 2
    assert job.fine_tuned_model is None and job.training_file == file_id
    logs = list((tmp_path / "personas" / "nova" / "logs").iterdir())
    assert len(logs) == 1 and logs[0].read_text().startswith('{"messages"')
    others = [
        FineTuningJob.model_validate(
            client.post("/v1/fine_tuning/jobs", json={"model": "nova", "training_file": file_id}).json()
        )
        for _ in range(2)
    ]
    page = client.get("/v1/fine_tuning/jobs", params={"limit": 2}).json()
    assert [j["id"] for j in page["data"]] == [others[1].id, others[0].id] and page["has_more"]
    rest = client.get("/v1/fine_tuning/jobs", params={"after": others[0].id}).json()
    assert [j["id"] for j in rest["data"]] == [job.id] and not rest["has_more"]
    events = client.get(f"/v1/fine_tuning/jobs/{job.id}/events").json()["data"]
    assert all(FineTuningJobEvent.model_validate(e) for e in events)
    assert any("added to personas/nova/logs" in e["message"] for e in events)
    assert client.get(f"/v1/fine_tuning/jobs/{job.id}/checkpoints").json()["data"] == []


def test_cancelling_a_queued_job(client: TestClient) -> None:
    file_id = good_file(client)
    job = client.post(
        "/v1/fine_tuning/jobs", json={"model": "SmolLM2-135M-Instruct", "training_file": file_id, "suffix": "nova"}
    ).json()
    cancelled = FineTuningJob.model_validate(client.post(f"/v1/fine_tuning/jobs/{job['id']}/cancel").json())
    assert cancelled.status == "cancelled" and cancelled.finished_at
    assert_openai_error(client.post(f"/v1/fine_tuning/jobs/{job['id']}/cancel"), 400, code="job_not_cancellable")


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "SmolLM2-135M-Instruct", "training_file": "file-missing", "suffix": "nova"}, "training_file"),
        ({"model": "gpt-4o-mini", "training_file": "FILE", "suffix": "nova"}, "model"),
        ({"model": "SmolLM2-135M-Instruct", "training_file": "FILE", "suffix": "Not Allowed!"}, "suffix"),
        ({"model": "SmolLM2-135M-Instruct", "training_file": "FILE"}, "suffix"),
        (
            {"model": "SmolLM2-135M-Instruct", "training_file": "FILE", "suffix": "n", "method": {"type": "dpo"}},
            "method.type",
        ),
        (
            {
                "model": "SmolLM2-135M-Instruct",
                "training_file": "FILE",
                "suffix": "n",
                "hyperparameters": {"n_epochs": 0},
            },
            "hyperparameters.n_epochs",
        ),
        (
            {
                "model": "SmolLM2-135M-Instruct",
                "training_file": "FILE",
                "suffix": "n",
                "hyperparameters": {"learning_rate_multiplier": -1},
            },
            "hyperparameters.learning_rate_multiplier",
        ),
    ],
)
def test_bad_job_requests_name_the_parameter(client: TestClient, body: dict, param: str) -> None:
    body = {k: (good_file(client) if v == "FILE" else v) for k, v in body.items()}
    status = 404 if param == "training_file" else 400
    assert_openai_error(client.post("/v1/fine_tuning/jobs", json=body), status, param=param)
    assert_openai_error(client.get("/v1/fine_tuning/jobs/ftjob-nope"), 404)


def test_keys_guard_the_fine_tuning_endpoints(tmp_path: Path, cache_dir: Path, base_model) -> None:
    settings = ServeSettings(
        personas_dir=tmp_path / "p",
        cache_dir=cache_dir,
        base_model=str(base_model.path),
        ui=False,
        train=False,
        auto_train=False,
        api_keys=["k1"],
    )
    with TestClient(create_app(settings, engine_factory=lambda s, b: FakeEngine())) as client:
        assert_openai_error(client.get("/v1/fine_tuning/jobs"), 401)
        assert_openai_error(client.get("/v1/files"), 401)
        assert client.get("/v1/files", headers={"Authorization": "Bearer k1"}).status_code == 200
