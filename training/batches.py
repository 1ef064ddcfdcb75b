"""Examples to token batches: render and tokenize once, group by length under a token budget, collate.

Padding goes on the right and no attention mask is built: with causal attention no real token can
see a later (pad) position, so the model runs its plain causal kernel. Each batch carries only the
positions whose next token is trained, those tokens and their weights (1 for a real reply, less for
a generated one), which is all the loss needs.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from . import torch_env  # noqa: F401  (process options torch reads when it loads)

# isort: split
import torch

from store.chat_format import RenderError, render_conversation, trained

from .config import TrainingError

__all__ = [
    "Batch",
    "EncodedSplit",
    "collate",
    "encode_split",
    "fit_length",
    "pad_id",
    "plan_batches",
    "session_parts",
]


@dataclass
class EncodedSplit:
    """A split rendered and tokenized once: ids and loss masks (per-token weights) per example, and
    their counts."""

    ids: list[list[int]]
    masks: list[list[float]]
    truncated: int = 0
    """Examples over ``max_seq_length`` that lost context (they are kept)."""
    skipped: int = 0
    """Examples with no trained token (nothing to learn from them)."""

    @property
    def lengths(self) -> list[int]:
        return [len(i) for i in self.ids]

    @property
    def tokens(self) -> int:
        return sum(len(i) for i in self.ids)

    @property
    def target_tokens(self) -> int:
        """Trained tokens, whatever their weight."""
        return sum(sum(1 for w in m if w > 0) for m in self.masks)

    def __len__(self) -> int:
        return len(self.ids)

    def digest(self) -> str:
        """Identifies the exact token data (a checkpoint is only resumed on the same data)."""
        h = hashlib.sha256()
        for ids, mask in zip(self.ids, self.masks):
            h.update(json.dumps([ids, mask], separators=(",", ":")).encode())
        return h.hexdigest()


def encode_split(tokenizer: Any, rows: Iterable[Mapping[str, Any]] | None, max_seq_length: int) -> EncodedSplit:
    """Render and tokenize every row (``{"messages": [...]}``) with the base tokenizer's template.

    An example longer than ``max_seq_length`` first loses its oldest context turns (the system prompt
    stays), then tokens from the left; the target reply is always kept (its end, if it alone is too
    long). Such examples are counted in ``truncated``. A row with several trained replies (a whole
    session) is first cut into parts (:func:`session_parts`), each an example.
    """
    out = EncodedSplit(ids=[], masks=[])
    for number, row in enumerate(rows if rows is not None else []):
        try:
            encoded = _encode_row(tokenizer, list(row["messages"]), max_seq_length)
        except RenderError as exc:
            raise TrainingError(f"example {number} (session {row.get('session', '?')}): {exc}") from exc
        for ids, mask, shortened in encoded:
            if not any(mask):
                out.skipped += 1
                continue
            out.truncated += shortened
            out.ids.append(ids)
            out.masks.append(mask)
    return out


def _encode_row(tokenizer: Any, messages: list[dict], limit: int) -> list[tuple[list[int], list[float], bool]]:
    """(ids, mask, whether context was cut) of each part of a row: one part unless a row with several
    trained replies (a whole session) is too long, which is cut at turn boundaries first."""
    ids, mask = render_conversation(tokenizer, messages)
    if len(ids) <= limit:
        return [(ids, mask, False)]
    if sum(1 for m in messages if trained(m)) < 2:
        return [(*_shorten(tokenizer, messages, ids, mask, limit), True)]
    out = []
    for part in session_parts(tokenizer, messages, limit):
        ids, mask = render_conversation(tokenizer, part)
        out.append((*_shorten(tokenizer, part, ids, mask, limit), True) if len(ids) > limit else (ids, mask, False))
    return out


def session_parts(tokenizer: Any, messages: Sequence[Mapping[str, Any]], limit: int) -> list[list[dict]]:
    """A conversation with several trained replies cut at turn boundaries into parts that fit in
    ``limit`` tokens where a turn allows it. Each trained reply is in exactly one part; each part
    keeps the system prompt, and the user turn a part's first reply answers is repeated as context."""
    system = [dict(messages[0])] if messages and messages[0].get("role") == "system" else []
    turns = [dict(m) for m in messages[len(system) :]]
    parts: list[list[dict]] = []
    start = 0
    while start < len(turns):
        end = start + 1
        if turns[start].get("role") == "user" and end < len(turns) and turns[end].get("role") == "assistant":
            end += 1  # a reply never starts a part without the user turn it answers
        while end < len(turns) and len(render_conversation(tokenizer, system + turns[start : end + 1])[0]) <= limit:
            end += 1
        last = max((i for i in range(start, end) if trained(turns[i])), default=None)
        if last is not None:  # what follows the last reply is the next part's context
            parts.append(system + turns[start : last + 1])
        if end >= len(turns):
            break
        answers = turns[end].get("role") == "assistant" and turns[end - 1].get("role") == "user"
        start = end - 1 if answers and end - 1 > start else end
    return parts


def fit_length(tokenizer: Any, messages: Sequence[Mapping[str, Any]], limit: int) -> tuple[list[int], list[float]]:
    """Ids and loss mask of ``messages`` in at most ``limit`` tokens, as training sees them: the oldest
    context turns go first (the system prompt stays), then tokens from the left; the end of the
    trained reply is always kept."""
    ids, mask = render_conversation(tokenizer, list(messages))
    return _shorten(tokenizer, list(messages), ids, mask, limit) if len(ids) > limit else (ids, mask)


def _shorten(tokenizer: Any, messages: list[dict], ids: list[int], mask: list[float], limit: int):
    """Fit a rendered example into ``limit`` tokens (see :func:`fit_length`)."""
    first = 1 if messages and messages[0].get("role") == "system" else 0
    trimmed = list(messages)
    while len(ids) > limit and first < len(trimmed) - 1 and not trained(trimmed[first]):
        if first == 0 and trained(trimmed[1]):
            break  # with no system message, the reply needs a turn before it to be rendered at all
        del trimmed[first]
        ids, mask = render_conversation(tokenizer, trimmed)
    if len(ids) > limit:
        # End at the last trained token (the end-of-turn token), so the target's end is always kept.
        end = max((i for i, m in enumerate(mask) if m), default=len(ids) - 1) + 1
        end = max(end, limit)
        ids, mask = ids[end - limit : end], mask[end - limit : end]
    return ids, mask


def plan_batches(lengths: Sequence[int], batch_tokens: int, seed: int, epoch: int) -> list[list[int]]:
    """Batches of example indices for one epoch: length-sorted, packed to ``batch_tokens``, shuffled.

    Similar lengths share a batch, so almost no compute goes to padding; the batch order is shuffled
    every epoch and the grouping varies among examples of equal length. The same (lengths, budget,
    seed, epoch) always gives the same batches; the number of batches depends only on the lengths and
    the budget, so it is the same every epoch.
    """
    rng = random.Random(f"{seed}:{epoch}")
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], rng.random()))
    batches: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for index in order:
        length = lengths[index]
        if current and max(longest, length) * (len(current) + 1) > batch_tokens:
            batches.append(current)
            current, longest = [], 0
        current.append(index)
        longest = max(longest, length)
    if current:
        batches.append(current)
    rng.shuffle(batches)
    return batches


@dataclass
class Batch:
    """Right-padded ids, and where the loss is taken with what weight."""

    input_ids: torch.Tensor
    """[B, L], right-padded."""
    positions: torch.Tensor
    """Flat indices into [B*L] of the hidden states that predict a trained token."""
    labels: torch.Tensor
    """The trained tokens, aligned with ``positions``."""
    weights: torch.Tensor
    """Each trained token's weight in the loss, aligned with ``positions``."""
    tokens: int
    """Real (unpadded) tokens."""
    targets: int
    weight_total: float
    """Sum of ``weights``: the loss is the weighted sum of cross-entropies divided by it."""


def pad_id(tokenizer: Any) -> int:
    """The id padding uses: the tokenizer's pad token, else its end-of-sequence token."""
    if tokenizer.pad_token_id is not None:
        return tokenizer.pad_token_id
    return tokenizer.eos_token_id or 0


def collate(split: EncodedSplit, indices: Sequence[int], pad: int, device: torch.device | None = None) -> Batch:
    """One batch of the examples at ``indices``, on ``device``."""
    width = max(len(split.ids[i]) for i in indices)
    input_ids = torch.full((len(indices), width), pad, dtype=torch.long)
    positions: list[int] = []
    labels: list[int] = []
    weights: list[float] = []
    tokens = 0
    for row, index in enumerate(indices):
        ids, mask = split.ids[index], split.masks[index]
        input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        tokens += len(ids)
        base = row * width
        for t in range(1, len(ids)):
            if mask[t] > 0:
                positions.append(base + t - 1)
                labels.append(ids[t])
                weights.append(float(mask[t]))
    positions_t = torch.tensor(positions, dtype=torch.long)
    labels_t = torch.tensor(labels, dtype=torch.long)
    weights_t = torch.tensor(weights, dtype=torch.float32)
    if device is not None and device.type != "cpu":
        input_ids, positions_t, labels_t = input_ids.to(device), positions_t.to(device), labels_t.to(device)
        weights_t = weights_t.to(device)
    return Batch(
        input_ids=input_ids,
        positions=positions_t,
        labels=labels_t,
        weights=weights_t,
        tokens=tokens,
        targets=len(labels),
        weight_total=float(sum(weights)),
    )
