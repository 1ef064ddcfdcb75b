"""How many adapters the engine keeps loaded in memory (vLLM's ``max_cpu_loras``), sized from memory.

A persona whose adapter is not in the engine's cache is read from disk before its request runs, which
stalls the batch it joins; with many personas in use a fixed cache of a few dozen adapters misses on
most requests while the machine has room for hundreds. Unless the setting names a number, the cache
holds as many adapters of the largest servable rank as fit in a share of the memory free at start-up
(after the KV cache the engine is about to take).
"""

from __future__ import annotations

import json
from pathlib import Path

from .settings import ServeSettings

MEMORY_SHARE = 0.25
"""Share of the free memory the adapter cache may fill when ``max_cpu_loras`` is 0."""

MAX_AUTO = 4096
"""The most adapters sized automatically (vLLM's cache keeps one entry per adapter)."""

UNSIZED = 32
"""Adapters kept when the base model's ``config.json`` does not give the shapes to size them from."""


def adapter_bytes(config: dict, rank: int, dtype_bytes: int = 4) -> int:
    """Bytes of one LoRA of ``rank`` on every linear layer of a Llama-style decoder (``config.json``)."""
    hidden, inner, layers = config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"]
    heads = config["num_attention_heads"]
    head_dim = config.get("head_dim") or hidden // heads
    q_out, kv_out = heads * head_dim, config.get("num_key_value_heads", heads) * head_dim
    shapes = [(hidden, q_out), (hidden, kv_out), (hidden, kv_out), (q_out, hidden)]  # q, k, v, o
    shapes += [(hidden, inner), (hidden, inner), (inner, hidden)]  # gate, up, down
    return layers * sum(rank * (fan_in + fan_out) for fan_in, fan_out in shapes) * dtype_bytes


def free_memory_bytes() -> int:
    import psutil

    return int(psutil.virtual_memory().available)


def cpu_lora_capacity(
    settings: ServeSettings, model_path: Path, free_bytes: int | None = None, dtype_bytes: int = 4
) -> int:
    """``max_cpu_loras`` for the engine: the setting when it names a number, else sized from memory for
    adapters of ``dtype_bytes`` per weight (the engine's adapter dtype); never fewer than ``max_loras``
    (vLLM's rule)."""
    if settings.max_cpu_loras:
        return max(settings.max_cpu_loras, settings.max_loras)
    try:
        config = json.loads((Path(model_path) / "config.json").read_text(encoding="utf-8"))
        one = adapter_bytes(config, settings.max_lora_rank, dtype_bytes)
    except (OSError, ValueError, KeyError, TypeError, ZeroDivisionError):
        return max(UNSIZED, settings.max_loras)  # not a Llama-style config: no shapes to size from
    free = free_memory_bytes() if free_bytes is None else free_bytes
    room = max(0.0, free - settings.kv_cache_gb * 2**30) * MEMORY_SHARE
    return max(settings.max_loras, min(int(room // one), MAX_AUTO))
