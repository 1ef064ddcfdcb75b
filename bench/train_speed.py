"""Training speed: this project's trainer against the standard recipe, same data and settings.

Run by hand (about 5-10 minutes on two quiet CPU cores)::

    .venv/bin/python bench/train_speed.py                 # one epoch of an example persona
    .venv/bin/python bench/train_speed.py --epochs 2 --rounds 2 --persona wren
    .venv/bin/python bench/train_speed.py --synthetic     # a generated chat set instead of a persona

Results are printed and appended to ``bench/RESULTS.md``. In one process, on the same examples
(an example persona's logs through ``training.ingest`` when ``personas/*/logs`` exist, otherwise a
synthetic chat set) and the same settings (``TrainConfig`` defaults: LoRA r=16 on every linear layer,
learning rate, cosine schedule, warm-up, clipping, seed):

(1) ``training.trainer.train``: length-grouped batches under a token budget, no attention mask, output
    head only on trained positions, cheap dropout;
(2) the standard recipe: ``transformers.Trainer`` on a PEFT model with ``DataCollatorForSeq2Seq``
    padded batches (labels -100 outside the persona's turns), a batch size giving the same number of
    steps per epoch, so both see every example the same number of times (the same target tokens).

It reports training tokens/s (real, unpadded tokens over the time spent in training steps) by wall
clock and by process CPU time (CPU time is steadier when other programs share the cores; it is
divided by the thread count to read as tokens/s), the ratio, and the held-out loss of both final
adapters, measured by the same function. ``--rounds N`` repeats both runs and reports medians.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.results import RESULTS, append_section  # noqa: E402


def load_rows(persona: str | None, synthetic: bool):
    """(name, train rows, held-out rows): a persona's examples, or a synthetic chat set."""
    if not synthetic:
        try:
            from store.registry import PersonaStore
            from training.ingest import ExampleSettings, build_examples, load_logs
        except ImportError:
            synthetic = True
    if not synthetic:
        store = PersonaStore(REPO / "personas")
        names = [n for n in store.names() if (store.root / n / "logs").is_dir()]
        if persona:
            names = [persona]
        if names:
            p = store.get(names[0])
            examples = build_examples(load_logs(p.logs_dir), p.name, p.card,
                                      ExampleSettings.from_overrides(p.card.training))
            return f"persona '{p.name}'", examples.train.to_list(), examples.heldout.to_list()
    return ("synthetic chat set",) + synthetic_rows()


def synthetic_rows(count: int = 180, heldout: int = 20, seed: int = 0):
    """Chats of varied length: a short system prompt, 0-6 prior turns, one target reply."""
    import random

    rng = random.Random(seed)
    words = ("bread oven morning flour petal crumbs village kettle scone butter rain window garden "
             "market sugar lemon cake shop door cat bench river hill church tea jam").split()

    def sentence(low: int, high: int) -> str:
        return " ".join(rng.choice(words) for _ in range(rng.randint(low, high))).capitalize() + "."

    rows = []
    for i in range(count + heldout):
        messages = [{"role": "system", "content": "You are Wren, the village baker.", "weight": 0.0}]
        for turn in range(rng.randint(0, 3)):
            messages.append({"role": "user", "content": sentence(3, 25), "weight": 0.0})
            messages.append({"role": "assistant", "content": sentence(3, 30), "weight": 0.0})
        messages.append({"role": "user", "content": sentence(3, 25), "weight": 0.0})
        messages.append({"role": "assistant", "content": sentence(4, 40), "weight": 1.0})
        rows.append({"messages": messages, "session": f"s{i}"})
    return rows[:count], rows[count:]


def run_ours(base, tokenizer, train_rows, heldout_rows, config):
    from training.trainer import train

    cpu_marks: list[float] = []

    def mark(progress) -> None:
        cpu_marks.append(time.process_time())

    outcome = train(base, train_rows, heldout_rows, config, progress=True, on_step=mark,
                    tokenizer=tokenizer, description="ours")
    # marks: after the first evaluation, then after each step (the last one after the final eval)
    step_cpu = [b - a for a, b in zip(cpu_marks[:-1], cpu_marks[1:])][: outcome.steps]
    tokens = sum(h["tokens"] for h in outcome.history)
    return {
        "steps": outcome.steps,
        "tokens": tokens,
        "targets": sum(h["targets"] for h in outcome.history),
        "wall_s": outcome.train_seconds,
        "cpu_s": sum(step_cpu),
        "eval_before": outcome.eval_loss_before,
        "eval_after": outcome.evals[-1]["loss"],
    }


def run_standard(base, tokenizer, train_split, heldout_split, config, epochs: int, steps_per_epoch: int):
    import math

    import torch
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from transformers import (AutoModelForCausalLM, DataCollatorForSeq2Seq, Trainer, TrainerCallback,
                              TrainingArguments)

    from training.trainer import evaluate

    def labels(ids, mask):
        return [t if m else -100 for t, m in zip(ids, mask)]

    data = Dataset.from_dict({
        "input_ids": train_split.ids,
        "attention_mask": [[1] * len(i) for i in train_split.ids],
        "labels": [labels(i, m) for i, m in zip(train_split.ids, train_split.masks)],
    })
    batch_size = math.ceil(len(train_split) / steps_per_epoch)
    total_steps = epochs * math.ceil(len(train_split) / batch_size)

    counted = {"tokens": 0, "targets": 0, "padded": 0}
    collator = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100)

    def counting_collator(features):
        batch = collator(features)
        counted["tokens"] += int(batch["attention_mask"].sum())
        counted["padded"] += batch["input_ids"].numel()
        counted["targets"] += int((batch["labels"][:, 1:] != -100).sum())
        return batch

    class Timer(TrainerCallback):
        wall = cpu = 0.0

        def on_step_begin(self, args, state, control, **kwargs):
            self._w, self._c = time.perf_counter(), time.process_time()

        def on_step_end(self, args, state, control, **kwargs):
            Timer.wall += time.perf_counter() - self._w
            Timer.cpu += time.process_time() - self._c

    torch.manual_seed(config.seed)
    model = AutoModelForCausalLM.from_pretrained(base.path, dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(
        r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
        target_modules=list(config.target_modules), bias="none", task_type="CAUSAL_LM"))
    warmup = max(1, round(config.warmup_ratio * total_steps)) if config.warmup_ratio > 0 else 0
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            output_dir=out, per_device_train_batch_size=batch_size, num_train_epochs=epochs,
            learning_rate=config.learning_rate, weight_decay=config.weight_decay,
            max_grad_norm=config.max_grad_norm, warmup_steps=warmup,
            lr_scheduler_type="cosine_with_min_lr", lr_scheduler_kwargs={"min_lr_rate": config.min_lr_ratio},
            seed=config.seed, logging_steps=1, save_strategy="no", eval_strategy="no", report_to=[],
            use_cpu=True, dataloader_num_workers=0, remove_unused_columns=False,
        )
        trainer = Trainer(model=model, args=args, train_dataset=data, data_collator=counting_collator,
                          callbacks=[Timer()])
        trainer.train()
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return {
        "steps": total_steps,
        "batch_size": batch_size,
        "tokens": counted["tokens"],
        "padded": counted["padded"],
        "targets": counted["targets"],
        "wall_s": Timer.wall,
        "cpu_s": Timer.cpu,
        "eval_after": evaluate(trainer.model, heldout_split, config.batch_tokens * 2, pad_id),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--persona", help="example persona to take the data from (default: the first with logs)")
    parser.add_argument("--synthetic", action="store_true", help="use a generated chat set")
    parser.add_argument("--epochs", type=int, default=1, help="passes over the data for both (default 1)")
    parser.add_argument("--rounds", type=int, default=1, help="repeat both runs and report medians")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    from store.base_model import resolve_base_model
    from training.config import TrainConfig
    from training.trainer import encode_split, load_tokenizer, plan_batches, set_threads, tune_allocator

    cache = Path(os.environ.get("PERSONA_CACHE_DIR", REPO / ".cache"))
    base = resolve_base_model(os.environ.get("PERSONA_BASE_MODEL", "bundled"), cache)
    source, train_rows, heldout_rows = load_rows(args.persona, args.synthetic)
    config = TrainConfig(epochs=args.epochs, eval_every=10**9, early_stopping_patience=0, checkpoint_every=10**9)
    threads = config.resolve_threads()
    tune_allocator()  # process-wide: the standard recipe gets it too
    set_threads(threads)
    tokenizer = load_tokenizer(base)
    train_split = encode_split(tokenizer, train_rows, config.max_seq_length)
    heldout_split = encode_split(tokenizer, heldout_rows, config.max_seq_length)
    steps_per_epoch = len(plan_batches(train_split.lengths, config.batch_tokens, config.seed, 0))
    print(f"data: {source}: {len(train_split)} train examples ({train_split.tokens} tokens, "
          f"{train_split.target_tokens} trained), {len(heldout_split)} held out; "
          f"{steps_per_epoch} steps/epoch x {args.epochs}; {threads} threads", flush=True)

    rounds = []
    for number in range(args.rounds):
        load_before = os.getloadavg()[0]
        ours = run_ours(base, tokenizer, train_rows, heldout_rows, config)
        standard = run_standard(base, tokenizer, train_split, heldout_split, config, args.epochs, steps_per_epoch)
        load_after = os.getloadavg()[0]
        rounds.append((ours, standard, load_before, load_after))
        print(f"round {number + 1}: ours {ours['tokens'] / ours['wall_s']:.0f} tok/s, "
              f"standard {standard['tokens'] / standard['wall_s']:.0f} tok/s", flush=True)

    def med(values):
        return statistics.median(values)

    ours_wall = med([o["tokens"] / o["wall_s"] for o, *_ in rounds])
    std_wall = med([s["tokens"] / s["wall_s"] for _, s, *_ in rounds])
    ours_cpu = med([o["tokens"] / o["cpu_s"] * threads for o, *_ in rounds])
    std_cpu = med([s["tokens"] / s["cpu_s"] * threads for _, s, *_ in rounds])
    ratio_wall = med([(o["tokens"] / o["wall_s"]) / (s["tokens"] / s["wall_s"]) for o, s, *_ in rounds])
    ratio_cpu = med([(o["tokens"] / o["cpu_s"]) / (s["tokens"] / s["cpu_s"]) for o, s, *_ in rounds])
    ours, standard = rounds[-1][0], rounds[-1][1]
    loads = ", ".join(f"{a:.1f}-{b:.1f}" for *_, a, b in rounds)
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"## Training speed, {stamp}",
        "",
        f"`bench/train_speed.py --epochs {args.epochs} --rounds {args.rounds}`: {source}, "
        f"{len(train_split)} training examples ({train_split.tokens} tokens, {train_split.target_tokens} trained "
        f"per epoch), {len(heldout_split)} held out; {base.id}, LoRA r={config.lora_r} on "
        f"{len(config.target_modules)} linear layers, fp32, lr {config.learning_rate:g}, {threads} threads "
        f"(load average {loads}).",
        "",
        "| recipe | steps | tokens seen (padded) | trained tokens | tokens/s (wall) | tokens/s (CPU time) | held-out loss |",
        "|---|---|---|---|---|---|---|",
        f"| base model, before training | | | | | | {ours['eval_before']:.4f} |",
        f"| standard: Trainer + PEFT, padded batches of {standard['batch_size']} | {standard['steps']} | "
        f"{standard['tokens']} ({standard['padded']}) | {standard['targets']} | {std_wall:.0f} | {std_cpu:.0f} | "
        f"{standard['eval_after']:.4f} |",
        f"| this trainer, {config.batch_tokens}-token length-grouped batches | {ours['steps']} | {ours['tokens']} | "
        f"{ours['targets']} | {ours_wall:.0f} | {ours_cpu:.0f} | {ours['eval_after']:.4f} |",
        "",
        f"Speed-up: **{ratio_wall:.2f}x** by wall clock, {ratio_cpu:.2f}x by CPU time"
        + (f" (medians of {args.rounds} rounds)" if args.rounds > 1 else "") + "; held-out loss "
        f"{ours['eval_after']:.4f} vs {standard['eval_after']:.4f}.",
        "",
    ]
    append_section("\n" + "\n".join(lines), args.out)


if __name__ == "__main__":
    main()
