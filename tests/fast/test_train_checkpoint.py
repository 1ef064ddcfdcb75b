"""A run's checkpoint restores everything it needs, and is refused for another base, data or settings."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from store.base_model import BaseModel
from store.errors import BaseModelMismatch
from training.checkpoint import (
    CHECKPOINT_FILE,
    Record,
    TrainState,
    load_checkpoint,
    run_meta,
    save_checkpoint,
    work_lock,
)
from training.config import TrainConfig, TrainingError

BASE = BaseModel(id="Tiny", path=Path("/nowhere"), hash="a" * 64)


def state_after_steps(steps: int) -> TrainState:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 1))
    model[0].weight.requires_grad_(False)  # a frozen part, like the base model
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 / (step + 1))
    for _ in range(steps):
        model(torch.randn(8, 4)).pow(2).mean().backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
    return TrainState(model, optimizer, scheduler)


def test_a_saved_state_restores_weights_optimizer_schedule_rng_and_record(tmp_path):
    state = state_after_steps(3)
    state.record = Record(
        step=3,
        epoch=1,
        batch_index=1,
        history=[{"step": 1, "loss": 2.0}],
        evals=[{"step": 0, "loss": 3.0}],
        best_loss=3.0,
        best_step=0,
        stale=1,
        eval_before=3.0,
    )
    meta = run_meta(BASE, TrainConfig(), "data")
    path = tmp_path / CHECKPOINT_FILE
    save_checkpoint(path, meta, state)
    expected_draws = (torch.rand(3), random.random())

    fresh = state_after_steps(0)
    fresh.load_state_dict(load_checkpoint(path, BASE, meta))
    assert (torch.rand(3).tolist(), random.random()) == (expected_draws[0].tolist(), expected_draws[1])
    for got, want in zip(fresh.model.parameters(), state.model.parameters()):
        assert torch.equal(got, want) or not want.requires_grad
    assert fresh.optimizer.state_dict()["state"].keys() == state.optimizer.state_dict()["state"].keys()
    assert fresh.scheduler.last_epoch == 3 and fresh.scheduler.get_last_lr() == state.scheduler.get_last_lr()
    assert fresh.record == state.record
    assert [p.name for p in tmp_path.iterdir()] == [CHECKPOINT_FILE]  # written aside, then renamed


def test_a_checkpoint_is_refused_for_another_base_other_data_or_settings(tmp_path):
    path = tmp_path / CHECKPOINT_FILE
    save_checkpoint(path, run_meta(BASE, TrainConfig(), "data"), state_after_steps(1))
    with pytest.raises(BaseModelMismatch, match="Other"):
        load_checkpoint(
            path, BaseModel(id="Other", path=BASE.path, hash="b" * 64), run_meta(BASE, TrainConfig(), "data")
        )
    with pytest.raises(TrainingError, match="examples changed"):
        load_checkpoint(path, BASE, run_meta(BASE, TrainConfig(), "other data"))
    with pytest.raises(TrainingError, match=r"settings changed since this checkpoint \(lora_r, shared_dropout\)"):
        load_checkpoint(path, BASE, run_meta(BASE, TrainConfig(lora_r=4, shared_dropout=False), "data"))
    # how long and how fast may change on resume
    quick = TrainConfig(max_steps=9, fused_lora=False, gradient_checkpointing=True, tune_allocator=False)
    assert load_checkpoint(path, BASE, run_meta(BASE, quick, "data"))["step"] == 0


def test_one_run_per_work_folder_at_a_time(tmp_path):
    refused = pytest.raises(TrainingError, match="another training run of this persona is in progress")
    with work_lock(tmp_path / "work"), refused, work_lock(tmp_path / "work"):
        pass
    with work_lock(tmp_path / "work"):  # released when the first run ends
        pass
