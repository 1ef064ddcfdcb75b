"""Training, rollback, promotion, pinning and removal over HTTP, and the status they show."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import ServeSettings
from store.jobs import JobStore

from .fake_engine import FakeEngine
from .fake_store import write_version
from .test_api import assert_openai_error


@pytest.fixture()
def client(tmp_path: Path, cache_dir: Path, base_model):
    root = tmp_path / "personas"
    wren = root / "wren"
    (wren / "logs").mkdir(parents=True)
    (wren / "logs" / "chat.txt").write_text("Tom: hi\nWren: oh crumbs, hello petal\n")
    for number in (1, 2):
        write_version(wren, number, base_model.hash, weights=f"w{number}".encode())
    (root / "beta" / "logs").mkdir(parents=True)
    settings = ServeSettings(
        personas_dir=root, cache_dir=cache_dir, base_model=str(base_model.path), ui=False, train=False, auto_train=False
    )
    with TestClient(create_app(settings, engine_factory=lambda s, b: FakeEngine())) as c:
        c.root = root
        yield c


def test_train_queues_one_job_and_the_status_shows_it(client: TestClient) -> None:
    first = client.post("/v1/personas/wren/train")
    assert first.status_code == 202 and first.json()["status"] == "queued"
    status = client.get("/v1/personas/wren").json()
    assert status["status"] == "queued" and status["queue_position"] == 1 and status["job"] == first.json()["id"]
    assert status["live_version"] == "v2"
    beta = client.post("/v1/personas/beta/train").json()
    assert client.get("/v1/personas/beta").json()["queue_position"] == 2
    jobs = JobStore(client.root)
    jobs.update(first.json()["id"], status="failed", error={"code": "training_failed", "message": "no speaker"})
    failed = client.get("/v1/personas/wren").json()
    assert failed["status"] == "failed" and failed["last_failure"] == "no speaker"
    assert client.get("/v1/personas/beta").json()["queue_position"] == 1 and beta["persona"] == "beta"
    assert_openai_error(client.post("/v1/personas/nobody/train"), 404, param="name")


def test_rollback_promote_pin_and_remove(client: TestClient) -> None:
    rolled = client.post("/v1/personas/wren/rollback").json()
    assert rolled["live_version"] == "v1"
    assert_openai_error(client.post("/v1/personas/wren/rollback"), 409)
    assert_openai_error(client.post("/v1/personas/wren/rollback", json={"version": "v7"}), 404, param="version")
    assert_openai_error(client.post("/v1/personas/wren/rollback", json={"version": "seven"}), 400, param="version")
    assert client.post("/v1/personas/wren/promote", json={"version": "v2"}).json()["live_version"] == "v2"
    assert client.put("/v1/personas/wren/pin", json={"pinned": True}).json()["pinned"] is True
    assert_openai_error(client.put("/v1/personas/beta/pin", json={"pinned": True}), 409)
    reply = client.post("/v1/chat/completions", json={"model": "wren", "messages": [{"role": "user", "content": "hi"}]})
    assert reply.json()["system_fingerprint"] == "v2"
    assert client.delete("/v1/personas/wren").json() == {"id": "wren", "object": "persona", "deleted": True}
    gone = client.post("/v1/chat/completions", json={"model": "wren", "messages": [{"role": "user", "content": "hi"}]})
    assert_openai_error(gone, 404, param="model")
    assert "wren" not in [p["name"] for p in client.get("/v1/personas").json()["data"]]
