"""Real tier: vLLM on the bundled model, driven over HTTP with the official ``openai`` client."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from store.adapters import METADATA_FILE, AdapterMetadata, new_staging_dir, publish

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def publish_random_adapter(persona_path: Path, base, seed: int, scale: float = 0.05, r: int = 8) -> int:
    """A LoRA adapter with random weights strong enough to change the replies, published as a version."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base.path, dtype=torch.float32)
    peft_model = get_peft_model(
        model, LoraConfig(r=r, lora_alpha=2 * r, target_modules=TARGETS, init_lora_weights=False)
    )
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * scale)
    staged = new_staging_dir(persona_path)
    try:
        peft_model.save_pretrained(staged)
        meta = AdapterMetadata(base_model=base.id, base_hash=base.hash, data_hash=f"random-{seed}")
        (staged / METADATA_FILE).write_text(meta.model_dump_json())
        return publish(persona_path, staged)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise


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
