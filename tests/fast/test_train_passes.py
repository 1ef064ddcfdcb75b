"""How long a run trains: with epochs unset, learning and the time budget choose the passes; explicit
epochs are made in full. Runs a randomly initialised one-layer Llama on the tiny tokenizer, a few
steps each."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from store.base_model import BaseModel
from tests.support.tiny_base import make_tiny_base
from training.config import TrainConfig
from training.loop import LoraRecipe, train
from training.schedule import lr_factor

PHRASE = "Oh crumbs, petal, two scones left."


def rows(count: int, start: int = 0) -> list[dict]:
    return [
        {
            "messages": [
                {"role": "system", "content": "You are Wren.", "weight": 0.0},
                {"role": "user", "content": f"Any scones {i}?", "weight": 0.0},
                {"role": "assistant", "content": PHRASE, "weight": 1.0},
            ],
            "session": f"s{i}",
        }
        for i in range(start, start + count)
    ]


TRAIN, HELDOUT = rows(4), rows(2, start=50)
QUICK = dict(batch_tokens=64, lora_r=4, lora_alpha=8, learning_rate=2e-2, threads=1, tune_allocator=False,
             lora_dropout=0.0, checkpoint_every=1000)  # fmt: skip


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory) -> BaseModel:
    """The tiny tokenizer with a random one-layer Llama behind it."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    base = make_tiny_base(tmp_path_factory.mktemp("tiny-lm"))
    vocab = len(AutoTokenizer.from_pretrained(base.path))
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=256)  # fmt: skip
    LlamaForCausalLM(config).save_pretrained(base.path)
    return base


def run(base: BaseModel, work: Path, **settings) -> tuple[LoraRecipe, object]:
    recipe = LoraRecipe(base, TrainConfig(**(QUICK | settings)), work_dir=work, progress=False)
    recipe.setup(TRAIN, HELDOUT)
    return recipe, recipe.train()


def test_a_run_whose_heldout_loss_still_falls_makes_more_than_one_pass(tiny_lm, tmp_path):
    _, result = run(tiny_lm, tmp_path, max_auto_epochs=6, early_stopping_patience=3, time_budget_s=None)
    assert result.steps > result.steps_per_epoch and result.epochs > 1
    assert result.eval_loss_after < result.eval_loss_before


def test_a_run_whose_heldout_loss_stops_falling_stops_early(tiny_lm, tmp_path):
    # No evaluation can beat the first by the margin, so patience ends the run after two evaluations.
    _, result = run(tiny_lm, tmp_path, eval_every=1, early_stopping_patience=2, early_stopping_min_delta=1e6)
    assert result.stopped_early and result.stop_reason == "early stopping"
    assert result.steps == 2 and result.best_step == 0
    assert result.total_steps == result.steps


def test_the_time_budget_stops_a_run_and_keeps_the_best_state(tiny_lm, tmp_path):
    reports = []
    recipe = LoraRecipe(tiny_lm, TrainConfig(**QUICK, time_budget_s=1e-6), work_dir=tmp_path, progress=False,
                        on_step=reports.append)  # fmt: skip
    recipe.setup(TRAIN, HELDOUT)
    result = recipe.train()
    assert result.stop_reason == "time budget" and result.steps == 1
    assert result.steps < recipe.total_steps  # the cap of passes was far off
    best = recipe.state.record.best_state
    params = dict(result.model.named_parameters())
    assert all(torch.equal(params[name].detach().cpu(), value) for name, value in best.items())
    assert reports[-1].state == "done" and reports[-1].total_steps == result.steps == result.total_steps


def test_explicit_epochs_are_made_in_full_with_a_decaying_rate(tiny_lm, tmp_path):
    _, result = run(tiny_lm, tmp_path, epochs=2, early_stopping_patience=0, time_budget_s=1e-6)
    assert result.epochs == 2 and result.steps == 2 * result.steps_per_epoch
    assert result.stop_reason == "all passes"
    rates = [h["lr"] for h in result.history]
    assert rates[-1] < rates[len(rates) // 2]


def test_an_automatic_run_keeps_the_peak_rate_after_warmup():
    automatic = lr_factor(None, warmup=2, min_ratio=0.1)
    assert automatic(0) < automatic(1) < 1.0
    assert [automatic(step) for step in (2, 10, 10_000)] == [1.0, 1.0, 1.0]
    planned = lr_factor(100, warmup=2, min_ratio=0.1)
    assert planned(2) == pytest.approx(1.0) and planned(100) == pytest.approx(0.1)


def test_progress_under_a_budget_counts_the_steps_the_time_allows(tiny_lm, tmp_path):
    reports = []
    recipe = LoraRecipe(tiny_lm, TrainConfig(**QUICK, max_auto_epochs=20, time_budget_s=3600, max_steps=3),
                        work_dir=tmp_path, progress=False, on_step=reports.append)  # fmt: skip
    recipe.setup(TRAIN, HELDOUT)
    recipe.train()
    running = [r for r in reports if r.state == "running" and r.step]
    assert running and all(r.step <= r.total_steps <= recipe.total_steps for r in running)


def test_train_function_still_returns_the_result(tiny_lm, tmp_path):
    result = train(tiny_lm, TRAIN, HELDOUT, TrainConfig(**QUICK, max_steps=1), work_dir=tmp_path, progress=False)
    assert result.steps == 1 and result.stop_reason == "max_steps"
