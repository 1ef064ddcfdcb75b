"""``persona augment`` over a stand-in OpenAI endpoint: batches, review states, rules applied, and
the review that only accepted examples leave for training."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from store.card import PersonaCard
from store.registry import Persona
from store.synthetic import all_examples, batches, review
from training.augment import augment

ROWS = [
    {
        "messages": [
            {"role": "system", "content": "You are Wren."},
            {"role": "user", "content": f"Any bread {i}?"},
            {"role": "assistant", "content": f"Oh crumbs, loaf number {i}, petal."},
        ]
    }
    for i in range(8)
]


def endpoint(replies: list[str]):
    """An ``http_client`` answering writer requests with new questions and reply requests in turn."""
    counter = {"prompt": 0, "reply": 0}

    def handle(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        writer = body["messages"][0]["content"].startswith("You write short chat messages")
        if writer:
            counter["prompt"] += 1
            text = f"- What's in the oven today, number {counter['prompt']}?"
        else:
            text = replies[counter["reply"] % len(replies)].format(n=counter["reply"])
            counter["reply"] += 1
        return httpx.Response(
            200,
            json={
                "id": "x",
                "object": "chat.completion",
                "created": 0,
                "model": body["model"],
                "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}],
                "usage": {"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10},
            },
        )

    return lambda: {"http_client": httpx.AsyncClient(transport=httpx.MockTransport(handle))}


def test_batches_go_to_synthetic_pending_with_rules_applied(tmp_path: Path) -> None:
    persona = Persona(name="wren", path=tmp_path / "wren", card=PersonaCard(speakers=["Wren"]))
    (persona.path / "logs").mkdir(parents=True)
    replies = ["Cinnamon buns {n}, still warm, love!", "As an AI I cannot bake.", "Oh crumbs, loaf number 3, petal."]
    report = augment(
        persona,
        ROWS,
        "http://generator.test/v1",
        n=45,
        base_id="SmolLM2-135M-Instruct",
        client_options=endpoint(replies),
        say=lambda _: None,
    )
    assert report.generated == 45 and batches(persona.path) == [1, 2, 3]
    examples = all_examples(persona.path)
    assert [sum(e.batch == b for e in examples) for b in (1, 2, 3)] == [20, 20, 5]
    assert list((persona.path / "logs").iterdir()) == []
    by_reason = {e.reason.split(":")[0] for e in examples if e.status == "rejected"}
    assert by_reason == {"out of character", "near-copy of a real line (ROUGE-L > 0.7)"}
    pending = [e for e in examples if e.status == "pending"]
    assert len(pending) == report.pending == 15 and pending[0].prompt.startswith("What's in the oven")
    assert pending[0].source.model == "SmolLM2-135M-Instruct"

    edited = review(persona.path, pending[0].id, "accepted", reply="Fresh buns, petal!")
    assert edited.edited and edited.status == "accepted"
    review(persona.path, pending[1].id, "rejected", reason="too sweet")
    after = {e.id: e for e in all_examples(persona.path)}
    assert after[pending[1].id].reason == "too sweet" and after[pending[0].id].reply == "Fresh buns, petal!"
