"""The engine's adapter cache is sized from memory unless the settings name a number."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from service.lora_memory import MAX_AUTO, UNSIZED, adapter_bytes, cpu_lora_capacity
from service.settings import ServeSettings

CONFIG = {
    "model_type": "llama",
    "hidden_size": 576,
    "intermediate_size": 1536,
    "num_hidden_layers": 30,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "vocab_size": 49152,
}
"""The bundled base model's shapes."""


def lora_parameters(config: dict, rank: int) -> int:
    """Parameters PEFT gives a LoRA of ``rank`` on every linear layer of the decoder (built on the meta device)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**config))
        targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
        model = get_peft_model(model, LoraConfig(r=rank, target_modules=targets))
    return sum(p.numel() for name, p in model.named_parameters() if "lora_" in name)


@pytest.mark.parametrize("rank", [8, 16])
def test_an_adapter_is_sized_as_peft_builds_it(rank: int) -> None:
    assert adapter_bytes(CONFIG, rank) == lora_parameters(CONFIG, rank) * 4
    assert adapter_bytes(CONFIG, rank, dtype_bytes=2) * 2 == adapter_bytes(CONFIG, rank)


@pytest.fixture()
def model_dir(tmp_path: Path) -> Path:
    (tmp_path / "config.json").write_text(json.dumps(CONFIG))
    return tmp_path


def settings(tmp_path: Path, **fields) -> ServeSettings:
    return ServeSettings(personas_dir=tmp_path, cache_dir=tmp_path, max_lora_rank=16, kv_cache_gb=2.0, **fields)


def test_a_number_in_the_settings_is_kept_and_never_below_the_batch(tmp_path: Path, model_dir: Path) -> None:
    assert cpu_lora_capacity(settings(tmp_path, max_cpu_loras=40), model_dir, free_bytes=2**40) == 40
    assert cpu_lora_capacity(settings(tmp_path, max_cpu_loras=2, max_loras=8), model_dir, free_bytes=2**40) == 8


def test_by_default_a_quarter_of_the_free_memory_after_the_kv_cache_holds_adapters(
    tmp_path: Path, model_dir: Path
) -> None:
    one = adapter_bytes(CONFIG, 16)
    free = 10 * 2**30
    assert cpu_lora_capacity(settings(tmp_path), model_dir, free_bytes=free) == int((free - 2 * 2**30) / 4 // one)
    assert cpu_lora_capacity(settings(tmp_path, max_loras=8), model_dir, free_bytes=2**30) == 8, "little memory"
    assert cpu_lora_capacity(settings(tmp_path), model_dir, free_bytes=2**50) == MAX_AUTO
    in_16_bits = cpu_lora_capacity(settings(tmp_path), model_dir, free_bytes=free, dtype_bytes=2)
    assert in_16_bits == int((free - 2 * 2**30) / 4 // (one // 2)), "adapters kept in bfloat16: twice as many"


def test_a_base_whose_config_gives_no_shapes_keeps_a_fixed_number(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", "vocab_size": 100}))
    assert cpu_lora_capacity(settings(tmp_path), tmp_path, free_bytes=2**40) == UNSIZED
    assert cpu_lora_capacity(settings(tmp_path), tmp_path / "missing", free_bytes=2**40) == UNSIZED
