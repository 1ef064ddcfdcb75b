"""Training speed: this project's trainer against the standard recipe, and what each speed-up is worth.

Run by hand on quiet cores (results are printed and appended to ``bench/RESULTS.md``)::

    .venv/bin/python bench/train_speed.py                 # one epoch of an example persona, both recipes
    .venv/bin/python bench/train_speed.py --epochs 2 --rounds 2 --persona wren
    .venv/bin/python bench/train_speed.py --synthetic     # a generated chat set instead of a persona
    .venv/bin/python bench/train_speed.py --ablate        # each speed-up turned off in turn
    .venv/bin/python bench/train_speed.py --ablate --levers-only   # only the levers off by default, on

The data are an example persona's examples (through ``training.ingest`` when ``personas/*/logs``
exist), otherwise a synthetic chat set; the settings are ``TrainConfig``'s defaults (LoRA r=16 on every
linear layer, learning rate, cosine schedule, warm-up, clipping, seed).

Compared (default):

(1) ``training.loop.train``: length-grouped batches under a token budget, no attention mask, and the
    speed-ups of ``training.speedups`` and ``training.model``;
(2) the standard recipe: ``transformers.Trainer`` on a PEFT model with ``DataCollatorForSeq2Seq``
    padded batches (labels -100 outside the persona's turns) and ``group_by_length`` sampling (the
    strongest standard setting), a batch size giving the same number of steps per epoch, so both see
    every example the same number of times (the same target tokens).

``--ablate`` runs this trainer with every speed-up on, then with each one off in turn, then with each
lever that is off by default (bfloat16 autocast, a compiled decoder) and each memory saver (gradient
checkpointing, 8-bit base) on; every row in a fresh process, since the allocator tuning is
process-wide and lasting.

Figures: training tokens/s (real, unpadded tokens over the time spent in training steps) by wall clock,
also leaving out the first step (where a compiled decoder pays for its compile), and by process CPU
time (steadier when other programs share the cores; divided by the thread count to read as
tokens/s), the held-out loss of the final adapters, measured by the same function, and the peak
resident memory. ``--rounds N`` repeats the runs and reports medians.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from multiprocessing import get_context
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.results import RESULTS, append_section  # noqa: E402

SPEEDUPS = ("fused_lora", "head_on_trained_positions", "shared_dropout", "fast_dropout", "tune_allocator")
"""``TrainConfig`` switches that only make training faster: each gets an ablation row."""
MEMORY_SAVERS = ("gradient_checkpointing", "load_in_8bit")
"""``TrainConfig`` switches that trade speed for memory: each gets a row with it turned on."""
LEVERS = {"bf16": (True, False), "compile_decoder": (True,)}
"""``TrainConfig`` switches that may make training faster, and the values each gets a row with (``bf16``
is on by default on CPUs with AMX and off elsewhere, so it gets both)."""


def load_rows(persona: str | None, synthetic: bool):
    """(name, train rows, held-out rows): a persona's examples, or a synthetic chat set."""
    if not synthetic:
        from store.registry import PersonaStore
        from training.ingest import persona_examples

        store = PersonaStore(REPO / "personas")
        names = [persona] if persona else [n for n in store.names() if (store.root / n / "logs").is_dir()]
        if names:
            p = store.get(names[0])
            examples = persona_examples(p)
            return f"persona '{p.name}'", examples.train.to_list(), examples.heldout.to_list()
    return ("synthetic chat set",) + synthetic_rows()


def synthetic_rows(count: int = 180, heldout: int = 20, seed: int = 0):
    """Chats of varied length: a short system prompt, 0-6 prior turns, one target reply."""
    import random

    rng = random.Random(seed)
    words = [
        "bread",
        "oven",
        "morning",
        "flour",
        "petal",
        "crumbs",
        "village",
        "kettle",
        "scone",
        "butter",
        "rain",
        "window",
        "garden",
        "market",
        "sugar",
        "lemon",
        "cake",
        "shop",
        "door",
        "cat",
        "bench",
        "river",
        "hill",
        "church",
        "tea",
        "jam",
    ]

    def sentence(low: int, high: int) -> str:
        return " ".join(rng.choice(words) for _ in range(rng.randint(low, high))).capitalize() + "."

    rows = []
    for i in range(count + heldout):
        messages = [{"role": "system", "content": "You are Wren, the village baker.", "weight": 0.0}]
        for _ in range(rng.randint(0, 3)):
            messages.append({"role": "user", "content": sentence(3, 25), "weight": 0.0})
            messages.append({"role": "assistant", "content": sentence(3, 30), "weight": 0.0})
        messages.append({"role": "user", "content": sentence(3, 25), "weight": 0.0})
        messages.append({"role": "assistant", "content": sentence(4, 40), "weight": 1.0})
        rows.append({"messages": messages, "session": f"s{i}"})
    return rows[:count], rows[count:]


def setup(args: argparse.Namespace, **overrides: Any):
    """(base, tokenizer, data source, train rows, held-out rows, settings) of a measurement."""
    from store.base_model import resolve_base_model
    from training.config import TrainConfig
    from training.model import load_tokenizer, resolved_dtype

    cache = Path(os.environ.get("PERSONA_CACHE_DIR", REPO / ".cache"))
    base = resolve_base_model(os.environ.get("PERSONA_BASE_MODEL", "bundled"), cache)
    source, train_rows, heldout_rows = load_rows(args.persona, args.synthetic)
    config = TrainConfig(
        epochs=args.epochs,
        max_steps=args.max_steps,
        eval_every=10**9,
        early_stopping_patience=0,
        checkpoint_every=10**9,
        **overrides,
    )
    return base, load_tokenizer(base), source, train_rows, heldout_rows, resolved_dtype(config)


def run_ours(base, tokenizer, train_rows, heldout_rows, config) -> dict[str, Any]:
    from training.loop import train

    cpu_marks: list[float] = []

    def mark(progress) -> None:
        cpu_marks.append(time.process_time())

    outcome = train(
        base, train_rows, heldout_rows, config, progress=True, on_step=mark, tokenizer=tokenizer, description="ours"
    )
    # marks: after the first evaluation, then after each step (the last one after the final eval)
    step_cpu = [b - a for a, b in zip(cpu_marks[:-1], cpu_marks[1:])][: outcome.steps]
    return {
        "steps": outcome.steps,
        "tokens": sum(h["tokens"] for h in outcome.history),
        "targets": sum(h["targets"] for h in outcome.history),
        "wall_s": outcome.train_seconds,
        "later_tokens": sum(h["tokens"] for h in outcome.history[1:]),
        "later_s": sum(h["seconds"] for h in outcome.history[1:]),
        "cpu_s": sum(step_cpu),
        "eval_before": outcome.eval_loss_before,
        "eval_after": outcome.evals[-1]["loss"],
        "peak_rss_mb": outcome.peak_rss_mb,
    }


def standard_trainer(base, tokenizer, train_split, config, batch_size: int, epochs: int, total_steps: int, out: str):
    """``transformers.Trainer`` on a fresh PEFT model: padded batches, group_by_length, the same schedule."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, DataCollatorForSeq2Seq, Trainer, TrainingArguments

    labels = [[t if m else -100 for t, m in zip(i, mask)] for i, mask in zip(train_split.ids, train_split.masks)]
    data = Dataset.from_dict(
        {"input_ids": train_split.ids, "attention_mask": [[1] * len(i) for i in train_split.ids], "labels": labels}
    )
    torch.manual_seed(config.seed)
    model = AutoModelForCausalLM.from_pretrained(base.path, dtype=torch.float32)
    lora = dict(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout, bias="none")
    model = get_peft_model(model, LoraConfig(**lora, target_modules=list(config.target_modules), task_type="CAUSAL_LM"))
    schedule = dict(lr_scheduler_type="cosine_with_min_lr", lr_scheduler_kwargs={"min_lr_rate": config.min_lr_ratio})
    warmup = max(1, round(config.warmup_ratio * total_steps)) if config.warmup_ratio > 0 else 0
    args = TrainingArguments(
        output_dir=out, per_device_train_batch_size=batch_size, num_train_epochs=epochs, max_steps=total_steps,
        learning_rate=config.learning_rate, weight_decay=config.weight_decay, max_grad_norm=config.max_grad_norm,
        warmup_steps=warmup, **schedule, train_sampling_strategy="group_by_length", seed=config.seed,
        logging_steps=1, save_strategy="no", eval_strategy="no", report_to=[], use_cpu=True,
        dataloader_num_workers=0, remove_unused_columns=False, bf16=bool(config.bf16),
    )  # fmt: skip
    collator = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100)
    return Trainer(model=model, args=args, train_dataset=data, data_collator=collator, processing_class=tokenizer)


def run_standard(base, tokenizer, train_split, heldout_split, config, epochs, steps_per_epoch, max_steps):
    import math

    from transformers import TrainerCallback

    from training.batches import pad_id
    from training.model import heldout_loss

    batch_size = math.ceil(len(train_split) / steps_per_epoch)
    total_steps = epochs * math.ceil(len(train_split) / batch_size)
    total_steps = min(total_steps, max_steps) if max_steps else total_steps
    counted = {"tokens": 0, "targets": 0, "padded": 0, "wall_s": 0.0, "cpu_s": 0.0}

    class Meter(TrainerCallback):
        """Time in training steps, and the tokens of each batch."""

        def on_step_begin(self, args, state, control, **kwargs):
            self.wall, self.cpu = time.perf_counter(), time.process_time()

        def on_step_end(self, args, state, control, **kwargs):
            counted["wall_s"] += time.perf_counter() - self.wall
            counted["cpu_s"] += time.process_time() - self.cpu

    with tempfile.TemporaryDirectory() as out:
        trainer = standard_trainer(base, tokenizer, train_split, config, batch_size, epochs, total_steps, out)
        collate = trainer.data_collator

        def counting(features):
            batch = collate(features)
            counted["tokens"] += int(batch["attention_mask"].sum())
            counted["padded"] += batch["input_ids"].numel()
            counted["targets"] += int((batch["labels"][:, 1:] != -100).sum())
            return batch

        trainer.data_collator = counting
        trainer.add_callback(Meter())
        trainer.train()
    loss = heldout_loss(trainer.model, heldout_split, config.batch_tokens * 2, pad_id(tokenizer))
    return {"steps": total_steps, "batch_size": batch_size, **counted, "eval_after": loss}


def describe(source: str, train_split, heldout_split, base, config, threads: int) -> str:
    return (
        f"{source}, {len(train_split)} training examples ({train_split.tokens} tokens, "
        f"{train_split.target_tokens} trained per epoch), {len(heldout_split)} held out; {base.id}, LoRA "
        f"r={config.lora_r} on {len(config.target_modules)} linear layers, "
        f"{'bfloat16 autocast' if config.bf16 else 'fp32'} (both recipes), lr {config.learning_rate:g}, "
        f"{threads} threads"
    )


def command_line(args: argparse.Namespace) -> str:
    flags = [f"--epochs {args.epochs}", f"--rounds {args.rounds}"]
    flags += ["--ablate"] if args.ablate else []
    flags += ["--levers-only"] if args.levers_only else []
    flags += [f"--max-steps {args.max_steps}"] if args.max_steps else []
    flags += [f"--persona {args.persona}"] if args.persona else []
    flags += ["--synthetic"] if args.synthetic else []
    return "`bench/train_speed.py " + " ".join(flags) + "`"


def compare(args: argparse.Namespace) -> list[str]:
    """This trainer against the standard recipe; the lines of the results section."""
    from training.batches import encode_split, plan_batches
    from training.model import set_threads
    from training.speedups import tune_allocator

    base, tokenizer, source, train_rows, heldout_rows, config = setup(args)
    threads = config.resolve_threads()
    tune_allocator()  # process-wide: the standard recipe gets it too
    set_threads(threads)
    train_split = encode_split(tokenizer, train_rows, config.max_seq_length)
    heldout_split = encode_split(tokenizer, heldout_rows, config.max_seq_length)
    steps_per_epoch = len(plan_batches(train_split.lengths, config.batch_tokens, config.seed, 0))
    print(
        f"data: {describe(source, train_split, heldout_split, base, config, threads)}; "
        f"{steps_per_epoch} steps/epoch x {args.epochs}",
        flush=True,
    )

    rounds = []
    for number in range(args.rounds):
        load_before = os.getloadavg()[0]
        ours = run_ours(base, tokenizer, train_rows, heldout_rows, config)
        standard = run_standard(
            base, tokenizer, train_split, heldout_split, config, args.epochs, steps_per_epoch, args.max_steps
        )
        rounds.append((ours, standard, load_before, os.getloadavg()[0]))
        print(
            f"round {number + 1}: ours {ours['tokens'] / ours['wall_s']:.0f} tok/s, "
            f"standard {standard['tokens'] / standard['wall_s']:.0f} tok/s",
            flush=True,
        )

    def med(values):
        return statistics.median(values)

    ours_wall, std_wall = (
        med([o["tokens"] / o["wall_s"] for o, *_ in rounds]),
        med([s["tokens"] / s["wall_s"] for _, s, *_ in rounds]),
    )
    ours_cpu = med([o["tokens"] / o["cpu_s"] * threads for o, *_ in rounds])
    std_cpu = med([s["tokens"] / s["cpu_s"] * threads for _, s, *_ in rounds])
    ratio_wall = med([(o["tokens"] / o["wall_s"]) / (s["tokens"] / s["wall_s"]) for o, s, *_ in rounds])
    ratio_cpu = med([(o["tokens"] / o["cpu_s"]) / (s["tokens"] / s["cpu_s"]) for o, s, *_ in rounds])
    ours, standard = rounds[-1][0], rounds[-1][1]
    loads = ", ".join(f"{a:.1f}-{b:.1f}" for *_, a, b in rounds)
    return [
        f"## Training speed, {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        "",
        f"{command_line(args)}: {describe(source, train_split, heldout_split, base, config, threads)} "
        f"(load average {loads}).",
        "",
        "| recipe | steps | tokens seen (padded) | trained tokens | tokens/s (wall) | tokens/s (CPU time) "
        "| held-out loss |",
        "|---|---|---|---|---|---|---|",
        f"| base model, before training | | | | | | {ours['eval_before']:.4f} |",
        f"| standard: Trainer + PEFT, group_by_length, padded batches of {standard['batch_size']} | "
        f"{standard['steps']} | {standard['tokens']} ({standard['padded']}) | {standard['targets']} | {std_wall:.0f} | "
        f"{std_cpu:.0f} | {standard['eval_after']:.4f} |",
        f"| this trainer, {config.batch_tokens}-token length-grouped batches | {ours['steps']} | {ours['tokens']} | "
        f"{ours['targets']} | {ours_wall:.0f} | {ours_cpu:.0f} | {ours['eval_after']:.4f} |",
        "",
        f"Speed-up: **{ratio_wall:.2f}x** by wall clock, {ratio_cpu:.2f}x by CPU time"
        + (f" (medians of {args.rounds} rounds)" if args.rounds > 1 else "")
        + "; held-out loss "
        f"{ours['eval_after']:.4f} vs {standard['eval_after']:.4f}.",
        "",
    ]


def measure_variant(args: argparse.Namespace, overrides: dict[str, bool]) -> dict[str, Any]:
    """This trainer with some switches changed; run in a fresh process by :func:`ablate`."""
    base, tokenizer, source, train_rows, heldout_rows, config = setup(args, **overrides)
    figures = run_ours(base, tokenizer, train_rows, heldout_rows, config)
    figures["threads"] = config.resolve_threads()
    figures["about"] = f"{source}, {len(train_rows)} training examples, {base.id}"
    return figures


def ablate(args: argparse.Namespace) -> list[str]:
    """Every speed-up on, each off in turn, each memory saver on; the lines of the results section."""
    variants = [("all speed-ups on", {})]
    if not args.levers_only:
        variants += [(f"without {name}", {name: False}) for name in SPEEDUPS]
    variants += [(f"{name} {'on' if v else 'off'}", {name: v}) for name, values in LEVERS.items() for v in values]
    if not args.levers_only:
        variants += [(f"with {name}", {name: True}) for name in MEMORY_SAVERS]
    rows: dict[str, list[dict[str, Any]]] = {label: [] for label, _ in variants}
    failed: dict[str, str] = {}
    loads = []
    for _ in range(args.rounds):
        loads.append(os.getloadavg()[0])
        for label, overrides in variants:
            with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as fresh:
                try:
                    rows[label].append(fresh.submit(measure_variant, args, overrides).result())
                except Exception as exc:  # a lever that fails is a row saying so, not a lost run
                    failed[label] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''}"
                    print(f"{label}: failed: {failed[label]}", flush=True)
                    continue
            figures = rows[label][-1]
            print(f"{label}: {figures['tokens'] / figures['wall_s']:.0f} tok/s", flush=True)
    loads.append(os.getloadavg()[0])

    def med(label: str, key: str) -> float:
        return statistics.median(r["tokens"] / r[key] for r in rows[label])

    first = rows["all speed-ups on"][0]
    threads = first["threads"]
    lines = [
        f"## Training speed-ups, one at a time, {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        "",
        f"{command_line(args)}: {first['about']}, {first['steps']} steps, {threads} threads; each row in a fresh "
        f"process (load average {', '.join(f'{x:.1f}' for x in loads)}).",
        "",
        "| this trainer | tokens/s (wall) | after the first step | tokens/s (CPU time) | vs all on (wall) "
        "| held-out loss | peak RSS (MiB) |",
        "|---|---|---|---|---|---|---|",
    ]
    reference = med("all speed-ups on", "wall_s")
    for label, _ in variants:
        if not rows[label]:
            lines.append(f"| {label} | failed: {failed.get(label, '')} | | | | | |")
            continue
        wall = med(label, "wall_s")
        later = statistics.median(r["later_tokens"] / r["later_s"] if r["later_s"] else 0.0 for r in rows[label])
        cpu = statistics.median(r["tokens"] / r["cpu_s"] * threads for r in rows[label])
        last = rows[label][-1]
        lines.append(
            f"| {label} | {wall:.0f} | {later:.0f} | {cpu:.0f} | {wall / reference:.2f}x | {last['eval_after']:.4f} | "
            f"{last['peak_rss_mb']:.0f} |"
        )
    lines += ["", f"Medians of {args.rounds} rounds." if args.rounds > 1 else "One round.", ""]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--persona", help="example persona to take the data from (default: the first with logs)")
    parser.add_argument("--synthetic", action="store_true", help="use a generated chat set")
    parser.add_argument("--epochs", type=int, default=1, help="passes over the data (default 1)")
    parser.add_argument("--max-steps", type=int, default=None, help="stop every run after this many steps (trials)")
    parser.add_argument("--rounds", type=int, default=1, help="repeat the runs and report medians")
    parser.add_argument("--ablate", action="store_true", help="each speed-up off, each lever and memory saver on")
    parser.add_argument("--levers-only", action="store_true", help="with --ablate: all on, then the levers")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where the section is appended")
    args = parser.parse_args()
    lines = ablate(args) if args.ablate else compare(args)
    append_section("\n" + "\n".join(lines), args.out)


if __name__ == "__main__":
    main()
