"""The training speed-ups on a tiny in-memory Llama (no model file): each changes the speed, not the values."""

from __future__ import annotations

import pytest
import torch

from training.config import TrainConfig
from training.speedups import FastDropout, SharedDraw, SharingDropout, apply_speedups

OFF = dict(fused_lora=False, head_on_trained_positions=False, shared_dropout=False, fast_dropout=False)


def tiny_lora_model(config: TrainConfig, vocab: int = 320):
    """A 2-layer Llama with random weights and a LoRA on every linear layer, with ``config``'s speed-ups."""
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    base = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=vocab,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            use_cache=False,
        )
    )
    model = get_peft_model(
        base,
        LoraConfig(
            r=4,
            lora_alpha=8,
            lora_dropout=config.lora_dropout,
            target_modules=list(config.target_modules),
            task_type="CAUSAL_LM",
        ),
    )
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.1)  # PEFT starts B at zero, which would hide the LoRA path
    apply_speedups(model, config)
    return model.train()


def tiny_batch(base_model):
    from transformers import AutoTokenizer

    from training.batches import collate, encode_split, pad_id

    tokenizer = AutoTokenizer.from_pretrained(base_model.path)
    rows = [
        {
            "messages": [
                {"role": "user", "content": "Any scones left?" * n, "weight": 0.0},
                {"role": "assistant", "content": "Oh crumbs, two left, petal.", "weight": 1.0},
            ]
        }
        for n in (1, 3)
    ]
    split = encode_split(tokenizer, rows, 256)
    return collate(split, [0, 1], pad_id(tokenizer)), len(tokenizer)


def loss_and_grads(model, batch, config: TrainConfig):
    from training.model import LossPath

    model.zero_grad()
    loss = LossPath(model, head_on_trained_positions=config.head_on_trained_positions)(batch)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


def test_fast_dropout_keeps_the_expectation():
    torch.manual_seed(0)
    drop = FastDropout(0.1)
    x = torch.ones(1000, 1000)
    y = drop(x)
    zero = (y == 0).float().mean().item()
    assert abs(zero - 0.1) < 0.005 and abs(y.mean().item() - 1.0) < 0.01
    kept = torch.unique(y[y != 0])
    assert len(kept) == 1 and kept.item() == pytest.approx(1 / (1 - drop.threshold / 32768))
    drop.eval()
    assert drop(x) is x


def test_layers_reading_one_input_share_one_dropout_draw():
    shared = SharedDraw()
    q, k = SharingDropout(torch.nn.Dropout(0.5), shared), SharingDropout(torch.nn.Dropout(0.5), shared)
    x, other = torch.ones(64, 64), torch.ones(64, 64)
    first = q(x)
    assert k(x) is first  # the same input: the same mask
    assert not torch.equal(k(other), first)  # another input: a fresh draw
    q.eval()
    assert q(x) is x


def test_speedups_off_give_the_same_loss_and_gradients(base_model):
    batch, vocab = tiny_batch(base_model)
    plain = TrainConfig(lora_dropout=0.0)
    fast_loss, fast_grads = loss_and_grads(tiny_lora_model(plain, vocab), batch, plain)
    slow = plain.replace(**OFF)
    slow_model = tiny_lora_model(slow, vocab)
    assert not any("forward" in vars(m) for m in slow_model.modules())  # PEFT's own forward
    slow_loss, slow_grads = loss_and_grads(slow_model, batch, slow)
    assert torch.allclose(fast_loss, slow_loss, rtol=1e-5)
    assert fast_grads.keys() == slow_grads.keys()
    for name, grad in fast_grads.items():
        assert torch.allclose(grad, slow_grads[name], rtol=1e-3, atol=1e-6), name


@pytest.mark.parametrize("shared", [True, False])
def test_the_shared_dropout_switch_decides_whether_q_k_v_share_a_draw(shared):
    config = TrainConfig(lora_dropout=0.1, shared_dropout=shared)
    model = tiny_lora_model(config)
    attention = model.get_base_model().model.layers[0].self_attn
    outputs = []
    for proj in (attention.q_proj, attention.k_proj, attention.v_proj):
        proj.lora_dropout["default"].register_forward_hook(lambda module, args, out: outputs.append(out))
    model(input_ids=torch.randint(0, 320, (2, 12)))
    assert len(outputs) == 3
    assert (outputs[0] is outputs[1] is outputs[2]) == shared
    if not shared:
        assert not torch.equal(outputs[0], outputs[1])
