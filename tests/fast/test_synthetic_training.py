"""What a run trains on besides the logs: accepted generated examples at a lower weight, replay of
general conversation, the held-out split kept real, and the counts a version reports."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from store.adapters import ExampleCounts
from store.base_model import BaseModel
from store.card import PersonaCard
from store.chat_format import render_text, with_system_prompt
from store.registry import Persona
from store.synthetic import Source, SyntheticExample, write_batch
from training.config import TrainConfig
from training.ingest import ExampleSettings, build_examples, load_logs
from training.mixture import synthetic_rows, training_mix
from training.replay import REPLAY_PROMPTS, replay_conversations, replay_count

SYSTEM = "You are Wren."
SOURCE = Source(url="http://generator.test/v1", model="SmolLM2-135M-Instruct")


def generated(number: int, status: str = "accepted", batch: int = 1) -> SyntheticExample:
    return SyntheticExample(
        id=f"syn-{number}",
        batch=batch,
        prompt=f"Made-up question {number}?",
        reply=f"Made-up reply {number}, petal.",
        source=SOURCE,
        status=status,
    )


def wren(tmp_path: Path, sessions: int = 9) -> Persona:
    """A persona with ``sessions`` short sessions of real lines (enough for a held-out split)."""
    path = tmp_path / "wren"
    (path / "logs").mkdir(parents=True)
    blocks = [
        "\n".join(f"Kit: real question {t} of session {s}?\nWren: Real answer {t} of session {s}." for t in range(2))
        for s in range(sessions)
    ]
    (path / "logs" / "counter.txt").write_text("\n\n".join(blocks) + "\n", encoding="utf-8")
    return Persona(name="wren", path=path, card=PersonaCard(speakers=["Wren"], system_prompt=SYSTEM))


def examples_of(persona: Persona):
    settings = ExampleSettings(min_examples=1, heldout_fraction=0.3)
    return build_examples(load_logs(persona.logs_dir), persona.name, persona.card, settings)


def replies(rows) -> list[str]:
    return [row["messages"][-1]["content"] for row in rows]


FAKE_REPLAY = [
    [{"role": "user", "content": f"General question {i}?"}, {"role": "assistant", "content": f"General answer {i}."}]
    for i in range(40)
]


# --- the weight reaches the loss -------------------------------------------------------------------


def tiny_model(vocab: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        use_cache=False,
    )
    return LlamaForCausalLM(config).eval()


def reference(model, ids: list[int], mask: list[float]) -> tuple[float, int]:
    """Summed cross-entropy of the trained tokens of one example run alone, and how many there are."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0]
    trained = [t for t in range(1, len(ids)) if mask[t] > 0]
    targets = torch.tensor([ids[t] for t in trained])
    mean = torch.nn.functional.cross_entropy(logits[[t - 1 for t in trained]], targets)
    return float(mean) * len(trained), len(trained)


def test_a_generated_reply_counts_with_its_weight_in_the_loss(base_model):
    from transformers import AutoTokenizer

    from training.batches import collate, encode_split, pad_id
    from training.model import LossPath

    tokenizer = AutoTokenizer.from_pretrained(base_model.path)
    real = {
        "messages": with_system_prompt(
            [
                {"role": "user", "content": "Any scones left?", "weight": 0.0},
                {"role": "assistant", "content": "Oh crumbs, two left, petal.", "weight": 1.0},
            ],
            SYSTEM,
        )
    }
    [made_up] = synthetic_rows([generated(1)], SYSTEM, 0.25)
    split = encode_split(tokenizer, [real, made_up], 256)
    assert {w for w in split.masks[1] if w} == {0.25} and {w for w in split.masks[0] if w} == {1.0}

    model = tiny_model(len(tokenizer))
    loss_sum = LossPath(model)
    (real_sum, real_count), (made_sum, made_count) = (reference(model, i, m) for i, m in zip(split.ids, split.masks))

    both = collate(split, [0, 1], pad_id(tokenizer))
    with torch.no_grad():
        mixed = float(loss_sum(both)) / both.weight_total
    expected = (real_sum + 0.25 * made_sum) / (real_count + 0.25 * made_count)
    assert mixed == pytest.approx(expected, rel=1e-5)
    assert mixed != pytest.approx((real_sum + made_sum) / (real_count + made_count), rel=1e-3)

    alone = collate(encode_split(tokenizer, [real], 256), [0], pad_id(tokenizer))
    with torch.no_grad():
        plain = float(loss_sum(alone)) / alone.weight_total
    assert plain == pytest.approx(real_sum / real_count, rel=1e-5)  # real examples alone: the plain mean


def test_synthetic_weight_zero_leaves_generated_examples_out(tmp_path):
    persona = wren(tmp_path)
    write_batch(persona.path, 1, [generated(1), generated(2)])
    examples = examples_of(persona)
    mix = training_mix(persona, examples.train, TrainConfig(synthetic_weight=0.0, replay_share=0.0), lambda: [])
    assert mix.counts == ExampleCounts(real=len(examples.train), synthetic=0, replay=0)
    assert not any(text.startswith("Made-up") for text in replies(mix.train))


# --- the split and the mix -------------------------------------------------------------------------


def test_only_accepted_examples_are_trained_and_the_held_out_split_stays_real(tmp_path):
    persona = wren(tmp_path)
    write_batch(persona.path, 1, [generated(1), generated(2, "pending"), generated(3, "rejected")])
    write_batch(persona.path, 2, [generated(4, batch=2)])
    examples = examples_of(persona)
    assert len(examples.heldout) > 0

    mix = training_mix(persona, examples.train, TrainConfig(replay_share=0.5), lambda: FAKE_REPLAY)

    held_out = replies(examples.heldout)
    assert all(text.startswith("Real answer") for text in held_out)
    assert not set(held_out) & set(replies(mix.train))
    made_up = [row for row in mix.train if row["messages"][-1]["content"].startswith("Made-up")]
    assert sorted(replies(made_up)) == ["Made-up reply 1, petal.", "Made-up reply 4, petal."]
    for row in made_up:  # the persona's system prompt, the reply at the default weight of 0.5
        assert row["messages"][0] == {"role": "system", "content": SYSTEM, "weight": 0.0}
        assert [m["weight"] for m in row["messages"]] == [0.0, 0.0, 0.5]
    replayed = [row for row in mix.train if row["messages"][-1]["content"].startswith("General answer")]
    assert mix.counts == ExampleCounts(
        real=len(examples.train), synthetic=2, replay=round(0.5 * (len(examples.train) + 2))
    )
    assert len(replayed) == mix.counts.replay and len(mix.train) == sum(mix.counts.model_dump().values())
    assert "2 generated (accepted)" in mix.describe()


def test_whole_sessions_mix_counts_replies_and_replays_the_same_share(tmp_path):
    persona = wren(tmp_path)
    examples = examples_of(persona)
    config = TrainConfig(replay_share=0.5, whole_sessions=True)
    per_reply = training_mix(persona, examples.train, config, lambda: FAKE_REPLAY)
    whole = training_mix(persona, examples.train_sessions, config, lambda: FAKE_REPLAY, replies=len(examples.train))
    assert len(examples.train_sessions) < len(examples.train)
    assert whole.counts == per_reply.counts  # replies, not rows, whatever the form
    assert len(whole.train) == len(examples.train_sessions) + whole.counts.replay


def test_generated_examples_lose_private_details_like_the_logs(tmp_path):
    persona = wren(tmp_path)
    leaky = generated(1).model_copy(update={"reply": "Ring me on +44 20 7946 0958 or mail wren@example.com, petal."})
    write_batch(persona.path, 1, [leaky])
    mix = training_mix(persona, examples_of(persona).train, TrainConfig(replay_share=0.0), lambda: [])
    [reply] = [text for text in replies(mix.train) if "petal" in text]
    assert reply == "Ring me on [PHONE] or mail [EMAIL], petal."


def test_replay_rows_use_the_base_models_default_system_prompt(tmp_path, base_model):
    from transformers import AutoTokenizer

    persona = wren(tmp_path)
    mix = training_mix(persona, examples_of(persona).train, TrainConfig(replay_share=0.5), lambda: FAKE_REPLAY)
    replayed = [row for row in mix.train if row["session"].startswith("replay/")]
    assert replayed
    tokenizer = AutoTokenizer.from_pretrained(base_model.path)
    for row in replayed:
        assert [(m["role"], m["weight"]) for m in row["messages"]] == [("user", 0.0), ("assistant", 1.0)]
        text = render_text(tokenizer, row["messages"])
        assert "You are a helpful AI assistant named SmolLM" in text and SYSTEM not in text


@pytest.mark.parametrize(
    ("share", "examples", "available", "expected"),
    [(0.1, 30, 40, 3), (0.1, 4, 40, 1), (0.5, 200, 40, 40), (0.0, 30, 40, 0), (0.1, 30, 0, 0)],
)
def test_replay_is_a_share_of_the_persona_examples(share, examples, available, expected):
    assert replay_count(share, examples, available) == expected


def test_replay_off_never_makes_the_replay_set(tmp_path):
    persona = wren(tmp_path)

    def forbidden():
        raise AssertionError("the replay set was asked for with replay_share 0")

    mix = training_mix(persona, examples_of(persona).train, TrainConfig(replay_share=0.0), forbidden)
    assert mix.counts.replay == 0


# --- the replay cache ------------------------------------------------------------------------------


class FakeAnswerer:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, prompts):
        self.calls += 1
        # One answer cut off mid-sentence, one with no whole sentence at all.
        return [f"Answer {i}. And then it goes on" if i else "cut off without an end" for i in range(len(prompts))]


def test_replay_answers_are_made_once_per_base_model_and_cached(tmp_path):
    base = BaseModel(id="tiny", path=tmp_path, hash="a" * 64)
    answerer = FakeAnswerer()
    first = replay_conversations(tmp_path / "cache", base, answerer)
    assert answerer.calls == 1
    assert replay_conversations(tmp_path / "cache", base, answerer) == first
    assert replay_conversations(tmp_path / "cache", base, None) == first  # no answerer needed once cached
    assert answerer.calls == 1

    assert [c[1]["content"] for c in first[:2]] == ["Answer 1.", "Answer 2."]  # trimmed to whole sentences
    assert len(first) == len(REPLAY_PROMPTS) - 1 and first[0][0]["content"] == REPLAY_PROMPTS[1]

    other = BaseModel(id="tiny", path=tmp_path, hash="b" * 64)
    replay_conversations(tmp_path / "cache", other, answerer)
    assert answerer.calls == 2  # another base model has answers of its own
    cached = sorted((tmp_path / "cache").rglob("*.json"))
    assert len(cached) == 2 and json.loads(cached[0].read_text())["prompts"] == list(REPLAY_PROMPTS)


def test_replay_never_trains_on_the_forgetting_figures_conversations(tmp_path):
    from training.fidelity.general import GENERAL_PROMPTS, general_conversations

    assert not set(REPLAY_PROMPTS) & set(GENERAL_PROMPTS)
    base = BaseModel(id="tiny", path=tmp_path, hash="c" * 64)
    replay_conversations(tmp_path, base, FakeAnswerer())
    assert general_conversations(tmp_path, base.id, base.hash, url=None) == []  # a cache of its own


# --- what the version reports ----------------------------------------------------------------------


def test_the_version_metadata_and_report_count_each_kind_of_example(tmp_path, base_model):
    from store.adapters import AdapterMetadata
    from training.publish import build_metadata, write_report
    from training.result import TrainResult

    counts = ExampleCounts(real=12, synthetic=5, replay=2)
    outcome = TrainResult(
        model=None,
        tokenizer=None,
        config=TrainConfig(synthetic_weight=0.3),
        base=base_model,
        steps=2,
        total_steps=2,
        epochs=1,
        steps_per_epoch=2,
        stopped_early=False,
        best_step=2,
        train_loss=1.5,
        eval_loss_before=None,
        eval_loss_after=None,
        history=[{"step": 1, "loss": 1.5, "lr": 0.001, "tokens": 10, "targets": 4, "seconds": 0.1}],
        evals=[],
        tokens={"train_examples": 19},
        duration_s=1.0,
        train_seconds=0.1,
        examples=counts,
    )
    metadata = build_metadata(outcome, "d" * 64)
    again = AdapterMetadata.model_validate_json(metadata.model_dump_json())
    assert again.examples == counts and again.settings["synthetic_weight"] == 0.3
    write_report(outcome, metadata, "wren", tmp_path / "report.md")
    text = (tmp_path / "report.md").read_text()
    assert "12 real, 5 generated (weight 0.3) and 2 general-conversation (replay) examples" in text
