"""bfloat16 autocast, on by default on CPUs with AMX: the adapter it publishes is as good as fp32's.

Both runs train an example persona the same way; each published adapter is loaded back and its
held-out loss taken in fp32, as the server and the fidelity report use it.
"""

from __future__ import annotations

from pathlib import Path

from store import adapters
from store.registry import PersonaStore
from training.batches import encode_split, pad_id
from training.config import TrainConfig
from training.ingest import persona_examples
from training.loop import train
from training.model import heldout_loss, load_adapter_model, load_base_model, load_tokenizer
from training.publish import publish_adapter

REPO = Path(__file__).resolve().parents[2]
RUN = TrainConfig(max_steps=4, batch_tokens=1024, eval_every=10**6, checkpoint_every=10**6)


def test_bf16_adapter_keeps_fp32_held_out_loss_on_an_example_persona(base_model, tmp_path):
    examples = persona_examples(PersonaStore(REPO / "personas").get("zeph"))
    rows, heldout = list(examples.train)[:24], list(examples.heldout)
    tokenizer = load_tokenizer(base_model)
    split = encode_split(tokenizer, heldout, RUN.max_seq_length)

    def published_loss(bf16: bool | None) -> tuple[float, Path]:
        outcome = train(base_model, rows, heldout, RUN.replace(bf16=bf16), progress=False, tokenizer=tokenizer)
        persona = tmp_path / str(bf16) / "zeph"
        (persona / "logs").mkdir(parents=True)
        _, path = publish_adapter(persona, outcome, data_hash="zeph", max_lora_rank=16)
        loss = heldout_loss(load_adapter_model(base_model, path), split, 4096, pad_id(tokenizer))
        assert loss is not None
        return loss, path

    before = heldout_loss(load_base_model(base_model), split, 4096, pad_id(tokenizer))
    fp32, fp32_path = published_loss(False)
    bf16, bf16_path = published_loss(True)
    assert before is not None and fp32 < before * 0.97  # the runs learnt something worth comparing
    assert abs(bf16 - fp32) <= 0.01 * fp32
    assert adapters.read_metadata(bf16_path).settings["bf16"] is True
    assert adapters.read_metadata(fp32_path).settings["bf16"] is False
