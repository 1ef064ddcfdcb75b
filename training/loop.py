"""The LoRA training run, in the steps of a torchtune recipe: setup, load_checkpoint, train, save_checkpoint.

Each example is rendered and tokenized once (:mod:`training.batches`); batches are length-grouped
under a token budget and carry no attention mask; the loss is the weighted mean cross-entropy over
the persona's tokens of a batch (:mod:`training.model`): each token counts with its reply's weight, so
generated replies pull less than real ones and a batch of real replies only has their plain mean.
The speed-ups are those of :mod:`training.speedups`.
Computation is fp32 by default (``bf16`` autocasts); a CUDA GPU is used when there is one.

The held-out loss is evaluated before training, every ``eval_every`` steps and at the end; training
stops early when it stops improving and the best adapter is kept. A checkpoint is written every
``checkpoint_every`` steps, at each evaluation and on Ctrl-C; ``resume=True`` continues from it.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import torch_env  # noqa: F401  (process options torch reads when it loads)

# isort: split
import torch

from store.base_model import BaseModel
from store.progress import TrainingProgress

from .batches import collate, encode_split, pad_id, plan_batches
from .checkpoint import (
    CHECKPOINT_FILE,
    TrainState,
    load_checkpoint,
    load_trainable,
    run_meta,
    save_checkpoint,
    trainable_state,
    work_lock,
)
from .config import TrainConfig, TrainingError
from .model import (
    LossPath,
    heldout_loss,
    load_model,
    load_tokenizer,
    model_device,
    peak_memory,
    reset_peak_memory,
    resolved_dtype,
    set_threads,
)
from .result import TrainResult
from .schedule import lr_factor
from .speedups import tune_allocator
from .yielding import PauseClock

__all__ = ["LoraRecipe", "train"]


class LoraRecipe:
    """One training run of a LoRA on ``base``; ``setup`` then ``train``."""

    def __init__(
        self,
        base: BaseModel,
        config: TrainConfig,
        *,
        work_dir: Path | None = None,
        tokenizer: Any = None,
        progress: bool = True,
        on_step: Callable[[TrainingProgress], None] | None = None,
        description: str = "training",
    ) -> None:
        self.base, self.config, self.tokenizer = base, config, tokenizer
        self.checkpoint_path = work_dir / CHECKPOINT_FILE if work_dir else None
        self.show_bar, self.on_step, self.description = progress, on_step, description
        self.resumed_from: int | None = None
        self.pauses: PauseClock | None = None

    # --- setup -----------------------------------------------------------------------------------
    def setup(self, train_rows: Any, heldout_rows: Any, resume: bool = False) -> None:
        """Encode the data, plan the run, load the model and optimizer, or resume them."""
        self.config = config = resolved_dtype(self.config)
        self.started = time.perf_counter()
        reset_peak_memory()
        if config.tune_allocator:
            tune_allocator()
        set_threads(config.resolve_threads())
        self.tokenizer = self.tokenizer or load_tokenizer(self.base)
        self.pad = pad_id(self.tokenizer)
        self.train_split = encode_split(self.tokenizer, train_rows, config.max_seq_length)
        self.heldout_split = encode_split(self.tokenizer, heldout_rows, config.max_seq_length)
        if not len(self.train_split):
            raise TrainingError("no training examples with a persona turn to learn from")
        digest = hashlib.sha256((self.train_split.digest() + self.heldout_split.digest()).encode()).hexdigest()
        self.meta = run_meta(self.base, config, digest)

        self.epochs = config.resolve_epochs()
        self.steps_per_epoch = len(plan_batches(self.train_split.lengths, config.batch_tokens, config.seed, 0))
        self.total_steps = self.epochs * self.steps_per_epoch
        if config.max_steps is not None:
            self.total_steps = min(self.total_steps, config.max_steps)
        self.eval_every = config.resolve_eval_every(self.steps_per_epoch)
        self.budget_s = config.resolve_time_budget()
        ramp = self.steps_per_epoch if config.automatic_length else self.total_steps
        warmup = max(1, round(config.warmup_ratio * ramp)) if config.warmup_ratio > 0 else 0
        decay_over = None if config.automatic_length else self.total_steps

        saved = self.load_checkpoint() if resume else None  # refused before the model is loaded

        model = load_model(self.base, config)
        model.train()
        self.device = model_device(model)
        self.loss_sum = LossPath(model, bf16=config.bf16, head_on_trained_positions=config.head_on_trained_positions,
                                 compiled=config.compile_decoder)  # fmt: skip
        self.trainable = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(
            self.trainable, lr=config.learning_rate, weight_decay=config.weight_decay, foreach=True
        )
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(decay_over, warmup, config.min_lr_ratio))
        self.state = TrainState(model, optimizer, scheduler)
        if saved is not None:
            self.state.load_state_dict(saved)
            self.resumed_from = self.state.record.step
        else:
            torch.manual_seed(config.seed)
            random.seed(config.seed)

    # --- checkpoints -----------------------------------------------------------------------------
    def save_checkpoint(self) -> None:
        if self.checkpoint_path:
            save_checkpoint(self.checkpoint_path, self.meta, self.state)

    def load_checkpoint(self) -> dict[str, Any] | None:
        """The work folder's checkpoint, if any, checked against this run's base model, data and settings."""
        if not self.checkpoint_path or not self.checkpoint_path.is_file():
            return None
        return load_checkpoint(self.checkpoint_path, self.base, self.meta)

    # --- the run ---------------------------------------------------------------------------------
    def train(self) -> TrainResult:
        """Run to the end (or early stop); a Ctrl-C saves a checkpoint and propagates."""
        from tqdm.auto import tqdm

        record = self.state.record
        self.bar = tqdm(
            total=self.total_steps,
            initial=record.step,
            disable=not self.show_bar,
            unit="step",
            desc=self.description,
            dynamic_ncols=True,
            leave=True,
        )
        self.in_update = False
        self.last_saved = record.step
        self.pauses = PauseClock()
        try:
            if record.step == 0 and not record.evals:
                self.evaluate()
                record.eval_before = record.evals[-1]["loss"] if record.evals else None
                self.report("running", None)
            while record.step < self.total_steps and not record.stopped_early and not self.out_of_time():
                self.train_epoch()
            if not record.evals or record.evals[-1]["step"] != record.step:
                self.evaluate()
            self.save_checkpoint()
        except KeyboardInterrupt:
            if not self.in_update and record.step > self.last_saved:
                with contextlib.suppress(Exception):
                    self.save_checkpoint()
            raise
        finally:
            self.bar.close()
            self.pauses.close()
        if record.best_state is not None:
            load_trainable(self.state.model, record.best_state)
        self.report("done", record.history[-1]["loss"] if record.history else None)
        return self.result()

    def train_epoch(self) -> None:
        """The rest of the current epoch (all of it unless resumed mid-epoch), or up to the last step."""
        record, config = self.state.record, self.config
        batches = plan_batches(self.train_split.lengths, config.batch_tokens, config.seed, record.epoch)
        while record.batch_index < len(batches) and record.step < self.total_steps:
            entry = self.step(batches[record.batch_index])
            evaluated = False
            if record.step % self.eval_every == 0 and record.step < self.total_steps:
                record.stopped_early = self.evaluate()
                evaluated = True
            if evaluated or record.step % config.checkpoint_every == 0:
                self.save_checkpoint()
                self.last_saved = record.step
            self.bar.total = self.expected_steps()
            self.bar.update(1)
            postfix = {"loss": f"{entry['loss']:.3f}", "tok/s": f"{entry['tokens'] / entry['seconds']:.0f}"}
            if record.evals:
                postfix["eval"] = f"{record.evals[-1]['loss']:.3f}"
            self.bar.set_postfix(postfix, refresh=False)
            self.report("running", entry["loss"])
            if record.stopped_early or self.out_of_time():
                return
        if record.batch_index >= len(batches):
            record.epoch += 1
            record.batch_index = 0

    def step(self, indices: list[int]) -> dict[str, float]:
        """One optimizer step on the examples at ``indices``; returns its history entry."""
        state, record, config = self.state, self.state.record, self.config
        started = self.running_clock()
        batch = collate(self.train_split, indices, self.pad, self.device)
        loss = self.loss_sum(batch) / (batch.weight_total or 1.0)
        loss.backward()
        if config.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.trainable, config.max_grad_norm, foreach=True)
        self.in_update = True
        state.optimizer.step()
        state.scheduler.step()
        state.optimizer.zero_grad(set_to_none=True)
        record.step += 1
        record.batch_index += 1
        value = float(loss.detach())
        entry = {
            "step": record.step,
            "loss": value,
            "lr": state.scheduler.get_last_lr()[0],
            "tokens": batch.tokens,
            "targets": batch.targets,
            "seconds": self.running_clock() - started,
        }
        record.history.append(entry)
        record.spent_s += entry["seconds"]
        self.in_update = False
        if not math.isfinite(value):
            raise TrainingError(f"training diverged at step {record.step} (loss {value}); lower learning_rate")
        return entry

    def evaluate(self) -> bool:
        """Evaluate on the held-out split and keep the best adapter; True when early stopping says stop."""
        record, config = self.state.record, self.config
        started = self.running_clock()
        loss = heldout_loss(self.state.model, self.heldout_split, config.batch_tokens * 2, self.pad, config.bf16)
        record.spent_s += self.running_clock() - started
        if loss is None:
            return False
        record.evals.append({"step": record.step, "loss": loss})
        if record.best_loss is None or loss < record.best_loss - config.early_stopping_min_delta:
            record.best_loss, record.best_step, record.stale = loss, record.step, 0
            record.best_state = trainable_state(self.state.model)
        else:
            record.stale += 1
        return bool(config.early_stopping_patience) and record.stale >= config.early_stopping_patience

    def running_clock(self) -> float:
        """The wall clock less the time paused while the server answered: step speeds and budgets count work."""
        return time.perf_counter() - (self.pauses.paused_s if self.pauses else 0.0)

    def stop_reason(self) -> str:
        """Why the run ended: ``early stopping``, ``time budget``, ``max_steps`` or ``all passes``."""
        record = self.state.record
        if record.stopped_early:
            return "early stopping"
        if record.out_of_time:
            return "time budget"
        if self.config.max_steps is not None and record.step >= self.config.max_steps:
            return "max_steps"
        return "all passes"

    def out_of_time(self) -> bool:
        """True once an automatic run has spent its time budget on steps and evaluations (after at least
        one step, so the published adapter has learnt something)."""
        record = self.state.record
        if self.budget_s is None or not record.step or record.spent_s < self.budget_s:
            return False
        record.out_of_time = True
        return True

    def expected_steps(self) -> int:
        """The steps the run is expected to make: the planned steps, or, under a time budget, the steps
        the remaining time allows at the recent pace (so progress is the budget's fraction spent)."""
        record = self.state.record
        if self.budget_s is None or not record.step:
            return self.total_steps
        if record.out_of_time or record.stopped_early:
            return record.step
        per_step = record.spent_s / record.step
        affordable = record.step + math.ceil(max(0.0, self.budget_s - record.spent_s) / per_step)
        return max(record.step, min(self.total_steps, affordable))

    def report(self, state: str, loss: float | None) -> None:
        if not self.on_step:
            return
        record = self.state.record
        recent = record.history[-20:]
        seconds = sum(h["seconds"] for h in recent)
        tps = sum(h["tokens"] for h in recent) / seconds if seconds else None
        per_step = seconds / len(recent) if recent else None
        total = record.step if state == "done" else self.expected_steps()
        self.on_step(
            TrainingProgress(
                state=state,
                step=record.step,
                total_steps=total,
                epoch=round(record.step / self.steps_per_epoch, 3),
                train_loss=loss,
                eval_loss=record.evals[-1]["loss"] if record.evals else None,
                best_eval_loss=record.best_loss,
                tokens_per_s=round(tps, 1) if tps else None,
                elapsed_s=round(time.perf_counter() - self.started, 1),
                eta_s=round(per_step * (total - record.step), 1) if per_step else None,
                message=self.description,
            )
        )

    def result(self) -> TrainResult:
        record, config = self.state.record, self.config
        last_epoch = record.history[-self.steps_per_epoch :] if record.history else []
        targets = sum(h["targets"] for h in last_epoch)
        train_loss = sum(h["loss"] * h["targets"] for h in last_epoch) / targets if targets else None
        return TrainResult(
            model=self.state.model,
            tokenizer=self.tokenizer,
            config=config,
            base=self.base,
            steps=record.step,
            total_steps=self.expected_steps(),
            epochs=self.epochs
            if not config.automatic_length
            else max(1, math.ceil(record.step / self.steps_per_epoch)),
            steps_per_epoch=self.steps_per_epoch,
            stopped_early=record.stopped_early,
            stop_reason=self.stop_reason(),
            best_step=record.best_step if record.best_state is not None else record.step,
            train_loss=train_loss,
            eval_loss_before=record.eval_before,
            eval_loss_after=record.best_loss,
            history=record.history,
            evals=record.evals,
            tokens=self.token_counts(),
            duration_s=time.perf_counter() - self.started,
            train_seconds=sum(h["seconds"] for h in record.history),
            resumed_from=self.resumed_from,
            **peak_memory(),
        )

    def token_counts(self) -> dict[str, int]:
        train, heldout, history = self.train_split, self.heldout_split, self.state.record.history
        return {
            "train_examples": len(train),
            "heldout_examples": len(heldout),
            "train_tokens": train.tokens,
            "train_target_tokens": train.target_tokens,
            "heldout_tokens": heldout.tokens,
            "heldout_target_tokens": heldout.target_tokens,
            "seen_tokens": sum(int(h["tokens"]) for h in history),
            "seen_target_tokens": sum(int(h["targets"]) for h in history),
            "truncated_examples": train.truncated + heldout.truncated,
            "skipped_examples": train.skipped + heldout.skipped,
        }


def train(
    base: BaseModel,
    train_rows: Any,
    heldout_rows: Any,
    config: TrainConfig,
    *,
    work_dir: Path | None = None,
    resume: bool = False,
    progress: bool = True,
    on_step: Callable[[TrainingProgress], None] | None = None,
    tokenizer: Any = None,
    description: str = "training",
    lock: bool = True,
) -> TrainResult:
    """Train a LoRA on ``train_rows`` (rows of ``{"messages": [...]}``), evaluating on ``heldout_rows``.

    ``work_dir`` holds the checkpoint and a lock (one run per folder at a time; ``lock=False`` when the
    caller holds :func:`~training.checkpoint.work_lock` already); with ``resume=True`` the run continues
    from the checkpoint there, refused if the base model, the data or the settings changed. ``on_step``
    gets a :class:`~store.progress.TrainingProgress` after the first evaluation, after every step and
    at the end (state ``done``).
    """
    with work_lock(work_dir) if work_dir and lock else contextlib.nullcontext():
        recipe = LoraRecipe(
            base,
            config,
            work_dir=work_dir,
            tokenizer=tokenizer,
            progress=progress,
            on_step=on_step,
            description=description,
        )
        recipe.setup(train_rows, heldout_rows, resume=resume)
        return recipe.train()
