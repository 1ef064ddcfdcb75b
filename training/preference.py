"""The preference stage: DPO on the supervised LoRA, the character's real reply preferred to a generic one.

    pairs = preference_pairs(rows, rejected)          # rows: one example per reply, the reply last
    stage = PreferenceRecipe(model, tokenizer, config); stage.setup(pairs); figures = stage.train()

The loss is DPO's sigmoid loss, as TRL's ``DPOTrainer`` computes it (``loss_type="sigmoid"``) with
``precompute_ref_log_probs=True``: the reference log-probabilities are those of the supervised adapter,
taken once before the stage, so neither a second copy of the model nor a second adapter is needed.
With ``preference_sft_weight`` the real reply's own negative log-likelihood per token is added, as
TRL's ``rpo_alpha`` adds it, so that the real replies stay likely while the generic ones fall.
``DPOTrainer`` itself is not used: it drives its own ``transformers.Trainer`` (schedule, checkpoints,
datasets, logging), which would run beside this project's loop, progress reports and yielding rather
than inside them, for a loss of three lines.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from . import torch_env  # noqa: F401  (process options torch reads when it loads)

# isort: split
import torch
import torch.nn.functional as F

from store.chat_format import render_conversation
from store.progress import TrainingProgress

from .batches import EncodedSplit, collate, pad_id, plan_batches
from .config import TrainConfig, TrainingError
from .model import LossPath, model_device

__all__ = ["Pair", "PreferenceRecipe", "last_user_turns", "preference_pairs", "prompt_turns"]


@dataclass(frozen=True)
class Pair:
    """The turns before a reply, the reply preferred (the character's) and the one rejected."""

    prompt: tuple[dict[str, str], ...]
    chosen: str
    rejected: str


def prompt_turns(rows: Sequence[dict[str, Any]]) -> list[tuple[tuple[dict[str, str], ...], str]]:
    """(the turns before the reply, the reply) of each example that ends with a reply after a user turn."""
    out = []
    for row in rows:
        messages = list(row["messages"])
        if len(messages) < 2 or messages[-1]["role"] != "assistant" or not messages[-1]["content"].strip():
            continue
        before = tuple({"role": m["role"], "content": m["content"]} for m in messages[:-1])
        if any(m["role"] == "user" for m in before):
            out.append((before, messages[-1]["content"]))
    return out


def last_user_turns(turns: Sequence[tuple[tuple[dict[str, str], ...], str]]) -> list[str]:
    """The last user message before each reply: what the generic voice is asked to answer."""
    return [next(m["content"] for m in reversed(before) if m["role"] == "user") for before, _ in turns]


def preference_pairs(turns: Sequence[tuple[tuple[dict[str, str], ...], str]], rejected: Sequence[str]) -> list[Pair]:
    """Pairs of the real reply and the generic one, leaving out empty or identical generic replies."""
    if len(rejected) != len(turns):
        raise TrainingError(f"{len(rejected)} rejected replies for {len(turns)} preference pairs")
    return [
        Pair(before, chosen, other)
        for (before, chosen), other in zip(turns, rejected)
        if other.strip() and other.strip() != chosen.strip()
    ]


@dataclass
class _Encoded:
    ids: list[int]
    trained: list[bool]


def _encode(tokenizer: Any, prompt: Sequence[dict[str, str]], reply: str, max_length: int) -> _Encoded:
    messages = [{**m, "weight": 0.0} for m in prompt] + [{"role": "assistant", "content": reply, "weight": 1.0}]
    ids, weights = render_conversation(tokenizer, messages)
    ids, weights = ids[-max_length:], weights[-max_length:]
    return _Encoded(list(ids), [w > 0 for w in weights])


def sequence_logps(model: Any, rows: Sequence[_Encoded], pad: int) -> torch.Tensor:
    """Summed log-probabilities of each row's trained tokens (the reply), one value per row. The output
    head runs on the trained positions only: a vocabulary of logits for every position of every row
    would take gigabytes for a real persona's pairs."""
    split = EncodedSplit(ids=[r.ids for r in rows], masks=[[1.0 if t else 0.0 for t in r.trained] for r in rows])
    batch = collate(split, range(len(rows)), pad, model_device(model))
    logps = -LossPath(model).token_losses(batch)
    row_of = torch.div(batch.positions, batch.input_ids.shape[1], rounding_mode="floor")
    return torch.zeros(len(rows), dtype=logps.dtype, device=logps.device).index_add(0, row_of, logps)


def dpo_loss(
    chosen: torch.Tensor, rejected: torch.Tensor, ref_chosen: torch.Tensor, ref_rejected: torch.Tensor, beta: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """DPO's sigmoid loss and each pair's margin (how much more the adapter prefers the real reply
    than the reference does), as TRL computes them."""
    margin = (chosen - ref_chosen) - (rejected - ref_rejected)
    return -F.logsigmoid(beta * margin).mean(), margin.detach()


class PreferenceRecipe:
    """The DPO stage on a trained PEFT model; ``setup`` then ``train``. Works on the active adapter."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        config: TrainConfig,
        *,
        on_step: Callable[[TrainingProgress], None] | None = None,
        description: str = "preference",
    ) -> None:
        self.model, self.tokenizer, self.config = model, tokenizer, config
        self.on_step, self.description = on_step, description

    def setup(self, pairs: Sequence[Pair]) -> None:
        """Encode the pairs, take the reference (the adapter as it is now) log-probabilities, make the optimizer."""
        if not pairs:
            raise TrainingError("no preference pairs: no reply with a generic answer to prefer it to")
        config = self.config
        self.started = time.perf_counter()
        self.pad = pad_id(self.tokenizer)
        length = config.max_seq_length
        self.chosen = [_encode(self.tokenizer, p.prompt, p.chosen, length) for p in pairs]
        self.rejected = [_encode(self.tokenizer, p.prompt, p.rejected, length) for p in pairs]
        self.per_step = config.preference_pairs_per_step
        self.steps_per_epoch = math.ceil(len(pairs) / self.per_step)
        self.total_steps = config.preference_epochs * self.steps_per_epoch
        if config.preference_max_steps is not None:
            self.total_steps = min(self.total_steps, config.preference_max_steps)
        self.ref_chosen, self.ref_rejected = self.logps(range(len(pairs)), grad=False)
        self.trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.trainable, lr=config.preference_learning_rate, weight_decay=0.0)
        self.history: list[dict[str, float]] = []

    def logps(self, indices: Sequence[int], grad: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """The adapter's log-probabilities of the chosen and rejected replies of the pairs at ``indices``:
        one batch for a training step, batches of ``batch_tokens`` without gradients (all the pairs)."""
        rows = [self.chosen[i] for i in indices] + [self.rejected[i] for i in indices]
        if grad:
            out = sequence_logps(self.model, rows, self.pad)
        else:
            self.model.eval()
            try:
                with torch.inference_mode():
                    out = torch.empty(len(rows), device=model_device(self.model))
                    for part in plan_batches([len(r.ids) for r in rows], self.config.batch_tokens, 0, 0):
                        out[part] = sequence_logps(self.model, [rows[i] for i in part], self.pad)
            finally:
                self.model.train()
        return out[: len(indices)], out[len(indices) :]

    def margins(self) -> torch.Tensor:
        """Each pair's current margin over the reference (0 before the stage)."""
        chosen, rejected = self.logps(range(len(self.chosen)), grad=False)
        return (chosen - self.ref_chosen) - (rejected - self.ref_rejected)

    def train(self) -> dict[str, Any]:
        """Run the stage; returns its figures (steps, loss, mean margin and reward accuracy at the end)."""
        config, step = self.config, 0
        order = list(range(len(self.chosen)))
        rng = random.Random(config.seed)
        while step < self.total_steps:
            rng.shuffle(order)
            for start in range(0, len(order), self.per_step):
                if step >= self.total_steps:
                    break
                step += 1
                self.step(step, order[start : start + self.per_step])
        margins = self.margins()
        return {
            "steps": step,
            "pairs": len(self.chosen),
            "beta": config.preference_beta,
            "sft_weight": config.preference_sft_weight,
            "rejected": config.preference_rejected,
            "loss": self.history[-1]["loss"] if self.history else None,
            "margin": round(float(margins.mean()), 5),
            "accuracy": round(float((margins > 0).float().mean()), 5),
            "seconds": round(time.perf_counter() - self.started, 1),
        }

    def step(self, number: int, indices: list[int]) -> None:
        started = time.perf_counter()
        chosen, rejected = self.logps(indices)
        loss, margin = dpo_loss(
            chosen, rejected, self.ref_chosen[indices], self.ref_rejected[indices], self.config.preference_beta
        )
        if self.config.preference_sft_weight:
            tokens = sum(sum(self.chosen[i].trained) for i in indices) or 1
            loss = loss - self.config.preference_sft_weight * chosen.sum() / tokens
        loss.backward()
        if self.config.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.trainable, self.config.max_grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        value = float(loss.detach())
        if not math.isfinite(value):
            raise TrainingError(f"preference training diverged at step {number}; lower preference_learning_rate")
        self.history.append({"step": number, "loss": value, "margin": float(margin.mean())})
        if self.on_step:
            per_step = (time.perf_counter() - started) or None
            self.on_step(
                TrainingProgress(
                    state="running",
                    step=number,
                    total_steps=self.total_steps,
                    train_loss=value,
                    elapsed_s=round(time.perf_counter() - self.started, 1),
                    eta_s=round(per_step * (self.total_steps - number), 1) if per_step else None,
                    message=self.description,
                )
            )
