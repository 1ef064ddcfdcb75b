"""A punica wrapper for vLLM's CPU engine that applies LoRA with the grouped ops of :mod:`.ops`.

It keeps vLLM's own metadata (other code reads it) and adds, once per step, a plan for the tokens
and one for the sampled rows. The linear, embedding and logits paths then cost a fixed number of
tensor calls each; the shrink/expand entry points used only by tensor-parallel sharded layers are
vLLM's own. Linear layers in float32 keep their adapters in int8 or float16 for the kernel of :mod:`.kernel`
(int8 by default) where it could be built, and then call the kernel library's own op, which serves a
step without Python once the layer's weights are packed for its slot layout (:mod:`.published`).
"""

from __future__ import annotations

import weakref
from functools import partial
from typing import Any

import torch
from vllm.lora.punica_wrapper.punica_cpu import PunicaWrapperCPU

from . import custom_op, kernel, published
from .ops import FusedCache, add_lora
from .plan import NO_ADAPTER, Plan, build_plan


class PunicaWrapperGroupedCPU(PunicaWrapperCPU):
    """vLLM's CPU wrapper with grouped, slice-fused LoRA for linear layers, embeddings and logits."""

    def __init__(self, max_num_batched_tokens: int, max_batches: int, device: torch.device | str, **kwargs: Any):
        super().__init__(max_num_batched_tokens, max_batches, device, **kwargs)
        self.token_plan: Plan = NO_ADAPTER
        self.sampler_plan: Plan = NO_ADAPTER
        self.key = custom_op.register_wrapper(self)
        self.packed = kernel.load()
        """The dtype float32 linear layers keep their adapters in for the kernel (None: float32 copies)."""
        on_packed = None if self.packed is None else partial(published.publish_layer, self.key)
        self.cache = FusedCache(on_packed)
        if self.packed is not None:
            weakref.finalize(self, published.forget, self.key)

    def update_metadata(
        self, mapping, lora_index_to_id: list[int | None], max_loras: int, vocab_size: int, **kwargs: Any
    ) -> None:
        super().update_metadata(mapping, lora_index_to_id, max_loras, vocab_size, **kwargs)
        self.cache.set_layout(tuple(lora_index_to_id))
        self.token_plan = build_plan(self.token_lora_indices.tolist(), packed=self.packed is not None)
        self.sampler_plan = build_plan(self.sampler_indices.tolist())
        if self.packed is not None:
            published.publish_step(self.key, self.token_plan, self.cache.version)

    def add_lora_linear(
        self,
        y: torch.Tensor,
        x: torch.Tensor,
        lora_a_stacked,
        lora_b_stacked,
        scale: float,
        output_slices: tuple[int, ...],
        *,
        buffer=None,
        **kwargs: Any,
    ) -> None:
        x = x.view(-1, x.shape[-1])
        if self.packed is not None:  # the kernel's own op: Python only where it needs the wrapper
            torch.ops.persona_lora_kernels.linear(self.key, y, x, list(lora_a_stacked), list(lora_b_stacked), scale)
        else:
            custom_op.lora_linear(self.key, y, x, list(lora_a_stacked), list(lora_b_stacked), scale)

    def add_lora_embedding(
        self, y: torch.Tensor, x: torch.Tensor, lora_b_stacked: torch.Tensor, add_inputs: bool = True, **kwargs: Any
    ) -> None:
        if not add_inputs:
            y.zero_()
        custom_op.lora_embedding(self.key, y, x, lora_b_stacked)

    def add_lora_logits(
        self,
        y: torch.Tensor,
        x: torch.Tensor,
        lora_a_stacked: torch.Tensor,
        lora_b_stacked: torch.Tensor,
        scale,
        *,
        buffer=None,
        **kwargs: Any,
    ) -> None:
        y2 = y.view(-1, y.shape[-1])
        fused = self.cache.get((lora_a_stacked,), (lora_b_stacked,), y.dtype)
        add_lora(y2, x.view(-1, x.shape[-1]).to(y.dtype), fused, self.sampler_plan, scale)

    # called from inside the custom ops (eagerly, also when the model is compiled)
    def run_linear(self, y: torch.Tensor, x: torch.Tensor, a_stacked, b_stacked, scale: float) -> None:
        plan = self.token_plan
        if not plan.groups:
            return
        y2 = y.view(-1, y.shape[-1])
        if self.packed is not None and y.dtype == torch.float32:
            self.cache.get_packed(a_stacked, b_stacked, self.packed)  # packed for this layout, and published
            published.apply(self.key, y2, x.to(y.dtype), a_stacked[0], scale)
        else:
            add_lora(y2, x, self.cache.get(a_stacked, b_stacked, y.dtype), plan, scale)

    def run_embedding(self, y: torch.Tensor, x: torch.Tensor, b_stacked: torch.Tensor) -> None:
        plan = self.token_plan
        if not plan.groups:
            return
        fused = self.cache.get(None, (b_stacked,), y.dtype)
        add_lora(y.view(-1, y.shape[-1]), x.view(-1, x.shape[-1]).to(y.dtype), fused, plan)
