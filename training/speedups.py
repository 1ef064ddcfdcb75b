"""Speed-ups of LoRA training on the CPU, each behind a switch of :class:`~training.config.TrainConfig`.

On a CPU the element-wise passes around the small LoRA matmuls (dropout masks, scaling, the residual
addition) cost as much as the matmuls themselves, and so do page faults on freed activation buffers.
Each measure below removes one of those costs; ``bench/train_speed.py --ablate`` turns each off in
turn to show what it is worth (bench/RESULTS.md).

The fused forward reads PEFT's ``LoraLayer`` internals (hence the upper bound on ``peft`` in
``pyproject.toml``); it steps aside whenever a layer is merged, disabled or evaluating.
"""

from __future__ import annotations

import contextlib
import ctypes
import sys
from collections.abc import Callable
from typing import Any

from . import torch_env  # noqa: F401  (process options torch reads when it loads)

# isort: split
import torch
import torch.nn.functional as F
from torch import nn

from .config import TrainConfig

__all__ = ["FastDropout", "SharedDraw", "SharingDropout", "apply_speedups", "tune_allocator", "use_fused_lora"]


class FastDropout(nn.Module):
    """Inverted dropout whose mask comes from packed random integers (much cheaper on the CPU).

    Each element is dropped with probability ``p`` rounded to a multiple of 1/32768.
    """

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p
        self.threshold = int(round(p * 32768))
        self.scale = 1.0 / (1.0 - self.threshold / 32768)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.threshold == 0:
            return x
        count = x.numel()
        bits = torch.empty((count + 3) // 4, dtype=torch.int64, device=x.device).random_()
        keep = (bits.view(torch.int16)[:count].view(x.shape) & 0x7FFF) >= self.threshold
        return x * keep.to(x.dtype).mul_(self.scale)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class SharedDraw:
    """The last (input, dropped input) pair, shared by the LoRA layers of one model."""

    __slots__ = ("source", "dropped", "p")

    def __init__(self) -> None:
        self.source: torch.Tensor | None = None
        self.dropped: torch.Tensor | None = None
        self.p: float | None = None


class SharingDropout(nn.Module):
    """A LoRA dropout that reuses the previous layer's draw when it reads the very same input tensor.

    q/k/v (and gate/up) read one input one after the other; they share one dropout draw of it, as a
    fused QKV LoRA does, instead of drawing a mask each.
    """

    def __init__(self, inner: nn.Module, shared: SharedDraw) -> None:
        super().__init__()
        self.inner = inner
        self.p = getattr(inner, "p", None)
        self._shared = shared

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return self.inner(x)
        shared = self._shared
        if shared.source is x and shared.dropped is not None and shared.p == self.p:
            return shared.dropped
        dropped = self.inner(x)
        shared.source, shared.dropped, shared.p = x, dropped, self.p
        return dropped


def _lora_dropouts(model: nn.Module):
    """(ModuleDict, adapter name, dropout) of every LoRA layer's real (non-zero) dropout."""
    for module in model.modules():
        dropouts = getattr(module, "lora_dropout", None)
        if isinstance(dropouts, nn.ModuleDict):
            for name, layer in list(dropouts.items()):
                if not isinstance(layer, nn.Identity):
                    yield dropouts, name, layer


def use_fast_dropout(model: nn.Module) -> None:
    """Replace each LoRA layer's ``nn.Dropout`` by a :class:`FastDropout` of the same ``p``."""
    for dropouts, name, layer in _lora_dropouts(model):
        if isinstance(layer, nn.Dropout) and layer.p > 0:
            dropouts[name] = FastDropout(layer.p)


def share_dropout_draws(model: nn.Module) -> None:
    """Wrap each LoRA layer's dropout in a :class:`SharingDropout` over one :class:`SharedDraw`."""
    shared = SharedDraw()
    for dropouts, name, layer in _lora_dropouts(model):
        dropouts[name] = SharingDropout(layer, shared)


def _fused_lora_forward(layer: nn.Module) -> Callable[..., torch.Tensor]:
    """A training forward for a plain ``peft`` LoRA ``Linear``: ``base(x) + s * B(A(drop(x)))`` with the
    scaled up-projection and the addition done by one ``addmm`` (PEFT spends two extra full-size
    element-wise passes on them, forward and backward). Falls back to PEFT's forward whenever the layer
    is merged, disabled or evaluating."""
    original = layer.forward

    def forward(x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        if not layer.training or layer.merged or layer.disable_adapters or args or kwargs:
            return original(x, *args, **kwargs)
        result = layer.base_layer(x)
        for name in layer.active_adapters:
            if name not in layer.lora_A:
                continue
            hidden = F.linear(layer.lora_dropout[name](x), layer.lora_A[name].weight)
            shape = result.shape
            result = torch.addmm(
                result.reshape(-1, shape[-1]),
                hidden.reshape(-1, hidden.shape[-1]),
                layer.lora_B[name].weight.t(),
                alpha=layer.scaling[name],
            ).view(shape)
        return result

    return forward


def use_fused_lora(model: nn.Module) -> int:
    """Install the fused forward on every plain LoRA linear layer; returns how many."""
    from peft.tuners.lora.layer import Linear as LoraLinear

    count = 0
    for module in model.modules():
        if type(module) is not LoraLinear or not isinstance(module.base_layer, nn.Linear):
            continue
        if any(module.lora_bias.values()) or getattr(module, "lora_variant", None) or module.fan_in_fan_out:
            continue
        module.forward = _fused_lora_forward(module)
        count += 1
    return count


_ALLOCATOR_TUNED = False


def tune_allocator() -> None:
    """Keep freed buffers in the process (glibc): saves a page fault storm on every training step.

    Process-wide and lasting: once set it stays for every later run in the process.
    """
    global _ALLOCATOR_TUNED
    if _ALLOCATOR_TUNED or not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 32 * 1024 * 1024)  # M_MMAP_THRESHOLD: serve up to 32 MiB from the heap
        libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD: do not give the heap top back eagerly
        libc.mallopt(-2, 64 * 1024 * 1024)  # M_TOP_PAD
    _ALLOCATOR_TUNED = True


def apply_speedups(model: nn.Module, config: TrainConfig) -> None:
    """The switched-on LoRA-layer speed-ups, on a PEFT model (the allocator is tuned per run)."""
    if config.fast_dropout:
        use_fast_dropout(model)
    if config.shared_dropout:
        share_dropout_draws(model)
    if config.fused_lora:
        use_fused_lora(model)
