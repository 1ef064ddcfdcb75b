"""Real, tiny LoRA runs on the bundled model, then publishing them: versions, LIVE, failures, resume,
QLoRA and 8-bit bases, and the speed-up and memory switches."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from store import adapters
from store.errors import BaseModelMismatch, StoreError
from store.settings import StoreSettings
from training.checkpoint import CHECKPOINT_FILE, work_lock
from training.config import TrainConfig, TrainingError
from training.loop import train

PHRASE = "The blue heron flies at dawn over the river."


def phrase_rows(count: int, start: int = 0) -> list[dict]:
    return [
        {
            "messages": [
                {"role": "system", "content": "You are Echo.", "weight": 0.0},
                {"role": "user", "content": f"Say it, number {i}.", "weight": 0.0},
                {"role": "assistant", "content": PHRASE, "weight": 1.0},
            ],
            "session": f"s{i}",
        }
        for i in range(start, start + count)
    ]


TRAIN_ROWS = phrase_rows(8)
HELDOUT_ROWS = phrase_rows(2, start=100)
TINY = TrainConfig(
    # float32, so that two ways of computing the same steps agree to rounding; bfloat16 is tested apart
    bf16=False,
    max_steps=4,
    batch_tokens=128,
    learning_rate=3e-3,
    eval_every=2,
    checkpoint_every=1,
    lora_r=8,
    lora_alpha=16,
    warmup_ratio=0.0,
)


@pytest.fixture(scope="module")
def trained(base_model, tmp_path_factory):
    """One 4-step run, shared by the tests below (the model is loaded once for the module)."""
    work = tmp_path_factory.mktemp("work")
    return train(base_model, TRAIN_ROWS, HELDOUT_ROWS, TINY, work_dir=work, progress=False)


@pytest.fixture
def persona(tmp_path) -> Path:
    path = tmp_path / "personas" / "echo"
    (path / "logs").mkdir(parents=True)
    return path


def _staging_dirs(persona: Path) -> list[Path]:
    root = adapters.adapters_root(persona)
    return [p for p in root.iterdir() if p.name.startswith(adapters.STAGING_PREFIX)] if root.is_dir() else []


def test_training_lowers_the_loss_on_a_repeated_phrase(trained):
    assert trained.steps == 4 and len(trained.history) == 4
    losses = [h["loss"] for h in trained.history]
    assert losses[-1] < losses[0] * 0.5
    assert trained.eval_loss_before is not None and trained.eval_loss_after < trained.eval_loss_before
    assert [e["step"] for e in trained.evals] == [0, 2, 4]
    assert trained.tokens["train_examples"] == 8 and trained.tokens["heldout_examples"] == 2
    assert trained.tokens["seen_target_tokens"] > 0 and trained.tokens_per_s > 0
    assert not any(p.requires_grad for n, p in trained.model.named_parameters() if "lora_" not in n)


def test_publish_writes_a_version_and_makes_it_live(trained, persona):
    from training.publish import publish_adapter

    version, path = publish_adapter(
        persona,
        trained,
        data_hash="abc123",
        max_lora_rank=16,
        allowed_modules={"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"},
    )
    assert (version, path) == (1, adapters.adapters_root(persona) / "v1")
    assert adapters.read_live(persona) == 1
    for name in ("adapter_model.safetensors", "adapter_config.json", "metadata.json", "loss.png", "report.md"):
        assert (path / name).is_file(), name
    assert (path / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    config = json.loads((path / "adapter_config.json").read_text())
    assert not config.get("modules_to_save") and config["r"] == 8
    meta = adapters.read_metadata(path)
    assert meta.base_model == trained.base.id and meta.base_hash == trained.base.hash
    assert meta.data_hash == "abc123" and meta.lora.r == 8 and meta.lora.alpha == 16
    assert meta.eval_loss_after < meta.eval_loss_before and meta.train_loss is not None
    assert meta.settings["max_steps"] == 4 and meta.tokens["train_examples"] == 8 and meta.duration_s > 0
    assert meta.peak_rss_mb > 100 and meta.peak_cuda_mb is None  # the run's peak memory, no CUDA here
    assert "held-out loss" in (path / "report.md").read_text()
    assert _staging_dirs(persona) == []

    # the adapter holds only LoRA weights (no embeddings / lm_head even though SmolLM ties them)
    from safetensors import safe_open

    with safe_open(path / "adapter_model.safetensors", "pt") as handle:
        keys = list(handle.keys())
        dtypes = {handle.get_tensor(k).dtype for k in keys}
    assert keys and all("lora_A" in k or "lora_B" in k for k in keys)
    assert dtypes == {torch.bfloat16}, "float32 weights are stored in bfloat16, as the server keeps them"

    # a second publish becomes v2 and live
    assert publish_adapter(persona, trained, data_hash="abc123", max_lora_rank=16)[0] == 2
    assert adapters.read_live(persona) == 2


@pytest.mark.parametrize("error", [RuntimeError("disk on fire"), KeyboardInterrupt()])
def test_a_failure_during_publish_keeps_the_previous_version_live(trained, persona, monkeypatch, error):
    from training import publish

    publish.publish_adapter(persona, trained, data_hash="v1", max_lora_rank=16)

    def broken(*args, **kwargs):
        raise error

    monkeypatch.setattr(publish, "verify_loads", broken)
    with pytest.raises((TrainingError, KeyboardInterrupt)):
        publish.publish_adapter(persona, trained, data_hash="v2", max_lora_rank=16)
    assert adapters.read_live(persona) == 1 and adapters.list_versions(persona) == [1]
    assert _staging_dirs(persona) == []


def test_too_high_a_rank_is_refused_before_publishing(trained, persona):
    from training.publish import publish_adapter

    with pytest.raises(StoreError, match="'r' is 8"):
        publish_adapter(persona, trained, data_hash="x", max_lora_rank=4)
    with pytest.raises(StoreError, match="target_modules"):
        publish_adapter(persona, trained, data_hash="x", max_lora_rank=16, allowed_modules={"q_proj", "v_proj"})
    assert adapters.list_versions(persona) == [] and adapters.read_live(persona) is None
    assert _staging_dirs(persona) == []


def test_interrupted_run_resumes_and_continues_the_step_count(base_model, trained, tmp_path):
    work = tmp_path / "work"

    def stop_at_two(progress):
        if progress.step == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(base_model, TRAIN_ROWS, HELDOUT_ROWS, TINY, work_dir=work, progress=False, on_step=stop_at_two)
    saved = torch.load(work / CHECKPOINT_FILE, weights_only=False)
    assert saved["step"] == 2

    resumed = train(base_model, TRAIN_ROWS, HELDOUT_ROWS, TINY, work_dir=work, resume=True, progress=False)
    assert resumed.resumed_from == 2 and resumed.steps == 4
    assert [h["step"] for h in resumed.history] == [1, 2, 3, 4]
    # same batches, optimizer, schedule and dropout RNG as the uninterrupted run
    for got, want in zip(resumed.history, trained.history):
        assert math.isclose(got["loss"], want["loss"], rel_tol=1e-3, abs_tol=1e-3)
    assert math.isclose(resumed.eval_loss_after, trained.eval_loss_after, rel_tol=1e-2, abs_tol=1e-3)


def test_resume_refuses_another_base_model_or_other_data(base_model, tmp_path):
    from dataclasses import replace

    work = tmp_path / "work"
    quick = TINY.replace(max_steps=1, eval_every=10)
    train(base_model, TRAIN_ROWS, [], quick, work_dir=work, progress=False)
    other = replace(base_model, id="OtherModel", hash="0" * 64)
    with pytest.raises(BaseModelMismatch, match="OtherModel"):
        train(other, TRAIN_ROWS, [], quick, work_dir=work, resume=True, progress=False)
    with pytest.raises(TrainingError, match="examples changed"):
        train(base_model, TRAIN_ROWS[:5], [], quick, work_dir=work, resume=True, progress=False)
    with pytest.raises(TrainingError, match="lora_r"):
        train(base_model, TRAIN_ROWS, [], quick.replace(lora_r=4), work_dir=work, resume=True, progress=False)


def _write_logs(persona: Path, sessions: int, start: int = 0) -> None:
    blocks = []
    for s in range(start, start + sessions):
        blocks.append(f"Kit: Will it rain today, {s}?\nEcho: {PHRASE}\nKit: And tomorrow?\nEcho: {PHRASE}")
    (persona / "logs" / f"chat{start}.txt").write_text("\n\n".join(blocks) + "\n", encoding="utf-8")


def test_train_persona_end_to_end_and_needs_training(base_model, persona, cache_dir):
    from training.run import needs_training, train_persona

    (persona / "persona.yaml").write_text("training:\n  min_examples: 1\n  max_steps: 2\n  batch_tokens: 256\n")
    _write_logs(persona, 10)
    settings = StoreSettings(personas_dir=persona.parent, base_model=str(base_model.path), cache_dir=cache_dir)
    assert needs_training(settings, "echo")
    seen = []
    result = train_persona(settings, "echo", max_lora_rank=16, progress=False, on_step=seen.append)
    assert result.version == 1 and result.steps == 2 and seen[-1].step == 2
    assert adapters.read_live(persona) == 1
    meta = adapters.read_metadata(result.path)
    assert meta.data_hash == result.data_hash and meta.settings["max_steps"] == 2
    assert meta.base_hash == base_model.hash
    progress = json.loads((persona / "adapters" / ".work" / "progress.json").read_text())
    assert progress["state"] == "done" and "v1" in progress["message"]
    assert not (persona / "adapters" / ".work" / CHECKPOINT_FILE).exists()
    assert adapters.list_versions(persona) == [1]  # the work folder is not a version
    assert not needs_training(settings, "echo")
    _write_logs(persona, 3, start=50)
    assert needs_training(settings, "echo")

    # one run per persona at a time; the refused one leaves the other's progress alone
    with work_lock(persona / "adapters" / ".work"), pytest.raises(TrainingError, match="in progress"):
        train_persona(settings, "echo", max_lora_rank=16, progress=False)
    assert json.loads((persona / "adapters" / ".work" / "progress.json").read_text())["state"] == "done"
    # a rank above the server's limit is refused before any training
    with pytest.raises(TrainingError, match="max_lora_rank"):
        train_persona(settings, "echo", TrainConfig(lora_r=32), max_lora_rank=16, progress=False)


def test_fused_lora_forward_matches_peft(base_model):
    from peft.tuners.lora.layer import Linear as LoraLinear

    from training.model import load_model

    model = load_model(base_model, TrainConfig(lora_r=4, lora_alpha=8, lora_dropout=0.0))
    layers = [m for m in model.modules() if type(m) is LoraLinear]
    assert len(layers) == 30 * 7 and all("forward" in vars(m) for m in layers)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.05)
    model.train()
    ids = torch.randint(100, 5000, (2, 12))

    def run():
        model.zero_grad()
        logits = model(input_ids=ids).logits
        logits.float().logsumexp(-1).mean().backward()
        return logits.detach(), [p.grad.clone() for p in model.parameters() if p.requires_grad]

    fused_logits, fused_grads = run()
    for layer in layers:
        del layer.forward  # back to PEFT's own forward
    peft_logits, peft_grads = run()
    assert torch.allclose(fused_logits, peft_logits, atol=1e-4)
    for got, want in zip(fused_grads, peft_grads):
        assert torch.allclose(got, want, atol=1e-5, rtol=1e-3)


def test_qlora_steps_run_on_cpu_and_publish_a_servable_adapter(base_model, persona):
    from training.publish import publish_adapter

    config = TINY.replace(qlora=True, max_steps=3, eval_every=3)
    outcome = train(base_model, TRAIN_ROWS[:4], HELDOUT_ROWS, config, progress=False)
    base_layer = outcome.model.get_base_model().model.layers[0].self_attn.q_proj.base_layer
    assert type(base_layer).__name__ == "Linear4bit"
    assert outcome.steps == 3 and outcome.eval_loss_after < outcome.eval_loss_before
    # published like any adapter, and proven to load on the full-precision base the server uses
    version, path = publish_adapter(persona, outcome, data_hash="q", max_lora_rank=16, extra_metadata={"qlora": True})
    assert version == 1 and adapters.read_live(persona) == 1
    assert adapters.read_metadata(path).settings["qlora"] is True
    assert not json.loads((path / "adapter_config.json").read_text()).get("modules_to_save")


def test_bf16_autocast_trains(base_model):
    outcome = train(
        base_model, TRAIN_ROWS[:4], HELDOUT_ROWS, TINY.replace(bf16=True, max_steps=2, eval_every=2), progress=False
    )
    assert outcome.steps == 2 and outcome.eval_loss_after < outcome.eval_loss_before
    assert all(p.dtype == torch.float32 for p in outcome.model.parameters() if p.requires_grad)


def test_8bit_base_trains_and_publishes_a_servable_adapter(base_model, persona):
    from training.publish import publish_adapter

    outcome = train(
        base_model,
        TRAIN_ROWS[:4],
        HELDOUT_ROWS,
        TINY.replace(load_in_8bit=True, max_steps=3, eval_every=3),
        progress=False,
    )
    base_layer = outcome.model.get_base_model().model.layers[0].self_attn.q_proj.base_layer
    assert type(base_layer).__name__ == "Linear8bitLt"
    assert outcome.steps == 3 and outcome.eval_loss_after < outcome.eval_loss_before
    version, path = publish_adapter(persona, outcome, data_hash="8", max_lora_rank=16)
    assert version == 1 and adapters.read_metadata(path).settings["load_in_8bit"] is True


def test_gradient_checkpointing_saves_memory_without_changing_the_steps(trained, base_model):
    outcome = train(
        base_model, TRAIN_ROWS, HELDOUT_ROWS, TINY.replace(gradient_checkpointing=True, max_steps=2), progress=False
    )
    assert outcome.model.get_base_model().model.gradient_checkpointing
    for got, want in zip(outcome.history, trained.history[:2]):
        assert math.isclose(got["loss"], want["loss"], rel_tol=1e-4)


@pytest.mark.parametrize(("bf16", "tolerance"), [(False, 1e-4), (True, 1e-2)])
def test_speedups_change_the_speed_not_the_steps(base_model, bf16, tolerance):
    """With no dropout (whose draws the dropout speed-ups change), every speed-up off trains the same:
    to rounding in float32, within bfloat16's rounding (1%) under autocast, the default on CPUs with AMX."""
    plain = TINY.replace(lora_dropout=0.0, max_steps=2, eval_every=2, bf16=bf16)
    fast = train(base_model, TRAIN_ROWS, HELDOUT_ROWS, plain, progress=False)
    slow = train(
        base_model,
        TRAIN_ROWS,
        HELDOUT_ROWS,
        plain.replace(
            fused_lora=False,
            head_on_trained_positions=False,
            shared_dropout=False,
            fast_dropout=False,
            tune_allocator=False,
        ),
        progress=False,
    )
    assert not any("forward" in vars(m) for m in slow.model.modules())  # PEFT's own LoRA forward
    assert any("forward" in vars(m) for m in fast.model.modules())
    for got, want in zip(slow.history, fast.history, strict=True):
        assert math.isclose(got["loss"], want["loss"], rel_tol=tolerance)
    assert math.isclose(slow.eval_loss_after, fast.eval_loss_after, rel_tol=tolerance)
