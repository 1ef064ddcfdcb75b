"""Real tier: vLLM on the bundled model, driven over HTTP with the official ``openai`` client."""

from __future__ import annotations

import pytest

from bench.random_adapter import publish_random_adapter


@pytest.fixture(scope="session")
def random_personas(live_server, base_model) -> tuple[str, str]:
    """Two personas with different random adapters, added while the server runs (names no other test uses)."""
    names = ("serving-lora-a", "serving-lora-b")
    for seed, name in enumerate(names, start=1):
        folder = live_server.personas_dir / name
        (folder / "logs").mkdir(parents=True, exist_ok=True)
        (folder / "persona.yaml").write_text(f"display_name: {name}\nsystem_prompt: You are a helpful assistant.\n")
        publish_random_adapter(folder, base_model, seed)
    return names


@pytest.fixture()
def client(live_server):
    from openai import OpenAI

    with OpenAI(base_url=live_server.url + "/v1", api_key="unused", max_retries=0, timeout=120) as c:
        yield c


@pytest.fixture()
def async_client(live_server):
    from openai import AsyncOpenAI

    return AsyncOpenAI(base_url=live_server.url + "/v1", api_key="unused", max_retries=0, timeout=300)


@pytest.fixture(scope="session")
def reference(base_model):
    """The bundled model in transformers (float32, as the server runs it, uncompiled) and its tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base_model.path)
    model = AutoModelForCausalLM.from_pretrained(base_model.path, dtype=torch.float32).eval()
    return model, tokenizer
