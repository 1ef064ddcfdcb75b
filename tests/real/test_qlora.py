"""QLoRA on the CPU: a 4-bit NF4 base (bitsandbytes) with a LoRA trained on top, published like any other."""

from __future__ import annotations

import json

import pytest

from store import adapters
from training.config import TrainConfig
from training.publish import publish_adapter
from training.trainer import train

pytestmark = pytest.mark.real

ROWS = [
    {
        "messages": [
            {"role": "system", "content": "You are Echo.", "weight": 0.0},
            {"role": "user", "content": f"Say it, number {i}.", "weight": 0.0},
            {"role": "assistant", "content": "The blue heron flies at dawn.", "weight": 1.0},
        ],
        "session": f"s{i}",
    }
    for i in range(6)
]


def test_qlora_steps_run_on_cpu_and_publish_a_servable_adapter(base_model, tmp_path):
    config = TrainConfig(qlora=True, max_steps=3, batch_tokens=128, learning_rate=3e-3, lora_r=8,
                         lora_alpha=16, eval_every=3, warmup_ratio=0.0)
    outcome = train(base_model, ROWS[:4], ROWS[4:], config, progress=False)
    assert outcome.steps == 3
    assert type(outcome.model.get_base_model().model.layers[0].self_attn.q_proj.base_layer).__name__ == "Linear4bit"
    assert outcome.eval_loss_after < outcome.eval_loss_before

    persona = tmp_path / "personas" / "echo"
    (persona / "logs").mkdir(parents=True)
    version, path = publish_adapter(persona, outcome, data_hash="q", max_lora_rank=16,
                                    extra_metadata={"qlora": True})
    assert version == 1 and adapters.read_live(persona) == 1
    assert adapters.read_metadata(path).model_extra["qlora"] is True
    config_json = json.loads((path / "adapter_config.json").read_text())
    assert config_json["r"] == 8 and not config_json.get("modules_to_save")
    # the adapter is served on the full-precision base: it loads there (publish checked the weights)
    adapters.check_servable(path, 16, {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"})
