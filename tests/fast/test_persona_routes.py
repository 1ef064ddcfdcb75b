"""Training, rollback, promotion, pinning and removal over HTTP, and the status they show."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import ServeSettings
from store.fidelity_report import GateDecision, write_gate
from store.jobs import JobStore

from .fake_engine import FakeEngine
from .fake_store import write_report, write_version
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


INVALID_CARDS = {
    "a bad sampling value": ("sampling:\n  temperature: hot\n", "sampling.temperature"),
    "an unknown sampling field": ("sampling:\n  temprature: 0.5\n", "sampling.temprature"),
    "a training typo": ("training:\n  learnig_rate: 1e-3\n", "training.learnig_rate"),
}


@pytest.mark.parametrize("card, field", INVALID_CARDS.values(), ids=INVALID_CARDS.keys())
def test_a_persona_with_an_invalid_card_is_shown_with_the_error(client: TestClient, card: str, field: str) -> None:
    (client.root / "beta" / "persona.yaml").write_text(card)
    shown = client.get("/v1/personas/beta")
    assert shown.status_code == 200, shown.text
    status = shown.json()
    assert status["status"] == "invalid card"
    assert "beta/persona.yaml" in status["error"] and field in status["error"]
    listed = {p["name"]: p for p in client.get("/v1/personas").json()["data"]}
    assert listed["beta"]["status"] == "invalid card" and field in listed["beta"]["error"]
    assert listed["wren"]["status"] == "trained", "one bad card hides no other persona"
    refused = assert_openai_error(client.post("/v1/personas/beta/train"), 409, "name", "invalid_card")
    assert field in refused["message"]
    body = {"model": "beta", "messages": [{"role": "user", "content": "hi"}]}
    chat = assert_openai_error(client.post("/v1/chat/completions", json=body), 409, "model", "invalid_card")
    assert "beta/persona.yaml" in chat["message"] and field in chat["message"]
    assert_openai_error(client.get("/v1/personas/nobody"), 404, "name", "persona_not_found")


def test_each_version_says_what_the_gate_decided(client: TestClient) -> None:
    adapters = client.root / "wren" / "adapters"
    write_gate(adapters / "v1", GateDecision(go_live=False, status="held back", error="CUDA out of memory"))
    unjudged = GateDecision(go_live=True, status="unjudged", missing=["style similarity: no server"])
    write_gate(adapters / "v2", unjudged)
    status = client.get("/v1/personas/wren").json()
    assert status["live_version"] == "v2" and status["live_gate"] == "unjudged"
    versions = {v["version"]: v for v in status["versions"]}
    assert versions["v2"]["gate"]["status"] == "unjudged" and versions["v2"]["gate"]["missing"]
    assert versions["v1"]["held_back"] is True and versions["v1"]["gate"]["error"] == "CUDA out of memory"
    client.post("/v1/personas/wren/promote", json={"version": "v1"})
    promoted = client.get("/v1/personas/wren").json()
    assert promoted["live_gate"] == "held back", "a version made live by hand keeps the gate's word"
    assert {v["version"]: v["held_back"] for v in promoted["versions"]} == {"v1": False, "v2": False}


def test_a_version_without_gate_json_shows_the_report_s_decision(client: TestClient) -> None:
    systems = {name: {"perplexity": 50.0} for name in ("base", "card", "adapter")}
    gate = {"go_live": False, "status": "held back", "reasons": ["perplexity worse than v2"]}
    write_report(client.root / "wren" / "adapters" / "v1", systems, gate)
    versions = {v["version"]: v for v in client.get("/v1/personas/wren").json()["versions"]}
    assert versions["v1"]["held_back"] is True and versions["v1"]["gate"]["reasons"] == ["perplexity worse than v2"]
    assert versions["v1"]["fidelity"]["perplexity"]["adapter"] == 50.0
    assert versions["v2"]["gate"] is None and versions["v2"]["fidelity"] is None
