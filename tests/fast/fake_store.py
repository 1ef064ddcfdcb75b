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


def write_report(version: Path, systems: dict[str, dict[str, float]], gate: dict | None = None) -> Path:
    """A fidelity report beside ``version`` with these systems' figures (and the gate's decision, if given)."""
    from store.fidelity_report import FIDELITY_JSON, FidelityReport

    report = FidelityReport.model_validate(
        {
            "persona": version.parent.parent.name,
            "version": version.name,
            "base_model": "SmolLM2-135M-Instruct",
            "data_hash": "d" * 64,
            "heldout_sessions": 4,
            "scored_examples": 20,
            "prompts": 20,
            "probes": ["Hi?"],
            "sessions": 4,
            "card_prompt": "You are Alpha.",
            "embedding_model": "all-MiniLM-L6-v2",
            "systems": systems,
            "real": {"replies": 20, "centroid_ceiling": 0.44},
            "gate": gate,
        }
    )
    path = version / FIDELITY_JSON
    path.write_text(report.model_dump_json())
    return path
