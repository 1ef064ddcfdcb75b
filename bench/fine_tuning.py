"""Fine-tuning through OpenAI's API, timed: seconds from ``jobs.create`` to ``succeeded`` and to the first
reply from ``fine_tuned_model``, for 200 chat examples with the defaults.

Run by hand on a quiet machine (the default recipe trains for several minutes, then the new version is
evaluated through the server before it goes live): ``.venv/bin/python bench/fine_tuning.py``. The
result is printed and appended to ``bench/RESULTS.md``; ``--quick`` (a few examples, a handful of
training steps, a small evaluation) checks the script and appends nothing.

The server is ``persona serve`` on an empty personas folder, with its own training worker as a user
starts it (automatic training off, so the API's job is the only one); the client is the official
``openai`` package. The examples are chat JSONL lines made from the example personas' logs (wren's,
then corvin's, until there are enough): on each line the last assistant message is the one to learn
and the earlier ones have weight 0, so one line is one training example.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.living_service import first_reply_s, free_port, start_server  # noqa: E402
from bench.results import append_section  # noqa: E402

PERSONA = "bench-ft"
SOURCES = ("wren", "corvin", "zeph")
QUICK_EXAMPLES = 24
QUICK_CARD = (
    "training:\n  max_steps: 3\n"
    "fidelity:\n  heldout_prompts: 4\n  probes: 2\n  sessions: 2\n  perplexity_examples: 8\n  max_tokens: 24\n"
)
"""A handful of steps and a small fidelity report, for ``--quick``."""
FINISHED = ("succeeded", "failed", "cancelled")


def chat_lines(count: int) -> list[dict]:
    """``count`` chat JSONL records, one training example each, from the example personas' logs."""
    from store.registry import PersonaStore
    from training.ingest import persona_examples

    store = PersonaStore(REPO / "personas")
    records: list[dict] = []
    for name in SOURCES:
        persona = store.get(name)
        examples = persona_examples(persona)
        for split in (examples.train, examples.heldout):
            for row in split:
                messages = [
                    {"role": m["role"], "content": m["content"]}
                    | ({"weight": int(m["weight"] > 0)} if m["role"] == "assistant" else {})
                    for m in row["messages"]
                    if m["role"] != "system"
                ]
                records.append({"messages": messages})
                if len(records) == count:
                    return records
    raise SystemExit(f"the example personas give only {len(records)} examples; ask for fewer with --examples")


def follow(client, job_id: str, created: float, timeout: float) -> tuple[object, dict[str, float]]:
    """Poll the job until it ends; the seconds after ``created`` at which each status was first seen."""
    seen: dict[str, float] = {}
    deadline = time.monotonic() + timeout
    while True:
        job = client.fine_tuning.jobs.retrieve(job_id)
        seen.setdefault(job.status, time.monotonic() - created)
        if job.status in FINISHED:
            return job, seen
        if time.monotonic() > deadline:
            raise RuntimeError(f"job {job_id} still {job.status} after {timeout:.0f} s")
        time.sleep(0.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=200, help="chat examples in the training file")
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"a smoke run: {QUICK_EXAMPLES} examples, 3 training steps, a small evaluation; appends nothing",
    )
    parser.add_argument("--model", default="SmolLM2-135M-Instruct", help="the base model's id as the server names it")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds the job may take before the run fails")
    args = parser.parse_args()
    from openai import OpenAI

    count = QUICK_EXAMPLES if args.quick else args.examples
    work = Path(tempfile.mkdtemp(prefix="fine-tuning-bench-"))
    personas = work / "personas"
    personas.mkdir()
    if args.quick:
        (personas / PERSONA).mkdir()
        (personas / PERSONA / "persona.yaml").write_text(QUICK_CARD)
    data = work / f"{PERSONA}.jsonl"
    data.write_text("".join(json.dumps(record) + "\n" for record in chat_lines(count)))
    port = free_port()
    client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="bench", max_retries=0, timeout=600)
    server = start_server(personas, port, work / "server.log", {"PERSONA_AUTO_TRAIN": "false", "PERSONA_UI": "false"})
    try:
        first_reply_s(client, args.model, time.monotonic(), timeout=900)  # the server answers
        file = client.files.create(file=data.open("rb"), purpose="fine-tune")
        created = time.monotonic()
        job = client.fine_tuning.jobs.create(model=args.model, training_file=file.id, suffix=PERSONA)
        job, seen = follow(client, job.id, created, args.timeout)
        if job.status != "succeeded":
            raise RuntimeError(f"job {job.status}: {job.error}; see {work / 'server.log'}")
        first_reply = first_reply_s(client, job.fine_tuned_model, created)
        events = client.fine_tuning.jobs.list_events(job.id, limit=1000).data
    finally:
        server.terminate()
        server.wait(timeout=60)
    steps = max((e.data.get("total_steps", 0) for e in events if e.type == "metrics" and e.data), default=0)
    loss = next((e.data for e in events if e.data and "valid_loss_before" in e.data), None)
    held_out = f"{loss['valid_loss_before']:.3f} -> {loss['valid_loss']:.3f}" if loss else "not measured"
    rows = [
        f"| `jobs.create` to `running` | {seen.get('running', float('nan')):.1f} s |",
        f"| `jobs.create` to `succeeded` | {seen['succeeded']:.1f} s |",
        f"| `jobs.create` to the first reply from `fine_tuned_model` | {first_reply:.1f} s |",
        f"| training steps | {steps} |",
        f"| trained tokens | {job.trained_tokens} |",
        f"| held-out loss, before -> after training | {held_out} |",
    ]
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    section = (
        f"\n## Fine-tuning API, {when}\n`bench/fine_tuning.py{' --quick' if args.quick else ''}` on "
        f"{os.cpu_count()} cores: {count} chat examples, `jobs.create(model, training_file, suffix)` with the "
        "default hyperparameters, a server with its own training worker; `succeeded` includes the new "
        "version's evaluation before it goes live.\n\n| measure | value |\n| --- | --- |\n" + "\n".join(rows) + "\n"
    )
    if args.quick:
        print(section)
    else:
        append_section(section)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
