"""Perplexity of the character's real replies: base alone, base + full card, adapter as served.

Conversations are rendered by :func:`store.chat_format.render_conversation`, the code training and
serving share, so a reply is scored on exactly the tokens the adapter learned and the server sends;
its loss mask picks the scored tokens (the character's reply and its end-of-turn token). One base
model is loaded per evaluation; the adapter is a PEFT wrapper around it, switched off for the base
and card figures, so the three figures differ only in the prompt and the adapter.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from store.chat_format import render_conversation, trained

__all__ = ["Scored", "Scorer", "fit_length"]


@dataclass(frozen=True)
class Scored:
    """Mean cross-entropy per scored token and its exponential."""

    loss: float
    tokens: int
    conversations: int

    @property
    def perplexity(self) -> float:
        return math.exp(self.loss)


def fit_length(tokenizer: Any, messages: Sequence[Mapping[str, Any]], limit: int) -> tuple[list[int], list[int]]:
    """Ids and loss mask of ``messages`` in at most ``limit`` tokens: the oldest context turns go first
    (the system prompt stays), then tokens from the left; the scored reply's end is always kept."""
    messages = list(messages)
    ids, mask = render_conversation(tokenizer, messages)
    first = 1 if messages and messages[0].get("role") == "system" else 0
    while len(ids) > limit and first < len(messages) - 1 and not trained(messages[first]):
        del messages[first]
        ids, mask = render_conversation(tokenizer, messages)
    if len(ids) > limit:
        end = max(max((i for i, m in enumerate(mask) if m), default=len(ids) - 1) + 1, limit)
        ids, mask = ids[end - limit : end], mask[end - limit : end]
    return ids, mask


class Scorer:
    """A causal LM (optionally with a PEFT adapter) that scores conversations' trained tokens."""

    def __init__(self, model: Any, tokenizer: Any, *, has_adapter: bool, max_length: int = 1024, batch_size: int = 8):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.has_adapter = has_adapter
        self.max_length = max_length
        self.batch_size = batch_size
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.pad_id = int(pad if pad is not None else 0)

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
        """Mean loss over every trained token of ``conversations``, with or without the adapter."""
        import contextlib

        if adapter and not self.has_adapter:
            raise ValueError("this scorer was loaded without an adapter")
        encoded = [fit_length(self.tokenizer, c, self.max_length) for c in conversations]
        encoded = [(ids, mask) for ids, mask in encoded if any(mask[1:])]
        if not encoded:
            raise ValueError("no conversation has a reply to score")
        off = self.model.disable_adapter() if self.has_adapter and not adapter else contextlib.nullcontext()
        total, count = 0.0, 0
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i][0]))
        with off:
            for start in range(0, len(order), self.batch_size):
                batch = [encoded[i] for i in order[start : start + self.batch_size]]
                loss_sum, tokens = self._loss_sum(batch)
                total += loss_sum
                count += tokens
        return Scored(loss=total / count, tokens=count, conversations=len(encoded))

    def _loss_sum(self, batch: list[tuple[list[int], list[int]]]) -> tuple[float, int]:
        """Summed cross-entropy of the masked tokens, projecting only their hidden states to logits."""
        import torch
        import torch.nn.functional as F

        width = max(len(ids) for ids, _ in batch)
        input_ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((len(batch), width), dtype=torch.long)
        scored = torch.zeros((len(batch), width), dtype=torch.bool)
        for row, (ids, mask) in enumerate(batch):
            input_ids[row, : len(ids)] = torch.tensor(ids)
            attention[row, : len(ids)] = 1
            scored[row, : len(ids)] = torch.tensor(mask, dtype=torch.bool)
        # A token at position t is predicted from the hidden state at t - 1.
        predict_from = scored[:, 1:]
        targets = input_ids[:, 1:][predict_from]
        inner = self.model.get_base_model() if self.has_adapter else self.model
        with torch.inference_mode():
            decoded = inner.get_decoder()(input_ids=input_ids, attention_mask=attention, use_cache=False)
            hidden = decoded.last_hidden_state
            logits = inner.get_output_embeddings()(hidden[:, :-1][predict_from])
            cap = getattr(inner.config, "final_logit_softcapping", None)
            if cap:
                logits = torch.tanh(logits / cap) * cap
            loss = F.cross_entropy(logits.float(), targets, reduction="sum")
        return float(loss), int(targets.numel())
