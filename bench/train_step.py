"""One training step of the LoRA model on batches of given shapes, in float32 and with bfloat16 autocast.

Run by hand on a quiet machine: ``.venv/bin/python bench/train_step.py 8x210 2x1000`` (rows x tokens)
times forward, backward and optimizer step of the default recipe's model on random tokens (40% of
the positions trained), best of the steps after the first, and appends the rows to
``bench/RESULTS.md``. It says what the CPU's matrix units give each dtype before a recipe adopts one
(``bf16`` in ``persona.yaml``'s ``training:``); the held-out loss is ``bench/train_speed.py``'s job.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.results import RESULTS, append_section, cpu_description  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("shapes", nargs="*", default=["8x210", "2x1000"], help="ROWSxTOKENS of each batch")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    import torch

    from store.base_model import resolve_base_model
    from training.batches import Batch
    from training.config import TrainConfig
    from training.model import LossPath, load_model, set_threads

    set_threads(os.cpu_count() or 1)
    base = resolve_base_model("bundled", Path(os.environ.get("PERSONA_CACHE_DIR", REPO / ".cache")))
    model = load_model(base, TrainConfig())
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    def batch(rows: int, width: int) -> Batch:
        ids = torch.randint(100, 40000, (rows, width))
        positions = torch.tensor([r * width + t for r in range(rows) for t in range(width - 1) if t % 10 < 4])
        labels = ids.view(-1)[positions + 1]
        return Batch(ids, positions, labels, torch.ones(len(positions)), rows * width, len(positions),
                     float(len(positions)))  # fmt: skip

    lines = ["| rows x tokens | dtype | seconds per step | tokens/s |", "| --- | --- | ---: | ---: |"]
    for shape in args.shapes:
        rows, width = (int(part) for part in shape.split("x"))
        for bf16 in (False, True):
            path = LossPath(model, bf16=bf16)
            times = []
            for _ in range(args.steps):
                data = batch(rows, width)
                started = time.perf_counter()
                (path(data) / data.weight_total).backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                times.append(time.perf_counter() - started)
            best = min(times[1:] or times)
            dtype = "bfloat16 autocast" if bf16 else "float32"
            print(f"{shape} {dtype}: {best:.2f} s/step, {rows * width / best:.0f} tokens/s", flush=True)
            lines.append(f"| {shape} | {dtype} | {best:.2f} | {rows * width / best:.0f} |")
    head = (
        f"\n## One training step by dtype, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC\n\n"
        f"`bench/train_step.py {' '.join(args.shapes)}`: the default recipe's LoRA model, random tokens, 40% of the "
        f"positions trained, best of {args.steps - 1} steps after the first; {os.cpu_count()} threads; "
        f"{cpu_description()}.\n\n"
    )
    append_section(head + "\n".join(lines) + "\n", args.out)


if __name__ == "__main__":
    main()
