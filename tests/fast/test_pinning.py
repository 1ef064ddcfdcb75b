"""Pinning: ``serving: {pinned: true}`` on a card reaches the engine, a bad ``serving`` section is
refused naming the field, and ``/metrics`` counts adapter loads and evictions the engine reports."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.engine import AdapterRef, GenerationParams
from service.settings import ServeSettings
from store.card import PersonaCard

from .fake_engine import SERVE_ONLY, FakeEngine
from .fake_store import write_version


class PinningEngine(FakeEngine):
    """The fake engine holding the adapters it ran or was asked to pin, as vLLM's LoRA cache does."""

    def __init__(self, room: int = 8, fails: bool = False) -> None:
        super().__init__()
        self.room = room
        """How many adapters the engine will pin (vLLM's: its adapter memory less a batch of others)."""
        self.fails = fails
        self.asked: list[str] = []
        self.pins: list[str] = []
        self.loaded: set[int] = set()

    async def pin(self, adapter: AdapterRef) -> bool:
        self.asked.append(adapter.name)
        if self.fails:
            raise RuntimeError("the engine's workers did not answer")
        if len(self.pins) >= self.room:
            return False
        self.pins.append(adapter.name)
        self.loaded.add(adapter.lora_id)
        return True

    async def loaded_adapters(self) -> set[int]:
        return set(self.loaded)

    async def generate(
        self, prompt_ids: list[int], params: GenerationParams, request_id: str, adapter: AdapterRef | None
    ):
        if adapter is not None:
            self.loaded.add(adapter.lora_id)
        async for chunk in super().generate(prompt_ids, params, request_id, adapter):
            yield chunk


@pytest.fixture()
def personas(tmp_path: Path, base_model) -> Path:
    root = tmp_path / "personas"
    for name, card in (("star", "serving:\n  pinned: true\n"), ("quiet", "display_name: Quiet\n")):
        (root / name / "logs").mkdir(parents=True)
        (root / name / "persona.yaml").write_text(card)
        write_version(root / name, 1, base_model.hash)
    return root


@pytest.fixture()
def engine() -> PinningEngine:
    return PinningEngine()


@pytest.fixture()
def client(personas: Path, cache_dir: Path, engine: PinningEngine, base_model):
    settings = ServeSettings(
        personas_dir=personas, cache_dir=cache_dir, base_model=str(base_model.path), ui=False, **SERVE_ONLY
    )
    with TestClient(create_app(settings, engine_factory=lambda s, b: engine)) as c:
        yield c


def chat(client: TestClient, model: str):
    return client.post("/v1/chat/completions", json={"model": model, "messages": [{"role": "user", "content": "Hi"}]})


def metric(text: str, name: str) -> float:
    line = next(line for line in text.splitlines() if line.startswith(name + " "))
    return float(line.split()[1])


def test_the_card_takes_a_serving_section() -> None:
    assert PersonaCard.model_validate({"serving": {"pinned": True}}).serving.pinned
    assert not PersonaCard().serving.pinned


def test_a_pinned_persona_is_pinned_at_start_and_again_on_a_new_version(
    client: TestClient, engine: PinningEngine, personas: Path, base_model
) -> None:
    assert [name.split("#")[0] for name in engine.pins] == ["star@v1"]
    assert chat(client, "star").status_code == 200
    assert chat(client, "quiet").status_code == 200
    assert len(engine.pins) == 1

    write_version(personas / "star", 2, base_model.hash)
    reply = chat(client, "star")
    assert reply.status_code == 200 and reply.json()["choices"][0]["message"]["content"].startswith("[star@v2#")
    assert [name.split("#")[0] for name in engine.pins] == ["star@v1", "star@v2"]

    write_version(personas / "star", 3, base_model.hash)  # text completions pin a new version too
    reply = client.post("/v1/completions", json={"model": "star", "prompt": "Hi", "max_tokens": 2})
    assert reply.status_code == 200 and [name.split("#")[0] for name in engine.pins][-1] == "star@v3"


def test_metrics_count_loads_and_evictions(client: TestClient, engine: PinningEngine) -> None:
    assert chat(client, "quiet").status_code == 200
    text = client.get("/metrics").text
    assert metric(text, "persona_adapter_loads_total") == 2
    assert metric(text, "persona_adapter_evictions_total") == 0
    assert metric(text, "persona_adapters_pinned") == 1
    engine.loaded = {min(engine.loaded)}
    text = client.get("/metrics").text
    assert metric(text, "persona_adapter_evictions_total") == 1
    assert metric(text, "persona_adapters_loaded") == 1


@pytest.mark.parametrize(
    ("serving", "field", "says"),
    [("  pinned: maybe\n", "serving.pinned", "boolean"), ("  pin: true\n", "serving.pin", "unknown setting")],
)
def test_a_bad_serving_section_is_refused_naming_the_field(
    client: TestClient, personas: Path, serving: str, field: str, says: str
) -> None:
    (personas / "quiet" / "persona.yaml").write_text("serving:\n" + serving)
    reply = chat(client, "quiet")
    assert reply.status_code == 409
    message = reply.json()["error"]["message"]
    assert "persona.yaml" in message and f"field '{field}'" in message and says in message
    listed = {p["name"]: p for p in client.get("/v1/personas").json()["data"]}
    assert listed["quiet"]["status"] == "invalid card" and field in listed["quiet"]["error"]


@pytest.mark.parametrize(
    ("engine_says", "logged"), [("no room", "not pinning star@v1"), ("fails", "pinning adapter star@v1")]
)
def test_a_pin_the_engine_refuses_is_served_unpinned_and_not_asked_again(
    personas: Path, cache_dir: Path, base_model, caplog: pytest.LogCaptureFixture, engine_says: str, logged: str
) -> None:
    engine = PinningEngine(room=0, fails=engine_says == "fails")
    settings = ServeSettings(
        personas_dir=personas, cache_dir=cache_dir, base_model=str(base_model.path), ui=False, **SERVE_ONLY
    )
    with TestClient(create_app(settings, engine_factory=lambda s, b: engine)) as client:
        assert chat(client, "star").status_code == 200
        assert chat(client, "star").status_code == 200
        assert metric(client.get("/metrics").text, "persona_adapters_pinned") == 0
    assert engine.pins == [] and len(engine.asked) == 1
    assert logged in caplog.text
