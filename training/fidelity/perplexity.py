"""Perplexity of the character's real replies: base alone, base + full card, adapter as served.

The figure is training's held-out loss, computed by training's own code: conversations are encoded
by :func:`training.batches.encode_split` (:func:`store.chat_format.render_conversation`, shared with
serving, and the same shortening of long examples), batched by ``plan_batches``/``collate`` and scored
by :func:`training.model.heldout_loss` (its ``LossPath``: logit scaling, soft-capping and token
weights included). So the gate's perplexity is exp(training's eval loss) on the same examples. One
base model is loaded per evaluation; the adapter is a PEFT wrapper around it, switched off for the
base and card figures, so the three figures differ only in the prompt and the adapter.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Scored", "Scorer", "fit_length"]


@dataclass(frozen=True)
class Scored:
    """Mean cross-entropy per scored token (by token weight) and its exponential."""

    loss: float
    tokens: int
    conversations: int

    @property
    def perplexity(self) -> float:
        return math.exp(self.loss)


def fit_length(tokenizer: Any, messages: Sequence[Mapping[str, Any]], limit: int) -> tuple[list[int], list[float]]:
    """Ids and loss mask of ``messages`` in at most ``limit`` tokens, as training encodes them
    (:func:`training.batches.fit_length`)."""
    from training.batches import fit_length as training_fit_length

    return training_fit_length(tokenizer, messages, limit)


class Scorer:
    """A causal LM (optionally with a PEFT adapter) that scores conversations' trained tokens."""

    def __init__(self, model: Any, tokenizer: Any, *, has_adapter: bool, max_length: int = 1024, batch_size: int = 8):
        from training.batches import pad_id

        self.model = model.eval()
        self.tokenizer = tokenizer
        self.has_adapter = has_adapter
        self.max_length = max_length
        self.batch_size = batch_size
        self.pad_id = pad_id(tokenizer)

    @classmethod
    def load(cls, base_path: Path, adapter_path: Path | None = None, **kwargs: Any) -> Scorer:
        """The base model in float32 on the CPU, with the adapter of a version folder when given."""
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(base_path)
        model = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32)
        if adapter_path is not None:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, adapter_path, is_trainable=False)
        return cls(model, tokenizer, has_adapter=adapter_path is not None, **kwargs)

    def score(self, conversations: Sequence[Sequence[Mapping[str, Any]]], adapter: bool) -> Scored:
        """Mean loss over every trained token of ``conversations``, with or without the adapter: training's
        :func:`~training.model.heldout_loss` on their :func:`~training.batches.encode_split`.

        ``batch_size`` conversations of ``max_length`` tokens make the token budget of one forward pass
        (shorter ones are packed more to a batch)."""
        import contextlib

        from training.batches import encode_split
        from training.model import heldout_loss

        if adapter and not self.has_adapter:
            raise ValueError("this scorer was loaded without an adapter")
        split = encode_split(self.tokenizer, ({"messages": list(c)} for c in conversations), self.max_length)
        tokens = sum(1 for mask in split.masks for weight in mask[1:] if weight > 0)
        if not tokens:
            raise ValueError("no conversation has a reply to score")
        off = self.model.disable_adapter() if self.has_adapter and not adapter else contextlib.nullcontext()
        with off:
            loss = heldout_loss(self.model, split, self.batch_size * self.max_length, self.pad_id)
        return Scored(loss=float(loss), tokens=tokens, conversations=len(split))
