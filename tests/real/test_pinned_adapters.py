"""A pinned persona on the real engine: more personas in one batch than the batch slots beside it."""

from __future__ import annotations

import asyncio
import shutil

import httpx
import pytest

from bench.random_adapter import publish_random_adapter
from service.settings import ServeSettings
from tests.support.greedy import opening
from tests.support.polling import wait_until

pytestmark = pytest.mark.real

QUESTION = [{"role": "user", "content": "Tell me about your favourite place."}]


def test_a_pinned_persona_and_a_full_batch_of_others_are_all_served(
    client, async_client, live_server, own_persona, base_model
) -> None:
    """The pinned adapter must not take a batch slot the scheduler hands to another persona."""
    slots = int(live_server.env.get("PERSONA_MAX_LORAS", ServeSettings.model_fields["max_loras"].default))
    pinned = own_persona("pinned")
    (pinned / "persona.yaml").write_text(
        "display_name: Featured\nsystem_prompt: You are a helpful assistant.\nserving:\n  pinned: true\n"
    )
    publish_random_adapter(pinned, base_model, seed=11)
    first = own_persona("other-0")
    first.joinpath("persona.yaml").write_text("display_name: Other\nsystem_prompt: You are a helpful assistant.\n")
    publish_random_adapter(first, base_model, seed=12)
    others = [first.name]
    for i in range(1, slots):  # as many other personas as there are slots, the same weights under other names
        folder = own_persona(f"other-{i}")
        shutil.rmtree(folder)
        shutil.copytree(first, folder)
        others.append(folder.name)
    wait_until(lambda: others[-1] in {m.id for m in client.models.list().data}, timeout=30)

    def ask(model: str) -> str:
        reply = client.chat.completions.create(model=model, messages=QUESTION, temperature=0, max_tokens=16)
        return reply.choices[0].message.content

    alone = {pinned.name: ask(pinned.name), others[0]: ask(others[0])}
    assert opening(alone[pinned.name]) != opening(alone[others[0]])
    metrics = httpx.get(live_server.url + "/metrics").text
    assert "persona_adapters_pinned 1.0" in metrics

    async def batches(rounds: int) -> list[tuple[str, str]]:
        models = [pinned.name, *others]
        replies = []
        for _ in range(rounds):
            replies += await asyncio.gather(
                *(
                    async_client.chat.completions.create(model=m, messages=QUESTION, temperature=0, max_tokens=16)
                    for m in models
                )
            )
        return list(zip(models * rounds, (r.choices[0].message.content for r in replies)))

    for model, text in asyncio.run(batches(2)):
        expected = alone[pinned.name] if model == pinned.name else alone[others[0]]
        assert opening(text) == opening(expected), (model, text, expected)
    assert opening(ask(pinned.name)) == opening(alone[pinned.name])
