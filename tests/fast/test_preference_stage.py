"""The DPO stage on a tiny random Llama: a few steps raise the margin of the real reply over the generic one."""

from __future__ import annotations

import pytest

from training.config import TrainConfig, TrainingError
from training.loop import LoraRecipe
from training.preference import PreferenceRecipe, last_user_turns, preference_pairs, prompt_turns

from .test_train_passes import HELDOUT, QUICK, TRAIN, tiny_lm  # noqa: F401  (the fixture)

GENERIC = "As an AI assistant, I can help you with that."


def test_pairs_come_from_replies_after_a_user_turn():
    rows = TRAIN + [{"messages": [{"role": "assistant", "content": "Morning!"}]}]
    turns = prompt_turns(rows)
    assert len(turns) == len(TRAIN) and last_user_turns(turns)[0] == "Any scones 0?"
    pairs = preference_pairs(turns, [GENERIC, "", turns[2][1], GENERIC])
    assert [p.rejected for p in pairs] == [GENERIC, GENERIC]  # empty and identical ones are left out
    with pytest.raises(TrainingError):
        preference_pairs(turns, [GENERIC])


def test_a_few_dpo_steps_raise_the_margin_of_the_real_reply(tiny_lm, tmp_path):  # noqa: F811
    config = TrainConfig(**QUICK, max_steps=2, preference=True, preference_epochs=3, preference_max_steps=4,
                         preference_learning_rate=1e-2, preference_pairs_per_step=2)  # fmt: skip
    sft = LoraRecipe(tiny_lm, config, work_dir=tmp_path, progress=False)
    sft.setup(TRAIN, HELDOUT)
    result = sft.train()
    turns = prompt_turns(TRAIN)
    pairs = preference_pairs(turns, [GENERIC] * len(turns))
    reports = []
    stage = PreferenceRecipe(result.model, result.tokenizer, config, on_step=reports.append)
    stage.setup(pairs)
    assert float(stage.margins().abs().max()) < 1e-3  # the reference is the adapter as it was
    figures = stage.train()
    assert figures["steps"] == 4 and figures["margin"] > 0 and figures["accuracy"] == 1.0
    assert [r.step for r in reports] == [1, 2, 3, 4] and reports[-1].total_steps == 4


def test_the_real_replies_own_loss_keeps_them_likely(tiny_lm, tmp_path):  # noqa: F811
    gains = {}
    for weight in (0.0, 1.0):
        config = TrainConfig(**QUICK, max_steps=2, preference=True, preference_max_steps=6,
                             preference_sft_weight=weight, preference_learning_rate=1e-2,
                             preference_pairs_per_step=2)  # fmt: skip
        sft = LoraRecipe(tiny_lm, config, work_dir=tmp_path / str(weight), progress=False)
        sft.setup(TRAIN, HELDOUT)
        result = sft.train()
        turns = prompt_turns(TRAIN)
        stage = PreferenceRecipe(result.model, result.tokenizer, config)
        stage.setup(preference_pairs(turns, [GENERIC] * len(turns)))
        assert stage.train()["margin"] > 0
        chosen, _ = stage.logps(range(len(stage.chosen)), grad=False)
        gains[weight] = float((chosen - stage.ref_chosen).mean())
    assert gains[1.0] > gains[0.0] and gains[1.0] > 0, f"the real replies' log-probability moved {gains}"


def test_reference_log_probs_match_the_full_vocabulary_and_come_in_batches_within_the_budget(
    tiny_lm,  # noqa: F811
    tmp_path,
    monkeypatch,
):
    import torch

    from training import preference

    config = TrainConfig(**(QUICK | {"batch_tokens": 64}), max_steps=1, preference=True)
    sft = LoraRecipe(tiny_lm, config, work_dir=tmp_path, progress=False)
    sft.setup(TRAIN, HELDOUT)
    result = sft.train()
    turns = prompt_turns(TRAIN) * 6  # more pairs than one batch of 64 tokens holds
    stage = PreferenceRecipe(result.model, result.tokenizer, config)
    batches = []
    inner = preference.sequence_logps

    def recording(model, rows, pad):
        batches.append((max(len(r.ids) for r in rows) * len(rows), len(rows)))
        return inner(model, rows, pad)

    monkeypatch.setattr(preference, "sequence_logps", recording)
    stage.setup(preference_pairs(turns, [GENERIC] * len(turns)))
    assert len(batches) > 1 and sum(count for _, count in batches) == 2 * len(turns)
    assert all(size <= 64 or count == 1 for size, count in batches), "a real persona's pairs at once would not fit"
    model, row = result.model, stage.chosen[0]
    model.eval()
    with torch.no_grad():  # the reply's log-probability from every position's full logits
        logits = model(input_ids=torch.tensor([row.ids])).logits[0, :-1].log_softmax(-1)
    full = sum(float(logits[t - 1, row.ids[t]]) for t in range(1, len(row.ids)) if row.trained[t])
    assert abs(float(stage.ref_chosen[0]) - full) < 1e-3


def _write_logs(persona, count: int) -> None:
    blocks = [f"User: Any scones {i}?\nEcho: {PHRASE_OF_ECHO}" for i in range(count)]
    (persona / "logs" / "chat.txt").write_text("\n\n".join(blocks) + "\n", encoding="utf-8")


PHRASE_OF_ECHO = "Oh crumbs, petal, two scones left."


@pytest.mark.parametrize("rejected", ["base", "card"])
def test_a_persona_run_with_the_stage_publishes_its_figures(tiny_lm, tmp_path, rejected):  # noqa: F811
    from store import adapters
    from store.settings import StoreSettings
    from training.run import train_persona

    persona = tmp_path / "personas" / "echo"
    (persona / "logs").mkdir(parents=True)
    (persona / "persona.yaml").write_text(
        "training:\n  min_examples: 1\n  max_steps: 1\n  batch_tokens: 128\n  replay_share: 0\n  lora_r: 4\n"
        f"  preference: true\n  preference_max_steps: 2\n  preference_rejected: {rejected}\n"
    )
    _write_logs(persona, 8)
    settings = StoreSettings(personas_dir=persona.parent, base_model=str(tiny_lm.path), cache_dir=tmp_path / "cache")
    seen = []
    result = train_persona(settings, "echo", max_lora_rank=16, progress=False, on_step=seen.append)
    figures = adapters.read_metadata(result.path).model_extra["preference"]
    assert figures["steps"] == 2 and figures["rejected"] == rejected and figures["pairs"] >= 1
    supervised = adapters.read_metadata(result.path).eval_loss_after
    assert figures["eval_loss_after"] > 0 and figures["eval_loss_after"] != supervised, "the stage's own held-out loss"
    stage = [r for r in seen if r.message.endswith("preference")]
    assert [(r.step, r.total_steps) for r in stage] == [(2, 3), (3, 3)], "its steps follow the supervised one"
