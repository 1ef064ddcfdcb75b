"""From examples to batches, with the tiny tokenizer: length grouping, truncation, loss positions."""

from __future__ import annotations

from store.chat_format import render_conversation
from training.batches import collate, encode_split, fit_length, pad_id, plan_batches, session_parts

PHRASE = "The blue heron flies at dawn over the river."


def echo_row(i: int = 0) -> dict:
    return {
        "messages": [
            {"role": "system", "content": "You are Echo.", "weight": 0.0},
            {"role": "user", "content": f"Say it, number {i}.", "weight": 0.0},
            {"role": "assistant", "content": PHRASE, "weight": 1.0},
        ],
        "session": f"s{i}",
    }


def test_batches_group_lengths_within_the_token_budget():
    lengths = [5, 40, 7, 38, 6, 41, 39, 8, 100]
    batches = plan_batches(lengths, 80, seed=1, epoch=0)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for batch in batches:
        assert len(batch) == 1 or max(lengths[i] for i in batch) * len(batch) <= 80
    padded = sum(max(lengths[i] for i in b) * len(b) for b in batches)
    assert padded - sum(lengths) <= 12  # similar lengths share a batch
    assert plan_batches(lengths, 80, seed=1, epoch=0) == batches
    assert len(plan_batches(lengths, 80, seed=1, epoch=1)) == len(batches)


def test_long_examples_lose_old_context_but_keep_the_target(base_model):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base_model.path)
    row = echo_row()
    context = [
        {"role": r, "content": f"filler words number {i} " * 8, "weight": 0.0}
        for i, r in enumerate(["user", "assistant"] * 6)
    ]
    row = {"messages": [row["messages"][0], *context, *row["messages"][1:]], "session": "long"}
    split = encode_split(tokenizer, [row], max_seq_length=64)
    assert split.truncated == 1 and len(split.ids[0]) <= 64
    kept = tokenizer.decode(split.ids[0])
    assert kept.startswith("<|im_start|>system\nYou are Echo.") and PHRASE in kept
    assert tokenizer.decode([t for t, m in zip(split.ids[0], split.masks[0]) if m]) == PHRASE + "<|im_end|>"
    tiny = encode_split(tokenizer, [row], max_seq_length=16)
    assert len(tiny.ids[0]) == 16 and tiny.ids[0][-1] == tokenizer.eos_token_id and tiny.masks[0][-1] == 1
    # the same cut is public for scoring replies outside training
    assert fit_length(tokenizer, row["messages"], 64) == (split.ids[0], split.masks[0])


def test_examples_without_a_trained_token_are_skipped_and_counted(base_model):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base_model.path)
    silent = echo_row(1)
    silent["messages"][-1] = {**silent["messages"][-1], "weight": 0.0}
    split = encode_split(tokenizer, [echo_row(0), silent], max_seq_length=256)
    assert (len(split), split.skipped, split.truncated) == (1, 1, 0)
    assert split.target_tokens == sum(split.masks[0]) > 0
    assert (
        split.digest()
        == encode_split(tokenizer, [echo_row(0)], 256).digest()
        != encode_split(tokenizer, [echo_row(2)], 256).digest()
    )


def test_a_batch_takes_the_loss_only_where_the_next_token_is_trained(base_model):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base_model.path)
    long = echo_row(1)
    long["messages"][1] = {**long["messages"][1], "content": "Say it again and again, " * 5}
    split = encode_split(tokenizer, [echo_row(0), long], max_seq_length=256)
    assert split.lengths[0] < split.lengths[1]
    batch = collate(split, [0, 1], pad_id(tokenizer))
    width = batch.input_ids.shape[1]
    assert width == max(split.lengths) and batch.tokens == split.tokens
    assert batch.targets == split.target_tokens == len(batch.labels) == len(batch.positions)
    flat = batch.input_ids.reshape(-1)
    # each position predicts the token right after it, and that token is the label
    assert flat[batch.positions + 1].tolist() == batch.labels.tolist()
    padding = batch.input_ids[0, split.lengths[0] :]
    assert len(padding) and (padding == pad_id(tokenizer)).all()  # padded on the right


def session_row(turns: int) -> dict:
    messages = [{"role": "system", "content": "You are Echo.", "weight": 0.0}]
    for t in range(turns):
        messages.append({"role": "user", "content": f"Question {t}: what does the heron do?", "weight": 0.0})
        messages.append({"role": "assistant", "content": f"{PHRASE} Reply {t}.", "weight": 1.0})
    return {"messages": messages, "session": "whole"}


def test_a_whole_session_trains_the_same_replies_as_one_example_per_reply_for_fewer_tokens(base_model):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base_model.path)
    row = session_row(6)
    context = [{**m, "weight": 0.0} for m in row["messages"]]
    per_reply = [
        {"messages": [*context[:i], m], "session": "whole"}
        for i, m in enumerate(row["messages"])
        if m["role"] == "assistant"
    ]
    whole, windows = encode_split(tokenizer, [row], 1024), encode_split(tokenizer, per_reply, 1024)
    assert len(whole) == 1 and len(windows) == 6
    assert whole.target_tokens == windows.target_tokens
    assert whole.tokens < windows.tokens / 2
    replies = tokenizer.decode([t for t, m in zip(whole.ids[0], whole.masks[0]) if m])
    assert replies == "".join(f"{PHRASE} Reply {t}.<|im_end|>" for t in range(6))


def test_a_long_session_is_cut_at_turns_and_every_reply_is_trained_once(base_model):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base_model.path)
    row = session_row(12)
    limit = len(render_conversation(tokenizer, row["messages"][:5])[0]) + 2  # two exchanges fit
    parts = session_parts(tokenizer, row["messages"], limit)
    assert len(parts) >= 6
    replies = [m["content"] for part in parts for m in part if m["weight"] > 0]
    assert replies == [f"{PHRASE} Reply {t}." for t in range(12)]
    for part in parts:
        assert part[0]["content"] == "You are Echo." and part[1]["role"] == "user" and part[-1]["weight"] > 0
    split = encode_split(tokenizer, [row], limit)
    assert len(split) == len(parts) and split.truncated == 0
    assert max(split.lengths) <= limit
    assert split.target_tokens == encode_split(tokenizer, [row], 4096).target_tokens


def test_the_ingest_token_counts_are_of_the_form_training_uses(base_model, tmp_path):
    from store.card import PersonaCard
    from store.settings import StoreSettings
    from training.config import TrainConfig
    from training.ingest import ExampleSettings, build_examples, load_logs
    from training.tokens import count_tokens

    logs = tmp_path / "logs"
    logs.mkdir()
    lines = [f"Kit: question {t} of the day?\nJuno: answer {t}, sailor." for t in range(8)]
    (logs / "chat.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    examples = build_examples(load_logs(logs), "juno", PersonaCard(), ExampleSettings(min_examples=1))
    settings = StoreSettings(personas_dir=tmp_path, base_model=str(base_model.path), cache_dir=tmp_path / "cache")
    whole = count_tokens(settings, examples, TrainConfig())
    per_reply = count_tokens(settings, examples, TrainConfig(whole_sessions=False))
    assert whole["train_trained_tokens"] == per_reply["train_trained_tokens"] > 0
    assert whole["train_tokens"] < per_reply["train_tokens"]
