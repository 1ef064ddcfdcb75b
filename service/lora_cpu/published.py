"""What the kernel's own LoRA op (``kernels/lora_step.cpp``) reads, so that a decoding step's linear
layers reach the kernel without Python: the step's plan, published once a step, and each layer's
packed weights, published when they are made or refreshed for a new slot layout."""

from __future__ import annotations

import torch

from .ops import PackedFused
from .plan import Plan

NOTHING, KERNEL, PYTHON = 0, 1, 2
"""What a step asks of the linear layers (``Mode`` in ``lora_step.cpp``): nothing, the kernel alone, or the
wrapper's Python (a slot with enough tokens for matrix products)."""

_NO_ROWS = torch.empty(0, dtype=torch.long)


def mode(plan: Plan) -> int:
    """How the kernel's op serves the linear layers of a step with ``plan`` (built with ``packed=True``)."""
    if not plan.groups:
        return NOTHING
    return PYTHON if plan.wide or plan.kernel is None else KERNEL


def publish_step(key: int, plan: Plan, version: int) -> None:
    """The step's plan, for weights packed for slot layout ``version``."""
    which = mode(plan)
    groups, rows = (plan.kernel.groups, plan.kernel.rows) if which == KERNEL else (_NO_ROWS, _NO_ROWS)
    torch.ops.persona_lora_kernels.set_step(key, which, version, groups, rows)


def publish_layer(key: int, first_a: torch.Tensor, version: int, fused: PackedFused) -> None:
    """A layer's packed weights (the layer known by its first stacked A), current for layout ``version``."""
    torch.ops.persona_lora_kernels.set_layer(key, first_a, version, fused.a, fused.b, fused.row_scales, fused.ends)


def forget(key: int) -> None:
    """Drop what was published for the wrapper ``key`` (its engine is gone)."""
    torch.ops.persona_lora_kernels.forget(key)
