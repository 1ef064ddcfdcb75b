"""A PEFT model's adapter weights rounded as the CPU engine serves them: a reference for the served
replies (greedy tokens part from float32's where two tokens are nearly tied) and for what the
rounding costs (``bench/adapter_precision.py``)."""

from __future__ import annotations


def round_as_served(model, weights: str = "int8") -> None:
    """Round ``model``'s LoRA weights in place as a float32 CPU engine keeps them with
    ``--adapter-weights`` ``weights``: in bfloat16 for the engine's adapter cache, then for the kernel
    in int8 with a scale per row of A and per rank column of B, or in float16 (each layer's weights
    scaled by a power of two, which keeps every bfloat16 value exactly); float32 leaves them alone."""
    import torch

    if weights == "float32":
        return
    with torch.no_grad():
        for name, weight in model.named_parameters():
            if "lora_A" not in name and "lora_B" not in name:
                continue
            rounded = weight.bfloat16().float()
            if weights == "int8":
                largest = rounded.abs().amax(dim=1 if "lora_A" in name else 0, keepdim=True)
                step = torch.where(largest > 0, largest / 127, 1.0)
                rounded = torch.round(rounded / step) * step
            weight.copy_(rounded)
