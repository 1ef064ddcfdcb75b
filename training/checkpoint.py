"""Resumable checkpoints of a training run, and the lock that keeps two runs of one persona apart.

A checkpoint is one file, ``checkpoint.pt`` in the run's work folder, replaced atomically: what the
run was made from (base model, token data, settings) and its :class:`TrainState`. A run resumes from
it only when all three are the same, so a resumed run goes on exactly as the interrupted one would.
"""

from __future__ import annotations

import contextlib
import fcntl
import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from . import torch_env  # noqa: F401  (process options torch reads when it loads)

# isort: split
import torch
from torch import nn

from store.adapters import AdapterMetadata
from store.base_model import BaseModel
from store.files import atomic_writer
from store.registry import check_same_base

from .config import TrainConfig, TrainingError

__all__ = [
    "CHECKPOINT_FILE",
    "CheckpointMismatch",
    "Record",
    "TrainState",
    "load_checkpoint",
    "run_meta",
    "save_checkpoint",
    "work_lock",
]

CHECKPOINT_FILE = "checkpoint.pt"
CHECKPOINT_FORMAT = 1


@dataclass
class Record:
    """The loop's own bookkeeping: where it is, what it saw, the best adapter so far."""

    step: int = 0
    epoch: int = 0
    batch_index: int = 0
    """Batches of the current epoch already trained."""
    history: list[dict[str, float]] = field(default_factory=list)
    """One entry per step: step, loss, lr, tokens, targets, seconds."""
    evals: list[dict[str, float]] = field(default_factory=list)
    """One entry per evaluation: step, loss."""
    best_loss: float | None = None
    best_step: int = 0
    best_state: dict[str, torch.Tensor] | None = None
    """The LoRA weights with the best held-out loss (what gets published)."""
    stale: int = 0
    """Evaluations since the held-out loss last improved."""
    eval_before: float | None = None
    stopped_early: bool = False
    spent_s: float = 0.0
    """Seconds spent on steps and evaluations, what the time budget counts (carried across a resume)."""
    out_of_time: bool = False
    """The time budget ended the run."""


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """A CPU copy of the weights being trained (the LoRA)."""
    return {n: p.detach().to("cpu", copy=True) for n, p in model.named_parameters() if p.requires_grad}


def load_trainable(model: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in state.items():
            params[name].copy_(value)


@dataclass
class TrainState:
    """Everything a run needs to go on where it stopped: the LoRA, the optimizer and schedule, the
    random generators and the :class:`Record`."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    record: Record = field(default_factory=Record)

    def state_dict(self) -> dict[str, Any]:
        return {
            "lora": trainable_state(self.model),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": {
                "torch": torch.get_rng_state(),
                "python": random.getstate(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            },
            **{f.name: getattr(self.record, f.name) for f in fields(Record)},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        load_trainable(self.model, state["lora"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"]["torch"])
        random.setstate(state["rng"]["python"])
        if state["rng"]["cuda"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        self.record = Record(**{f.name: state[f.name] for f in fields(Record) if f.name in state})


def run_meta(base: BaseModel, config: TrainConfig, data_digest: str) -> dict[str, Any]:
    """What a checkpoint was made from; a resumed run must match it."""
    return {"base_model": base.id, "base_hash": base.hash, "data": data_digest, "config": config.fingerprint()}


def save_checkpoint(path: Path, meta: Mapping[str, Any], state: TrainState) -> None:
    with atomic_writer(path) as handle:
        torch.save({"format": CHECKPOINT_FORMAT, "meta": dict(meta), **state.state_dict()}, handle)


class CheckpointMismatch(TrainingError):
    """The checkpoint was made from other data, settings or trainer: the run must start over."""


def load_checkpoint(path: Path, base: BaseModel, meta: Mapping[str, Any]) -> dict[str, Any]:
    """The saved state for :meth:`TrainState.load_state_dict`, refused (``TrainingError``, or
    ``BaseModelMismatch``) when it was made from another base model, other data or other settings."""
    saved = torch.load(path, map_location="cpu", weights_only=False)
    if saved.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointMismatch(f"{path}: checkpoint from another version of the trainer; train without resume")
    was = saved["meta"]
    check_same_base(AdapterMetadata(base_model=was["base_model"], base_hash=was["base_hash"]), base.hash, base.id, path)
    if was["data"] != meta["data"]:
        raise CheckpointMismatch(
            f"{path}: the examples changed since this checkpoint; train without resume to start over"
        )
    if was["config"] != meta["config"]:
        changed = sorted(k for k in meta["config"] if was["config"].get(k) != meta["config"][k])
        raise CheckpointMismatch(
            f"{path}: settings changed since this checkpoint ({', '.join(changed)}); train without resume to start over"
        )
    return saved


@contextlib.contextmanager
def work_lock(work_dir: Path) -> Iterator[None]:
    """Hold the work folder's lock: one training run per persona at a time (TrainingError if taken)."""
    work_dir.mkdir(parents=True, exist_ok=True)
    with open(work_dir / "lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise TrainingError(f"{work_dir}: another training run of this persona is in progress") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
