"""A PEFT model's adapter weights rounded as the CPU engine serves them by default: kept in bfloat16
by the engine, then in int8 by the LoRA kernel with a scale per row of A and per rank column of B."""

from __future__ import annotations


def round_as_served(model) -> None:
    """Round ``model``'s LoRA weights in place (a reference for the served replies, whose greedy
    tokens may otherwise part from float32's where two tokens are nearly tied)."""
    import torch

    with torch.no_grad():
        for name, weight in model.named_parameters():
            if "lora_A" not in name and "lora_B" not in name:
                continue
            rounded = weight.bfloat16().float()
            largest = rounded.abs().amax(dim=1 if "lora_A" in name else 0, keepdim=True)
            step = torch.where(largest > 0, largest / 127, 1.0)
            weight.copy_(torch.round(rounded / step) * step)
