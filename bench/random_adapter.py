"""Random LoRA adapters published as versions: stand-ins for trained ones in benchmarks and tests."""

from __future__ import annotations

import shutil
from pathlib import Path

from store.adapters import METADATA_FILE, AdapterMetadata, new_staging_dir, publish, store_weights

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def publish_random_adapter(
    persona_path: Path, base, seed: int, scale: float = 0.05, r: int = 8, float32_file: bool = False
) -> int:
    """A LoRA adapter with random weights strong enough to change the replies, published as a version
    written as training writes one (or with its float32 weights kept)."""
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
        if not float32_file:
            store_weights(staged)
        meta = AdapterMetadata(base_model=base.id, base_hash=base.hash, data_hash=f"random-{seed}")
        (staged / METADATA_FILE).write_text(meta.model_dump_json())
        return publish(persona_path, staged)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
