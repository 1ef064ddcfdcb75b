"""What the kernel library's own LoRA op (``kernels/lora_step.cpp``) reads, so that a step's linear
layers reach the products without Python: the step's plan, published when vLLM announces a new
mapping, and each layer's packed weights, published when they are made or refreshed for a new slot
layout."""

from __future__ import annotations

import torch

from .ops import PackedFused
from .plan import GroupIndex, Plan

_NONE = GroupIndex(groups=torch.empty(0, 3, dtype=torch.long), rows=torch.empty(0, dtype=torch.long))


def publish_step(key: int, plan: Plan, version: int) -> None:
    """The step's groups (``plan`` built with ``packed=True``), for weights packed for slot layout ``version``."""
    few, many = plan.kernel or _NONE, plan.wide or _NONE
    torch.ops.persona_lora_kernels.set_step(key, version, few.groups, few.rows, many.groups, many.rows)


def publish_layer(key: int, first_a: torch.Tensor, version: int, fused: PackedFused) -> None:
    """A layer's packed weights (the layer known by its first stacked A), current for layout ``version``."""
    torch.ops.persona_lora_kernels.set_layer(key, first_a, version, fused.a, fused.b, fused.row_scales, fused.ends)


def apply(key: int, y: torch.Tensor, x: torch.Tensor, first_a: torch.Tensor, scale: float) -> None:
    """The step's LoRA for the layer whose weights were just published (``y`` and ``x`` float32)."""
    torch.ops.persona_lora_kernels.apply(key, y, x, first_a, scale)


def forget(key: int) -> None:
    """Drop what was published for the wrapper ``key`` (its engine is gone)."""
    torch.ops.persona_lora_kernels.forget(key)
