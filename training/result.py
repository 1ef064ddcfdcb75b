"""What a training run gives: the model with its best adapter, the figures for the report and metadata,
and, once :func:`training.run.train_persona` has published it, the version it became."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from store.adapters import ExampleCounts
from store.base_model import BaseModel

from .config import TrainConfig

__all__ = ["TrainResult"]


@dataclass
class TrainResult:
    """A finished run. :func:`training.loop.train` fills the run's fields; ``train_persona`` adds the
    published version's and releases the model (``model`` is then ``None``)."""

    model: Any
    """The PEFT model with the best adapter loaded."""
    tokenizer: Any
    config: TrainConfig
    base: BaseModel
    steps: int
    total_steps: int
    epochs: int
    """Passes made (begun) over the training examples; with epochs unset, learning chose them."""
    steps_per_epoch: int
    stopped_early: bool
    best_step: int
    train_loss: float | None
    """Mean loss per trained token over the last epoch's steps."""
    eval_loss_before: float | None
    eval_loss_after: float | None
    history: list[dict[str, float]]
    """One entry per step: step, loss, lr, tokens, targets, seconds."""
    evals: list[dict[str, float]]
    """One entry per evaluation: step, loss."""
    tokens: dict[str, int]
    duration_s: float
    """The training run's time, from loading the data to the best adapter (not publishing)."""
    train_seconds: float
    """Time spent in training steps only (no evaluation or checkpoints)."""
    resumed_from: int | None = None
    stop_reason: str = "all passes"
    """Why the run ended: early stopping, time budget, max_steps or all passes."""
    examples: ExampleCounts | None = None
    """Training examples by origin (real, generated, replay), when the run was given them."""
    preference: dict[str, Any] | None = None
    """The preference stage's figures (steps, pairs, margin, accuracy), when it ran."""
    peak_rss_mb: float | None = None
    """Peak resident memory of the process during the run."""
    peak_cuda_mb: float | None = None
    """Peak CUDA memory allocated during the run (``None`` without CUDA)."""
    name: str | None = None
    """The persona, once published."""
    version: int | None = None
    path: Path | None = None
    data_hash: str | None = None
    total_s: float | None = None
    """Once published: the whole run, examples and publishing included."""

    @property
    def tokens_per_s(self) -> float:
        seen = sum(h["tokens"] for h in self.history)
        seconds = sum(h["seconds"] for h in self.history)
        return seen / seconds if seconds else 0.0

    @property
    def truncated_examples(self) -> int:
        return self.tokens.get("truncated_examples", 0)
