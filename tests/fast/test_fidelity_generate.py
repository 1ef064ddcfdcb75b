"""Replies through an OpenAI-compatible endpoint: what each system sends, and errors that say why."""

from __future__ import annotations

import json

import httpx
import pytest

from training.server_client import Ask, Sampling, ServerError, System, generate

SAMPLING = Sampling(temperature=0.7, top_p=0.9, max_tokens=32, presence_penalty=0.5)


def fake_server(seen: list[dict], status: int = 200):
    def handle(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        seen.append(body)
        if status != 200:
            return httpx.Response(
                status,
                json={
                    "error": {
                        "message": f"model '{body['model']}' does not exist",
                        "type": "invalid_request_error",
                        "code": "model_not_found",
                    }
                },
            )
        words = " ".join(m["content"] for m in body["messages"])
        return httpx.Response(
            200,
            json={
                "id": "x",
                "object": "chat.completion",
                "created": 0,
                "model": body["model"],
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": "stop",
                        "message": {"role": "assistant", "content": f"{body['model']}#{body['seed']}"},
                    }
                ],
                "usage": {"prompt_tokens": len(words.split()), "completion_tokens": 1, "total_tokens": 1},
            },
        )

    return {"http_client": httpx.AsyncClient(transport=httpx.MockTransport(handle))}


def test_each_system_sends_its_model_and_system_message_with_the_sampling_and_seed() -> None:
    seen: list[dict] = []
    systems = [
        System("base", "SmolLM2-135M-Instruct"),
        System("card", "SmolLM2-135M-Instruct", "FULL CARD TEXT"),
        System("adapter", "wren@v3"),
    ]
    asks = [
        Ask(conversation=({"role": "user", "content": "any scones"},), seed=7),
        Ask(conversation=({"role": "user", "content": "hello"},), seed=8),
    ]
    replies = generate(
        "http://test/v1", [(s, asks) for s in systems], SAMPLING, concurrency=2, client_options=fake_server(seen)
    )
    assert [[r.text for r in rs] for rs in replies] == [
        ["SmolLM2-135M-Instruct#7", "SmolLM2-135M-Instruct#8"],
        ["SmolLM2-135M-Instruct#7", "SmolLM2-135M-Instruct#8"],
        ["wren@v3#7", "wren@v3#8"],
    ]
    assert [r.prompt_tokens for r in replies[1]] == [5, 4]  # the card costs prompt tokens
    assert len(seen) == 6
    by_model = {(b["model"], b["messages"][0]["role"]) for b in seen}
    assert by_model == {("SmolLM2-135M-Instruct", "user"), ("SmolLM2-135M-Instruct", "system"), ("wren@v3", "user")}
    card = next(b for b in seen if b["messages"][0]["role"] == "system")
    assert card["messages"][0]["content"] == "FULL CARD TEXT"
    assert all(b["temperature"] == 0.7 and b["top_p"] == 0.9 and b["max_tokens"] == 32 for b in seen)
    assert all(b["presence_penalty"] == 0.5 and "frequency_penalty" not in b for b in seen)


def test_a_refused_model_is_an_error_naming_it() -> None:
    asks = [Ask(conversation=({"role": "user", "content": "hi"},), seed=0)]
    with pytest.raises(ServerError, match=r"refused model 'ghost@v9' \(404\)"):
        generate(
            "http://test/v1",
            [(System("adapter", "ghost@v9"), asks)],
            SAMPLING,
            client_options=fake_server([], status=404),
        )


def test_an_unreachable_server_is_an_error_naming_it() -> None:
    asks = [Ask(conversation=({"role": "user", "content": "hi"},), seed=0)]
    with pytest.raises(ServerError, match="cannot reach the server at http://127.0.0.1:9/v1"):
        generate("http://127.0.0.1:9/v1", [(System("base", "b"), asks)], SAMPLING)


@pytest.mark.parametrize(
    ("sampling", "fidelity", "expected"),
    [
        ({}, {}, (1.0, 1.0)),  # what the server uses for a request that sets nothing
        ({"temperature": 0.6, "top_p": 0.9}, {}, (0.6, 0.9)),
        ({"temperature": 0.6}, {"temperature": 0.3}, (0.3, 1.0)),
    ],
)
def test_the_report_samples_as_the_server_does_unless_the_card_says_otherwise(sampling, fidelity, expected) -> None:
    from types import SimpleNamespace

    from store.card import PersonaCard
    from training.fidelity.evaluate import _sampling
    from training.fidelity.settings import FidelitySettings

    card = PersonaCard(sampling=sampling)
    ctx = SimpleNamespace(persona=SimpleNamespace(card=card), fidelity=FidelitySettings(**fidelity))
    got = _sampling(ctx)  # type: ignore[arg-type]
    assert (got.temperature, got.top_p) == expected
