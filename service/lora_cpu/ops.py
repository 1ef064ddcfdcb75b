"""Grouped LoRA products: a fixed number of calls per projection.

vLLM keeps each packed slice's weights apart (``lora_a_stacked[s]``: slots x 1 x rank x in,
``lora_b_stacked[s]``: slots x 1 x out_s x rank). Here they are fused per slot once, when the slot
changes, in one of two layouts:

- :class:`Fused`, in the layer's dtype for plain PyTorch: A of every slice stacked
  (slots x S*rank x in) and B laid out block-diagonally (slots x S*rank x sum(out_s)). One shrink
  and one expand then serve q/k/v or gate/up at once.
- :class:`PackedFused`, for float32 layers with the kernel (:mod:`.kernel`): the same A and B's
  slices side by side (slots x rank x sum(out_s)), both in int8 (a scale per row) or float16: a
  decoding step reads a sixth (a third) of the bytes of the float32 block-diagonal layout.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import accumulate

import torch

from .plan import Plan

HALF_HEADROOM = 14
"""A slot's weights are scaled so that their largest magnitude is at most 2**HALF_HEADROOM: well
inside float16's range (65504), and with the small weights of a lightly trained adapter kept above
its smallest normal number."""


@dataclass
class Fused:
    """One layer's adapters in the fused layout, in the dtype the layer computes in."""

    a: torch.Tensor | None  # slots x S*rank x in; None for expand-only layers (embeddings)
    b: torch.Tensor  # slots x S*rank x out
    nonzero: list[bool]  # per slot: whether the adapter touches this layer at all
    layout: tuple = field(default=())  # the slot layout these weights were copied for
    a_t: list = field(default_factory=list)  # per slot: a[slot].t() (views made once: indexing costs)
    b_slot: list = field(default_factory=list)  # per slot: b[slot]

    def __post_init__(self) -> None:
        self.out = self.b.shape[2]
        self.a_t = [None if self.a is None else self.a[slot].t() for slot in range(self.b.shape[0])]
        self.b_slot = list(self.b.unbind(0))


def fuse_slot(
    fused: Fused, slot: int, a_stacked: Sequence[torch.Tensor] | None, b_stacked: Sequence[torch.Tensor]
) -> None:
    """Copy one slot's weights from vLLM's stacked tensors into ``fused``."""
    rank = b_stacked[0].shape[-1]
    fused.b[slot].zero_()
    column = 0
    for s, b in enumerate(b_stacked):
        out = b.shape[2]
        fused.b[slot, s * rank : (s + 1) * rank, column : column + out].copy_(b[slot, 0].t())
        column += out
    touched = any(bool(b[slot].any()) for b in b_stacked)
    if a_stacked is not None:
        assert fused.a is not None
        fused.a[slot].copy_(torch.cat([a[slot, 0] for a in a_stacked], dim=0))
        touched = touched and any(bool(a[slot].any()) for a in a_stacked)
    fused.nonzero[slot] = touched


def new_fused(a_stacked: Sequence[torch.Tensor] | None, b_stacked: Sequence[torch.Tensor], dtype: torch.dtype) -> Fused:
    slots, rank = b_stacked[0].shape[0], b_stacked[0].shape[-1]
    width = rank * len(b_stacked)
    out = sum(b.shape[2] for b in b_stacked)
    a = None
    if a_stacked is not None:
        a = torch.zeros(slots, width, a_stacked[0].shape[-1], dtype=dtype, device=b_stacked[0].device)
    b = torch.zeros(slots, width, out, dtype=dtype, device=b_stacked[0].device)
    return Fused(a=a, b=b, nonzero=[False] * slots)


@dataclass
class PackedFused:
    """One layer's adapters in int8 or float16 for the kernel: A's rows and B's slices side by side,
    ``row_scales[slot, w]`` what A's row ``w`` times B's matching rank row were divided by."""

    a: torch.Tensor  # slots x S*rank x in
    b: torch.Tensor  # slots x rank x sum(out_s): the slices side by side
    ends: torch.Tensor  # int64: the column after each slice in b
    row_scales: torch.Tensor  # float32, slots x S*rank
    nonzero: list[bool]
    layout: tuple = field(default=())


def new_packed_fused(
    a_stacked: Sequence[torch.Tensor], b_stacked: Sequence[torch.Tensor], dtype: torch.dtype
) -> PackedFused:
    slots, rank, inputs = a_stacked[0].shape[0], a_stacked[0].shape[2], a_stacked[0].shape[3]
    ends = list(accumulate(b.shape[2] for b in b_stacked))
    width = rank * len(a_stacked)
    return PackedFused(
        a=torch.zeros(slots, width, inputs, dtype=dtype),
        b=torch.zeros(slots, rank, ends[-1], dtype=dtype),
        ends=torch.tensor(ends, dtype=torch.long),
        row_scales=torch.ones(slots, width, dtype=torch.float32),
        nonzero=[False] * slots,
    )


def largest_magnitude(weights: torch.Tensor) -> float:
    """One pass over ``weights``, without a temporary."""
    low, high = torch.aminmax(weights)
    return max(-float(low), float(high))


def power_of_two_scale(largest: float) -> float:
    """What to divide weights whose largest magnitude is ``largest`` by, to bring it to about
    ``2**HALF_HEADROOM`` (1 for zeros)."""
    if largest == 0 or not math.isfinite(largest):
        return 1.0
    return 2.0 ** (math.ceil(math.log2(largest)) - HALF_HEADROOM)


def fuse_packed_slot(
    fused: PackedFused, slot: int, a_stacked: Sequence[torch.Tensor], b_stacked: Sequence[torch.Tensor]
) -> None:
    """Copy one slot's weights from vLLM's stacked tensors into ``fused``: in int8 each row of A and
    each rank row of a slice of B with a scale of its own, in float16 all scaled by one power of two."""
    if fused.a.dtype == torch.int8:
        pack = torch.ops.persona_lora_kernels.pack_slot
        fused.nonzero[slot] = pack(list(a_stacked), list(b_stacked), slot, fused.a, fused.b, fused.row_scales)
        return
    a = torch.cat([a[slot, 0] for a in a_stacked], dim=0).float()  # new tensors: scaled in place
    b = torch.cat([b[slot, 0] for b in b_stacked], dim=0).t().float()
    a_largest, b_largest = largest_magnitude(a), largest_magnitude(b)
    a_scale, b_scale = power_of_two_scale(a_largest), power_of_two_scale(b_largest)
    fused.a[slot].copy_(a.mul_(1 / a_scale))
    fused.b[slot].copy_(b.mul_(1 / b_scale))
    fused.row_scales[slot] = a_scale * b_scale
    fused.nonzero[slot] = a_largest > 0 and b_largest > 0


class FusedCache:
    """Fused weights per layer, refreshed slot by slot when vLLM puts another adapter in a slot.

    Layers are told apart by the storage of their first stacked tensor (a compiled graph may hand
    over a different tensor object for the same storage). vLLM writes a slot's weights before it
    announces the new slot layout, and never changes the weights of a loaded adapter id.
    """

    def __init__(self, on_packed: Callable[[torch.Tensor, int, PackedFused], None] | None = None) -> None:
        self.layout: tuple = ()
        self.version = 0
        """Counts the slot layouts: weights are published to the kernel's op with the one they hold."""
        self.on_packed = on_packed
        """Called with a layer's first stacked tensor, the version and its packed weights when they change."""
        self._entries: dict[tuple, Fused] = {}

    def set_layout(self, layout: tuple) -> None:
        """The slots now hold the adapters ``layout`` names (vLLM has written their weights)."""
        if layout != self.layout:
            self.layout = layout  # a new object: cached weights compare by identity first
            self.version += 1

    def get(
        self, a_stacked: Sequence[torch.Tensor] | None, b_stacked: Sequence[torch.Tensor], dtype: torch.dtype
    ) -> Fused:
        """The layer's weights in the :class:`Fused` layout, in ``dtype``."""
        return self._current(a_stacked, b_stacked, dtype)

    def get_packed(
        self, a_stacked: Sequence[torch.Tensor], b_stacked: Sequence[torch.Tensor], dtype: torch.dtype
    ) -> PackedFused:
        """The layer's weights in the :class:`PackedFused` layout, in ``dtype`` (int8 or float16)."""
        return self._current(a_stacked, b_stacked, dtype, packed=True)

    def _current(self, a_stacked, b_stacked, dtype: torch.dtype, packed: bool = False):
        first = b_stacked[0] if a_stacked is None else a_stacked[0]
        key = (first.data_ptr(), dtype, packed)
        fused = self._entries.get(key)
        if fused is not None and fused.layout is self.layout:
            return fused
        fuse = fuse_packed_slot if packed else fuse_slot
        if fused is None:  # zeros: only the slots that hold an adapter need copying
            make = new_packed_fused if packed else new_fused
            fused = self._entries[key] = make(a_stacked, b_stacked, dtype)
            changed = [s for s in range(len(fused.nonzero)) if s >= len(self.layout) or self.layout[s] is not None]
        else:
            old = fused.layout
            changed = [s for s in range(len(fused.nonzero)) if s >= len(old) or old[s] != self.layout[s]]
        with torch.no_grad():
            for slot in changed:
                fuse(fused, slot, a_stacked, b_stacked)
        fused.layout = self.layout
        if packed and self.on_packed is not None:
            self.on_packed(first, self.version, fused)
        return fused


def add_lora(y: torch.Tensor, x: torch.Tensor, fused: Fused, plan: Plan, scale: float = 1.0) -> None:
    """``y[t] += scale * (x[t] @ A[slot]^T) @ B[slot]`` for every token ``t`` with an adapter slot.

    Without ``fused.a`` (embeddings) ``x`` is already the shrunk input and only B is applied.
    Only the first ``min(y width, B width)`` columns are written (vocabularies may be padded).
    """
    groups = plan.groups
    if not groups:
        return
    if len(groups) == 1 and groups[0].whole and y.shape[1] == fused.out:  # one adapter for every token
        slot = groups[0].slot
        if fused.nonzero[slot]:
            a_t = fused.a_t[slot]
            y.addmm_(x if a_t is None else torch.mm(x, a_t), fused.b_slot[slot], alpha=scale)
        return
    width = min(fused.b.shape[2], y.shape[1])
    b_all = fused.b if width == fused.b.shape[2] else fused.b[:, :, :width]
    target = y if width == y.shape[1] else y[:, :width]
    padded = plan.padded
    if padded is not None:
        slots = slice(padded.first, padded.first + padded.count)
        if not any(fused.nonzero[slots]):
            return
        h = x.index_select(0, padded.rows).view(padded.count, padded.width, x.shape[1])
        if fused.a is not None:
            h = torch.bmm(h, fused.a[slots].transpose(1, 2))
        h = h.masked_fill(padded.pad, 0)
        out = torch.bmm(h, b_all[slots])
        target.index_add_(0, padded.rows, out.view(-1, width), alpha=scale)
        return
    for group in plan.groups:
        if not fused.nonzero[group.slot]:
            continue
        b = b_all[group.slot]
        if group.rows is None:
            h = x[group.start : group.stop]
            if fused.a is not None:
                h = torch.mm(h, fused.a[group.slot].t())
            target[group.start : group.stop].addmm_(h, b, alpha=scale)
        else:
            h = x.index_select(0, group.rows)
            if fused.a is not None:
                h = torch.mm(h, fused.a[group.slot].t())
            target.index_add_(0, group.rows, torch.mm(h, b), alpha=scale)
