"""Adapter versions written straight to a persona folder, so the fast tiers need no training."""

from __future__ import annotations

import json
from pathlib import Path

from store.adapters import LIVE_FILE, METADATA_FILE, AdapterMetadata

LORA_CONFIG = {
    "peft_type": "LORA",
    "r": 8,
    "lora_alpha": 16,
    "target_modules": ["q_proj", "v_proj"],
    "modules_to_save": None,
}


def write_version(
    persona: Path, number: int, base_hash: str, weights: bytes = b"w1", r: int = 8, live: bool = True
) -> Path:
    """``adapters/v<number>`` with a LoRA config, stand-in weights and metadata; made live unless told."""
    folder = persona / "adapters" / f"v{number}"
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps({**LORA_CONFIG, "r": r}))
    (folder / "adapter_model.safetensors").write_bytes(weights)
    meta = AdapterMetadata(base_model="SmolLM2-135M-Instruct", base_hash=base_hash)
    (folder / METADATA_FILE).write_text(meta.model_dump_json())
    if live:
        (persona / "adapters" / LIVE_FILE).write_text(f"v{number}\n")
    return folder
