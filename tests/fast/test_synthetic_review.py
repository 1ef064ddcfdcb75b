"""Reviewing synthetic examples: over HTTP and in the page's review tab, the same files change."""

from __future__ import annotations

from pathlib import Path

import gradio as gr
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import ServeSettings
from service.ui.review import ReviewPanel
from store import synthetic
from store.synthetic import Source, SyntheticExample

from .fake_engine import FakeEngine
from .test_api import assert_openai_error

SOURCE = Source(url="http://127.0.0.1:8000/v1", model="wren")


def write_batches(persona: Path) -> None:
    for batch in (1, 2):
        synthetic.write_batch(
            persona,
            batch,
            [
                SyntheticExample(
                    id=f"b{batch}-{i}", batch=batch, prompt=f"Question {i}?", reply=f"Oh crumbs, {i}!", source=SOURCE
                )
                for i in range(3)
            ],
        )


@pytest.fixture()
def client(tmp_path: Path, cache_dir: Path, base_model):
    root = tmp_path / "personas"
    wren = root / "wren"
    (wren / "logs").mkdir(parents=True)
    (wren / "logs" / "chat.txt").write_text("Tom: hi\nWren: oh crumbs, hello petal\n")
    (root / "beta" / "logs").mkdir(parents=True)
    write_batches(wren)
    settings = ServeSettings(
        personas_dir=root, cache_dir=cache_dir, base_model=str(base_model.path), ui=False, train=False, auto_train=False
    )
    with TestClient(create_app(settings, engine_factory=lambda s, b: FakeEngine())) as c:
        c.persona = wren
        yield c


def states(persona: Path) -> dict[str, str]:
    return {e.id: e.status for e in synthetic.all_examples(persona)}


def test_the_api_lists_a_batch_and_reviews_one_example_or_the_rest_of_a_batch(client: TestClient) -> None:
    listed = client.get("/v1/personas/wren/synthetic", params={"status": "pending", "batch": 2}).json()
    assert [e["id"] for e in listed["data"]] == ["b2-0", "b2-1", "b2-2"]
    assert [(b["batch"], b["pending"]) for b in listed["batches"]] == [(1, 3), (2, 3)]

    edited = client.patch("/v1/personas/wren/synthetic/b1-0", json={"status": "accepted", "reply": "Hello, petal!"})
    assert edited.status_code == 200 and edited.json()["edited"] is True
    rejected = client.patch("/v1/personas/wren/synthetic/b1-1", json={"status": "rejected", "reason": "too modern"})
    assert rejected.json()["reason"] == "too modern"
    settled = client.post("/v1/personas/wren/synthetic/batches/1", json={"status": "accepted"}).json()
    assert [(b["batch"], b["pending"], b["accepted"], b["rejected"]) for b in settled["batches"]] == [
        (1, 0, 2, 1),
        (2, 3, 0, 0),
    ]
    kept = {e.id: e for e in synthetic.all_examples(client.persona)}
    assert kept["b1-0"].reply == "Hello, petal!" and kept["b1-1"].status == "rejected"
    assert states(client.persona)["b1-2"] == "accepted"


def test_review_mistakes_are_clear_errors_and_change_nothing(client: TestClient) -> None:
    before = states(client.persona)
    assert_openai_error(
        client.patch("/v1/personas/wren/synthetic/nope", json={"status": "accepted"}), 404, "example_id"
    )
    assert_openai_error(client.patch("/v1/personas/wren/synthetic/b1-0", json={"status": "maybe"}), 400, "status")
    assert_openai_error(
        client.patch("/v1/personas/wren/synthetic/b1-0", json={"status": "accepted", "reply": "  "}), 400, "reply"
    )
    assert_openai_error(client.post("/v1/personas/wren/synthetic/batches/9", json={"status": "accepted"}), 404, "batch")
    assert_openai_error(client.get("/v1/personas/nobody/synthetic"), 404, "name")
    assert client.get("/v1/personas/beta/synthetic").json() == {"object": "list", "data": [], "batches": []}
    assert states(client.persona) == before


def test_the_review_tab_walks_the_pending_examples_and_accepts_edits(client: TestClient) -> None:
    panel = ReviewPanel(client.app)
    with gr.Blocks():
        panel.build()
    opened = panel.open(None)
    assert opened[panel.persona].constructor_args["value"] == "wren"  # the persona with examples waiting comes first
    assert opened[panel.prompt] == "Question 0?" and opened[panel.current] == ("b1-0", 1)

    after_edit = panel.accept("wren", opened[panel.current], "Hello, petal!", "", [])
    assert after_edit[panel.current] == ("b1-1", 1) and "2 of 3 waiting" in after_edit[panel.header]
    after_reject = panel.reject("wren", after_edit[panel.current], "", "", [])
    skipped = panel.skip("wren", after_reject[panel.current], [])
    assert skipped[panel.current] == ("b2-0", 2) and skipped[panel.skipped] == ["b1-2"]
    empty = panel.accept("wren", skipped[panel.current], "   ", "", skipped[panel.skipped])
    assert "empty" in empty[panel.message].constructor_args["value"] and states(client.persona)["b2-0"] == "pending"
    settled = panel.accept_batch("wren", skipped[panel.current], skipped[panel.skipped])
    assert "Accepted 3 examples of batch 2" in settled[panel.message].constructor_args["value"]

    kept = {e.id: e for e in synthetic.all_examples(client.persona)}
    assert kept["b1-0"].reply == "Hello, petal!" and kept["b1-0"].status == "accepted"
    assert kept["b1-1"].status == "rejected" and kept["b1-1"].reason == "by review"
    assert kept["b1-2"].status == "pending"  # skipped, still waiting
    assert panel.open("wren")[panel.current] == ("b1-2", 1)
