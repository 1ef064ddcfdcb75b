"""Faster multi-LoRA on vLLM's CPU engine, as a vLLM plugin of this project.

vLLM's CPU LoRA ops copy each token's adapter weights before multiplying, issue one call per packed
slice (q/k/v, gate/up), and vLLM turns off its compiler for the whole model once LoRA is enabled.
This plugin replaces the CPU punica wrapper with one that groups tokens by adapter (a fixed number
of matmuls per projection), fuses the packed slices, and lets the model be compiled again; its
sampler applies top-k and top-p to each row's likeliest tokens instead of sorting the vocabulary.

It acts only in an engine process whose environment has ``PERSONA_FAST_LORA=1`` (the server sets it
from ``ServeSettings.fast_lora``) and only on vLLM's CPU platform. This module imports neither
torch nor vLLM, so the server can read the switch cheaply.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal, get_args

SWITCH = "PERSONA_FAST_LORA"
"""Environment variable that turns the plugin on in vLLM's processes ("1" on, anything else off)."""

WEIGHTS_SWITCH = "PERSONA_ADAPTER_WEIGHTS"
"""Environment variable naming how float32 layers' adapters are kept for the plugin's kernel
(:mod:`.kernel`): one of :data:`ADAPTER_WEIGHTS` (unset: the first)."""

AdapterWeights = Literal["int8", "float16", "float32"]
"""int8 with a scale per row, float16, or float32 copies without the kernel."""

ADAPTER_WEIGHTS: tuple[str, ...] = get_args(AdapterWeights)


def requested(environ: Mapping[str, str]) -> bool:
    """Whether ``environ`` asks for the plugin."""
    return environ.get(SWITCH, "").strip() == "1"
