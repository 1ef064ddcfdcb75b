"""Top-k/top-p filtering alone: vLLM's CPU filter (a sort of the whole vocabulary) against the
plugin's (the likeliest candidates, vLLM's filter for the rows they cannot decide), per engine step.

Run by hand on quiet cores (results are printed and appended to ``bench/RESULTS.md``)::

    .venv/bin/python bench/top_p.py
    .venv/bin/python bench/top_p.py --rounds 50 --print-only

The logits are the bundled base model's, for the next token of the benchmark's chat prompts (so the
nucleus has the sizes users meet), divided by the temperature; each batch is one engine step's rows:
1, 8 and 16 users decoding with a card's top_p 0.9 (temperature 0.8 and 1.0), one with top_k 40 as
well, and a batch where half the users set no filter. The figure is the median time per call, and
how many rows fell back to the full sort.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.results import append_section  # noqa: E402
from bench.serving import PROMPTS  # noqa: E402


def next_token_logits(count: int):
    """The base model's logits for the first reply token of ``count`` chat prompts (float32)."""
    import torch

    from store.base_model import resolve_base_model
    from training.model import load_base_model, load_tokenizer

    cache = Path(os.environ.get("PERSONA_CACHE_DIR", REPO / ".cache"))
    base = resolve_base_model("bundled", cache)
    tokenizer = load_tokenizer(base)
    model = load_base_model(base).eval()
    rows = []
    with torch.inference_mode():
        for index in range(count):
            messages = [{"role": "user", "content": PROMPTS[index % len(PROMPTS)]}]
            text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            ids = tokenizer(text, return_tensors="pt", add_special_tokens=False).input_ids
            rows.append(model(input_ids=ids).logits[0, -1].float())
    return torch.stack(rows)


def timed(call, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def compare(logits, k, p, rounds: int) -> tuple[float, float, int]:
    """Median seconds per call of vLLM's filter and of the plugin's, and the rows the plugin sorted in full."""
    from vllm.v1.sample.ops.topk_topp_sampler import apply_top_k_top_p_pytorch

    from service.lora_cpu.top_p import top_k_top_p

    fallen: list[int] = []

    def vllm(lg, kk, pp):
        return apply_top_k_top_p_pytorch(lg, kk, pp, allow_cpu_sync=True)

    def counted(lg, kk, pp):
        fallen.append(lg.shape[0])
        return vllm(lg, kk, pp)

    theirs = timed(lambda: vllm(logits.clone(), k, p), rounds)
    ours = timed(lambda: top_k_top_p(logits.clone(), k, p, counted), rounds)
    return theirs, ours, sum(fallen) // rounds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--print-only", action="store_true", help="append nothing to RESULTS.md")
    args = parser.parse_args()

    import torch

    from service.lora_cpu.top_p import CANDIDATES

    torch.set_num_threads(os.cpu_count() or 1)
    logits = next_token_logits(16)
    vocab = logits.shape[1]

    cases = [
        ("1 user, top_p 0.9, temperature 0.8", 1, 0.8, [vocab], [0.9]),
        ("8 users, top_p 0.9, temperature 0.8", 8, 0.8, [vocab], [0.9]),
        ("16 users, top_p 0.9, temperature 0.8", 16, 0.8, [vocab], [0.9]),
        ("16 users, top_p 0.9, temperature 1.0", 16, 1.0, [vocab], [0.9]),
        ("16 users, top_k 40 and top_p 0.9", 16, 0.8, [40], [0.9]),
        ("16 users, half with top_p 0.9, half none", 16, 0.8, [vocab], [0.9, 1.0]),
    ]
    lines = [
        f"\n## Top-p on the CPU, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC\n",
        f"`bench/top_p.py --rounds {args.rounds}`: the bundled base model's next-token logits for chat prompts "
        f"(vocabulary {vocab}), {CANDIDATES} candidates; median of {args.rounds} calls; {os.cpu_count()} cores, "
        f"{torch.get_num_threads()} torch threads.\n",
        "| batch | vLLM's filter (ms) | the plugin's (ms) | speed-up | rows sorted in full |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for label, rows, temperature, ks, ps in cases:
        scaled = (logits[:rows] / temperature).contiguous()
        k = torch.tensor((ks * rows)[:rows], dtype=torch.long)
        p = torch.tensor((ps * rows)[:rows], dtype=torch.float32)
        theirs, ours, fallen = compare(scaled, k, p, args.rounds)
        lines.append(
            f"| {label} | {theirs * 1000:.2f} | {ours * 1000:.2f} | {theirs / ours:.1f}x | {fallen} of {rows} |"
        )
    text = "\n".join(lines) + "\n"
    if args.print_only:
        print(text)
    else:
        append_section(text)


if __name__ == "__main__":
    main()
