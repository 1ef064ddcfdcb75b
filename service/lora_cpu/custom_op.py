"""The LoRA products as torch ops, so vLLM's compiler can trace the model around them.

Inside a compiled graph, Python state read while tracing is frozen; the grouping of a step's tokens
changes every step. As opaque ops that read their wrapper's current plan when they run, the grouped
products stay correct in a graph that is traced once. Run eagerly, the wrapper is called directly:
dispatching through the op registry costs more than the products themselves for one token.

Where the kernel is built, linear layers call the kernel library's own op instead
(``kernels/lora_step.cpp``, :mod:`.published`), which calls :func:`_linear` through
``persona_lora.linear`` only to pack a layer's weights for a new slot layout, or for a layer in
another dtype.
"""

from __future__ import annotations

import itertools
import weakref
from typing import TYPE_CHECKING

import torch
from torch.library import Library
from vllm.utils.torch_utils import direct_register_custom_op

if TYPE_CHECKING:
    from .punica import PunicaWrapperGroupedCPU

_wrappers: weakref.WeakValueDictionary[int, PunicaWrapperGroupedCPU] = weakref.WeakValueDictionary()
_keys = itertools.count(1)
_library = Library("persona_lora", "FRAGMENT")  # the ops live as long as this module


def register_wrapper(wrapper: PunicaWrapperGroupedCPU) -> int:
    """A key the ops use to find ``wrapper`` (a compiled graph can only pass plain values)."""
    key = next(_keys)
    _wrappers[key] = wrapper
    return key


def _linear(
    key: int,
    y: torch.Tensor,
    x: torch.Tensor,
    a_stacked: list[torch.Tensor],
    b_stacked: list[torch.Tensor],
    scale: float,
) -> None:
    _wrappers[key].run_linear(y, x, a_stacked, b_stacked, scale)


def _embedding(key: int, y: torch.Tensor, x: torch.Tensor, b_stacked: torch.Tensor) -> None:
    _wrappers[key].run_embedding(y, x, b_stacked)


def _nothing(*args) -> None:
    return None


direct_register_custom_op(
    "linear", _linear, mutates_args=["y"], fake_impl=_nothing, target_lib=_library, dispatch_key="CPU"
)
direct_register_custom_op(
    "embedding", _embedding, mutates_args=["y"], fake_impl=_nothing, target_lib=_library, dispatch_key="CPU"
)


def lora_linear(
    key: int,
    y: torch.Tensor,
    x: torch.Tensor,
    a_stacked: list[torch.Tensor],
    b_stacked: list[torch.Tensor],
    scale: float,
) -> None:
    """``y += scale * x @ A^T @ B^T`` with each token's adapter, for all packed slices at once."""
    if torch.compiler.is_compiling():
        torch.ops.persona_lora.linear(key, y, x, a_stacked, b_stacked, scale)
    else:
        _linear(key, y, x, a_stacked, b_stacked, scale)


def lora_embedding(key: int, y: torch.Tensor, x: torch.Tensor, b_stacked: torch.Tensor) -> None:
    """``y += x @ B^T`` with each token's adapter (``x``: the looked-up rows of the embedding A)."""
    if torch.compiler.is_compiling():
        torch.ops.persona_lora.embedding(key, y, x, b_stacked)
    else:
        _embedding(key, y, x, b_stacked)
