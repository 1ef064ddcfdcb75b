"""Which tokens of an engine step use which adapter slot, worked out once per step for every layer.

vLLM gives one slot index per token (``-1``: the base model, no adapter). Every LoRA layer of the
step reuses the plan, so the per-layer work is a handful of tensor calls whatever the batch holds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

PADDING_LIMIT = 2
"""The padded (batched) form is used while padding at most doubles the rows it multiplies."""

WIDE_ROWS = 48
"""From this many tokens on, a slot's packed weights are widened once and multiplied as matrices
(a long prompt being read); fewer tokens (decoding, short prompts) go through the kernel, which
multiplies up to four of a slot's tokens per pass over its weights."""


@dataclass(frozen=True)
class Group:
    """The tokens of one adapter slot: rows ``start:stop`` when contiguous (``rows`` is None);
    ``whole`` when they are all the step's tokens."""

    slot: int
    start: int
    stop: int
    rows: torch.Tensor | None
    whole: bool = False


@dataclass(frozen=True)
class Padded:
    """The tokens of slots ``first .. first + count - 1`` laid out as ``count`` groups of ``width`` rows.

    ``rows`` gives the token row of each padded position (padding repeats a real row); ``pad``
    marks the padding, whose products are zeroed before they are added back.
    """

    first: int
    count: int
    width: int
    rows: torch.Tensor
    pad: torch.Tensor


@dataclass(frozen=True)
class GroupIndex:
    """Groups as the native op reads them (:mod:`.published`): one ``(slot, first, end)`` row per
    group in ``groups``, ``first:end`` indexing ``rows``, which lists the groups' tokens one after
    another."""

    groups: torch.Tensor
    rows: torch.Tensor


@dataclass(frozen=True)
class Plan:
    """The adapter groups of one step; ``padded`` is set when they are multiplied in one batch.

    ``kernel`` and ``wide`` split the same groups for the packed path: fewer than ``WIDE_ROWS`` tokens
    each (the kernel), and more (matrix products).
    """

    n_tokens: int
    groups: tuple[Group, ...]
    padded: Padded | None = None
    kernel: GroupIndex | None = None
    wide: GroupIndex | None = None


NO_ADAPTER = Plan(n_tokens=0, groups=())


def build_plan(indices: Sequence[int], padding_limit: float = PADDING_LIMIT, packed: bool = False) -> Plan:
    """Group the tokens by slot (``-1`` tokens are left out: they get the base model alone); ``packed``
    adds the split the kernel's path reads (``kernel`` and ``wide``)."""
    by_slot: dict[int, list[int]] = {}
    for row, slot in enumerate(indices):
        if slot >= 0:
            by_slot.setdefault(slot, []).append(row)
    groups = tuple(_group(slot, rows, len(indices)) for slot, rows in sorted(by_slot.items()))
    kernel = wide = None
    if packed:
        few = [(slot, rows) for slot, rows in sorted(by_slot.items()) if len(rows) < WIDE_ROWS]
        many = [(slot, rows) for slot, rows in sorted(by_slot.items()) if len(rows) >= WIDE_ROWS]
        kernel = _group_index(few) if few else None
        wide = _group_index(many) if many else None
    plan = Plan(n_tokens=len(indices), groups=groups, kernel=kernel, wide=wide)
    if len(groups) < 2:
        return plan
    first, last = groups[0].slot, groups[-1].slot
    count = last - first + 1
    width = max(len(rows) for rows in by_slot.values())
    used = sum(len(rows) for rows in by_slot.values())
    if count * width > padding_limit * used:
        return plan  # too sparse: one pair of matmuls per group wastes less
    layout: list[int] = []
    pad: list[bool] = []
    for slot in range(first, last + 1):
        rows = by_slot.get(slot, [])
        filler = rows[0] if rows else groups[0].start
        layout += rows + [filler] * (width - len(rows))
        pad += [False] * len(rows) + [True] * (width - len(rows))
    padded = Padded(
        first=first,
        count=count,
        width=width,
        rows=torch.tensor(layout, dtype=torch.long),
        pad=torch.tensor(pad, dtype=torch.bool).view(count, width, 1),
    )
    return Plan(n_tokens=len(indices), groups=groups, padded=padded, kernel=kernel, wide=wide)


def _group_index(by_slot: list[tuple[int, list[int]]]) -> GroupIndex:
    table: list[int] = []
    rows: list[int] = []
    for slot, tokens in by_slot:
        table += [slot, len(rows), len(rows) + len(tokens)]
        rows += tokens
    return GroupIndex(
        groups=torch.tensor(table, dtype=torch.long).view(-1, 3), rows=torch.tensor(rows, dtype=torch.long)
    )


def _group(slot: int, rows: list[int], n_tokens: int) -> Group:
    start, stop = rows[0], rows[-1] + 1
    contiguous = stop - start == len(rows)
    return Group(
        slot=slot,
        start=start,
        stop=stop,
        rows=None if contiguous else torch.tensor(rows, dtype=torch.long),
        whole=len(rows) == n_tokens,
    )
