"""The LoRA products as torch custom ops, so vLLM's compiler can trace the model around them.

Inside a compiled graph, Python state read while tracing is frozen; the grouping of a step's tokens
changes every step. As opaque ops that read their wrapper's current plan when they run, the grouped
products stay correct in a graph that is traced once, and the same code runs eagerly.
"""

from __future__ import annotations

import itertools
import weakref
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from .punica import PunicaWrapperGroupedCPU

_wrappers: weakref.WeakValueDictionary[int, PunicaWrapperGroupedCPU] = weakref.WeakValueDictionary()
_keys = itertools.count(1)


def register_wrapper(wrapper: PunicaWrapperGroupedCPU) -> int:
    """A key the ops use to find ``wrapper`` (a compiled graph can only pass plain values)."""
    key = next(_keys)
    _wrappers[key] = wrapper
    return key


@torch.library.custom_op("persona_lora::linear", mutates_args=("y",), device_types="cpu")
def lora_linear(
    key: int,
    y: torch.Tensor,
    x: torch.Tensor,
    a_stacked: list[torch.Tensor],
    b_stacked: list[torch.Tensor],
    scale: float,
) -> None:
    """``y += scale * x @ A^T @ B^T`` with each token's adapter, for all packed slices at once."""
    _wrappers[key].run_linear(y, x, a_stacked, b_stacked, scale)


@lora_linear.register_fake
def _(key, y, x, a_stacked, b_stacked, scale) -> None:
    return None


@torch.library.custom_op("persona_lora::embedding", mutates_args=("y",), device_types="cpu")
def lora_embedding(key: int, y: torch.Tensor, x: torch.Tensor, b_stacked: torch.Tensor) -> None:
    """``y += x @ B^T`` with each token's adapter (``x``: the looked-up rows of the embedding A)."""
    _wrappers[key].run_embedding(y, x, b_stacked)


@lora_embedding.register_fake
def _(key, y, x, b_stacked) -> None:
    return None
