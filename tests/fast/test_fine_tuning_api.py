"""OpenAI's files and fine-tuning jobs API over a fake engine: objects in the ``openai`` package's own
types, paging, one job list for every source, every error in OpenAI's shape, validation files, cancel.
No worker runs here: a job's training process is run in this process only where it fails before
loading a model; the real tier trains and cancels through a worker."""

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
            {
                "model": "SmolLM2-135M-Instruct",
                "training_file": "FILE",
                "suffix": "n",
                "method": {"type": "reinforcement"},
            },
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
        (
            {"model": "SmolLM2-135M-Instruct", "training_file": "FILE", "hyperparameters": {"n_epochs": True}},
            "hyperparameters.n_epochs",  # not one epoch
        ),
        ({"model": "SmolLM2-135M-Instruct", "training_file": "FILE", "seed": False}, "seed"),
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


def _lines(n: int, reply: str = "Ahoy, traveller!") -> str:
    return "".join(
        json.dumps(
            {
                "messages": [
                    {"role": "user", "content": f"Question {i}?"},
                    {"role": "assistant", "content": f"{reply} {i}"},
                ]
            }
        )
        + "\n"
        for i in range(n)
    )


def _create(client: TestClient, **body) -> FineTuningJob:
    response = client.post("/v1/fine_tuning/jobs", json={"model": "SmolLM2-135M-Instruct", "suffix": "nova", **body})
    assert response.status_code == 200, response.text
    return FineTuningJob.model_validate(response.json())


def _upload_id(client: TestClient, text: str, name: str) -> str:
    response = upload(client, text, name=name)
    assert response.status_code == 200, response.text
    return response.json()["id"]


def test_a_validation_file_is_the_held_out_set_and_every_training_line_is_trained_on(
    client: TestClient, tmp_path: Path
) -> None:
    from store.registry import PersonaStore
    from training.ingest import build_examples, load_logs

    training_id = _upload_id(client, _lines(24), "nova.jsonl")
    validation_id = _upload_id(client, _lines(3, reply="Held out, matey"), "nova-val.jsonl")
    job = _create(client, training_file=training_id, validation_file=validation_id)
    assert job.validation_file == validation_id
    persona_dir = tmp_path / "personas" / "nova"
    assert [p.name for p in (persona_dir / "validation").iterdir()] == [f"{validation_id}-nova-val.jsonl"]
    assert [p.name for p in (persona_dir / "logs").iterdir()] == [f"{training_id}-nova.jsonl"]
    events = client.get(f"/v1/fine_tuning/jobs/{job.id}/events").json()["data"]
    assert any("personas/nova/validation" in e["message"] for e in events)

    persona = PersonaStore(tmp_path / "personas").get("nova")
    examples = build_examples(load_logs(persona.logs_dir), persona.name, persona.card)
    held = [row["messages"][-1]["content"] for row in examples.heldout]
    assert sorted(held) == [f"Held out, matey {i}" for i in range(3)]
    assert len(examples.train) == 24
    assert not any("Held out" in row["messages"][-1]["content"] for row in examples.train)


def test_an_unusable_validation_file_is_refused_naming_it(client: TestClient, tmp_path: Path) -> None:
    training_id = _upload_id(client, _lines(24), "nova.jsonl")
    body = {"model": "SmolLM2-135M-Instruct", "suffix": "nova", "training_file": training_id}
    missing = client.post("/v1/fine_tuning/jobs", json={**body, "validation_file": "file-missing"})
    assert_openai_error(missing, 404, param="validation_file", code="file_not_found")
    # A transcript in which the character never speaks cannot be checked before the job runs: the job
    # fails with the validation folder named and the speakers it found.
    transcript = _upload_id(client, "Alice: hello there\nBob: hi Alice\nAlice: how are you?\n", "chat.txt")
    job = _create(client, training_file=training_id, validation_file=transcript)
    ended = _run_job(tmp_path, job.id)
    failed = FineTuningJob.model_validate(client.get(f"/v1/fine_tuning/jobs/{job.id}").json())
    assert ended.status == failed.status == "failed" and failed.finished_at
    assert failed.error.code == "invalid_training_data"
    assert "nova/validation" in failed.error.message and "Alice (2)" in failed.error.message
    assert not (tmp_path / "personas" / "nova" / "adapters" / "v1").exists()


def _run_job(tmp_path: Path, job_id: str):
    """The training process's work for one job, in this process (it fails before loading a model)."""
    from training.job import JobSettings, run

    return run(JobSettings(personas_dir=tmp_path / "personas", cache_dir=tmp_path / "cache"), job_id)


def test_a_training_failure_gives_the_job_an_error_with_code_and_message(client: TestClient, tmp_path: Path) -> None:
    job = _create(client, training_file=_upload_id(client, _lines(3), "tiny.jsonl"))
    _run_job(tmp_path, job.id)
    failed = FineTuningJob.model_validate(client.get(f"/v1/fine_tuning/jobs/{job.id}").json())
    assert failed.status == "failed" and failed.fine_tuned_model is None
    assert failed.error.code == "invalid_training_data"
    assert "training examples" in failed.error.message and "at least 20 are needed" in failed.error.message
    events = client.get(f"/v1/fine_tuning/jobs/{job.id}/events").json()["data"]
    assert events[0]["level"] == "error" and events[0]["message"] == failed.error.message


def test_a_running_job_shows_its_estimated_finish_and_a_succeeded_one_its_trained_tokens(
    client: TestClient,
) -> None:
    import time

    from store.progress import TrainingProgress

    job = _create(client, training_file=good_file(client))
    jobs = client.app.state.training.jobs
    assert jobs.claim(job.id) is not None  # what the worker does when it takes the job
    jobs.update(job.id, progress=TrainingProgress(state="running", step=3, total_steps=10, eta_s=70.0))
    running = FineTuningJob.model_validate(client.get(f"/v1/fine_tuning/jobs/{job.id}").json())
    assert running.status == "running" and running.trained_tokens is None
    assert abs(running.estimated_finish - (time.time() + 70)) < 5
    jobs.update(
        job.id, status="succeeded", version=1, outcome="published", finished_at=time.time(), trained_tokens=4321
    )
    done = FineTuningJob.model_validate(client.get(f"/v1/fine_tuning/jobs/{job.id}").json())
    assert done.estimated_finish is None and done.trained_tokens == 4321
    assert done.fine_tuned_model == f"ft:SmolLM2-135M-Instruct:persona:nova:{job.id[6:14]}"


def test_a_cancelled_job_is_never_taken_and_its_logs_do_not_come_back_at_restart(client: TestClient) -> None:
    training = client.app.state.training
    queued = _create(client, training_file=good_file(client))
    asked_for = training.request("nova", "cli")
    watcher_job = training.jobs.create("nova", "watcher", automatic=True)
    cancelled = FineTuningJob.model_validate(client.post(f"/v1/fine_tuning/jobs/{queued.id}/cancel").json())
    assert cancelled.status == "cancelled"
    assert training.jobs.claim(queued.id) is None and training.jobs.get(queued.id).started_at is None
    # The waiting automatic job would train the same logs; a job asked for by a person stays.
    assert training.jobs.get(watcher_job.id).status == "cancelled"
    assert training.jobs.get(asked_for.id).status == "queued"
    assert training.queue_changed_personas() == []


def test_cancelling_a_running_job_answers_cancelled_at_once(client: TestClient) -> None:
    job = _create(client, training_file=good_file(client))
    jobs = client.app.state.training.jobs
    jobs.claim(job.id)
    cancelled = FineTuningJob.model_validate(client.post(f"/v1/fine_tuning/jobs/{job.id}/cancel").json())
    assert cancelled.status == "cancelled" and cancelled.finished_at
    assert jobs.get(job.id).cancel_requested  # what the worker watches to stop the training process
    messages = [e["message"] for e in client.get(f"/v1/fine_tuning/jobs/{job.id}/events").json()["data"]]
    assert "Job cancelled; stopping its training process" in messages
