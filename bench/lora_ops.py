"""LoRA ops alone: vLLM's CPU punica wrapper against this project's grouped one, per engine step.

Run by hand on quiet cores (results are printed and appended to ``bench/RESULTS.md``)::

    .venv/bin/python bench/lora_ops.py                    # float32, the base model's shapes
    .venv/bin/python bench/lora_ops.py --dtype bfloat16
    .venv/bin/python bench/lora_ops.py --layers 2 --rounds 3 --print-only   # a quick smoke run

The grouped wrapper runs three times on float32: with its adapters fused in float32 and with the
kernel (``service/lora_cpu/kernel.py``, built on first use) on float16 and on int8 copies; then the
kernel's cost of a new adapter in a slot, and the base matmuls and the int8 LoRA of 8 users layer by
layer, as the engine runs them, beside each alone. One "step" is what a forward pass of
the model asks of the wrapper: the step's metadata, then the
LoRA of every linear layer (q/k/v and gate/up packed, as vLLM packs them), the embedding and the
logits, with random rank-16 adapters in every slot but the last. Like the adapters this project
trains, they touch the linear layers only: the embedding and logits weights stay zero (vLLM still
multiplies them). The base model's own matmuls for
the same layers are timed too, so the LoRA cost reads as a share of the step. The batches are:
one user decoding (persona; base model), 8 and 32 users decoding with 8 personas mixed, 32 users
with the base model and 4 personas, and prompts being read (one of 256 tokens; four of 64 with four
personas).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.results import RESULTS, append_section  # noqa: E402


@dataclass(frozen=True)
class Shapes:
    hidden: int = 576
    intermediate: int = 1536
    q: int = 576
    kv: int = 192
    vocab: int = 49152
    layers: int = 30

    @classmethod
    def from_config(cls, path: Path, layers: int | None) -> Shapes:
        config = json.loads((path / "config.json").read_text())
        head = config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]
        return cls(
            hidden=config["hidden_size"],
            intermediate=config["intermediate_size"],
            q=head * config["num_attention_heads"],
            kv=head * config["num_key_value_heads"],
            vocab=config["vocab_size"],
            layers=layers or config["num_hidden_layers"],
        )


# (label, tokens per request, LoRA id per request: 0 is the base model)
BATCHES = [
    ("1 user decoding, persona", [1], [1]),
    ("1 user decoding, base model", [1], [0]),
    ("8 users decoding, 8 personas", [1] * 8, list(range(1, 9))),
    ("32 users decoding, 8 personas", [1] * 32, [1 + i % 8 for i in range(32)]),
    ("32 users decoding, base + 4 personas", [1] * 32, [i % 5 for i in range(32)]),
    ("1 prompt of 256 tokens, persona", [256], [1]),
    ("4 prompts of 64 tokens, 4 personas", [64] * 4, [1, 2, 3, 4]),
]


class Layers:
    """Stacked LoRA weights as vLLM lays them out, and the base weights, for every layer."""

    def __init__(self, shapes: Shapes, slots: int, rank: int, dtype, seed: int = 0) -> None:
        import torch

        gen = torch.Generator().manual_seed(seed)

        def stacked(*shape):
            weights = torch.randn(*shape, generator=gen).mul_(0.05).to(dtype)
            weights[slots - 1].zero_()  # the last slot stays empty
            return weights

        h, i = shapes.hidden, shapes.intermediate
        projections = [((h,), (shapes.q, shapes.kv, shapes.kv)), ((shapes.q,), (h,)), ((h,), (i, i)), ((i,), (h,))]
        self.linear = []
        for _ in range(shapes.layers):
            for (inp,), outs in projections:
                a = tuple(stacked(slots, 1, rank, inp) for _ in outs)
                b = tuple(stacked(slots, 1, out, rank) for out in outs)
                base = torch.randn(sum(outs), inp, generator=gen).mul_(0.05).to(dtype)
                self.linear.append((inp, outs, a, b, base))
        self.embed_b = torch.zeros(slots, 1, h, rank, dtype=dtype)  # adapters of linear layers only
        self.logits_a = torch.zeros(slots, 1, rank, h, dtype=dtype)
        self.logits_b = torch.zeros(slots, 1, shapes.vocab, rank, dtype=dtype)
        self.shapes = shapes


def weight_megabytes(shapes: Shapes, rank: int, item_size: int) -> dict[str, float]:
    """Megabytes of weights one decoding step reads: the base model's linear layers and its logits
    (the tied embedding), and one adapter on every linear layer, as trained and in the grouped layout
    (whose B is block-diagonal over a packed layer's slices, zeros included)."""
    h, i = shapes.hidden, shapes.intermediate
    packed = [((h,), (shapes.q, shapes.kv, shapes.kv)), ((shapes.q,), (h,)), ((h,), (i, i)), ((i,), (h,))]
    base = sum(inp * sum(outs) for (inp,), outs in packed)
    adapter = sum(rank * (inp + out) for (inp,), outs in packed for out in outs)
    grouped = sum(len(outs) * rank * (inp + sum(outs)) for (inp,), outs in packed)
    mb = shapes.layers * item_size / 1e6
    return {
        "base": base * mb,
        "logits": shapes.vocab * h * item_size / 1e6,
        "adapter": adapter * mb,
        "grouped": grouped * mb,
    }


def step_lora(wrapper, layers: Layers, mapping, layout, xs, logits_x, logits_y) -> None:
    """What one forward pass asks of the punica wrapper."""
    wrapper.update_metadata(mapping, layout, len(layout) + 1, layers.shapes.vocab)
    x_embed, y_embed = xs["embed"]
    wrapper.add_lora_embedding(y_embed, x_embed, layers.embed_b, add_input=True)
    for inp, outs, a, b, _ in layers.linear:
        x, y = xs[inp], xs[("y", sum(outs))]
        wrapper.add_lora_linear(y, x, a, b, 1.0, outs)
    wrapper.add_lora_logits(logits_y, logits_x, layers.logits_a, layers.logits_b, 1.0)


def step_base(layers: Layers, xs) -> None:
    import torch

    for inp, outs, _, _, base in layers.linear:
        torch.mm(xs[inp], base.t(), out=xs[("y", sum(outs))])


def median_ms(run, rounds: int, inner: int) -> float:
    run()  # warm-up: fused weights, allocator
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(inner):
            run()
        times.append((time.perf_counter() - start) / inner * 1000)
    return statistics.median(times)


def measure_batch(
    layers: Layers, tokens: list[int], ids: list[int], dtype, rounds: int, inner: int
) -> tuple[float, ...]:
    """Milliseconds per step for the base matmuls, vLLM's wrapper, the grouped one and (float32 only)
    the grouped one with the kernel on float16 and on int8 weights, on one batch."""
    import torch
    from vllm.lora.layers import LoRAMapping
    from vllm.lora.punica_wrapper.punica_cpu import PunicaWrapperCPU

    from service.lora_cpu.punica import PunicaWrapperGroupedCPU

    shapes, rank = layers.shapes, layers.embed_b.shape[-1]
    layout = list(range(1, layers.embed_b.shape[0])) + [None]  # LoRA id i sits in slot i - 1; the last is free
    index = tuple(i for n, i in zip(tokens, ids) for _ in range(n))
    mapping = LoRAMapping(index, tuple(ids), is_prefill=True)
    n = len(index)
    xs = {size: torch.randn(n, size, dtype=dtype) for size in {shapes.hidden, shapes.q, shapes.intermediate}}
    for _, outs, _, _, _ in layers.linear:
        xs[("y", sum(outs))] = torch.zeros(n, sum(outs), dtype=dtype)
    xs["embed"] = (torch.randn(n, rank, dtype=dtype), torch.zeros(n, shapes.hidden, dtype=dtype))
    logits_x = torch.randn(len(ids), shapes.hidden, dtype=dtype)
    logits_y = torch.zeros(len(ids), shapes.vocab, dtype=dtype)
    theirs = PunicaWrapperCPU(4096, 256, "cpu")
    grouped = PunicaWrapperGroupedCPU(4096, 256, "cpu")  # each keeps its state between steps, as in the engine
    built = grouped.packed is not None
    grouped.packed = None
    cases = {
        "base": lambda: step_base(layers, xs),
        "vllm": lambda: step_lora(theirs, layers, mapping, layout, xs, logits_x, logits_y),
        "ours": lambda: step_lora(grouped, layers, mapping, layout, xs, logits_x, logits_y),
    }
    if built and dtype == torch.float32:
        for packed in (torch.float16, torch.int8):
            wrapper = PunicaWrapperGroupedCPU(4096, 256, "cpu")
            wrapper.packed = packed
            cases[str(packed)] = partial(step_lora, wrapper, layers, mapping, layout, xs, logits_x, logits_y)
    times: dict[str, list[float]] = {key: [] for key in cases}
    for _ in range(2):  # interleaved, so a busy moment does not favour one side
        for key, run in cases.items():
            times[key].append(median_ms(run, rounds, inner))
    return tuple(min(times[key]) for key in cases)


def interleaved_ms(layers: Layers, rounds: int, inner: int) -> tuple[float, float, float, float]:
    """8 users decoding on 8 personas, linear layers only: the base matmuls alone, the int8 kernel's
    LoRA alone, and both layer by layer as the engine runs them (ms per step); and the kernel's own
    calls without the op dispatch and lookups around them. Apart, each finds its weights where its last step
    left them in the caches; in turn, the base model's weights and the adapters push each other out."""
    import torch
    from vllm.lora.layers import LoRAMapping

    from service.lora_cpu.punica import PunicaWrapperGroupedCPU

    ids = list(range(1, 9))
    wrapper = PunicaWrapperGroupedCPU(4096, 256, "cpu")
    wrapper.packed = torch.int8
    layout = list(range(1, layers.embed_b.shape[0])) + [None]
    shapes = layers.shapes
    mapping = LoRAMapping(tuple(ids), tuple(ids), is_prefill=False)
    wrapper.update_metadata(mapping, layout, len(layout) + 1, shapes.vocab)
    xs = {size: torch.randn(len(ids), size) for size in {shapes.hidden, shapes.q, shapes.intermediate}}
    for _, outs, _, _, _ in layers.linear:
        xs[("y", sum(outs))] = torch.zeros(len(ids), sum(outs))

    def lora() -> None:
        for inp, outs, a, b, _ in layers.linear:
            wrapper.add_lora_linear(xs[("y", sum(outs))], xs[inp], a, b, 1.0, outs)

    def both() -> None:
        for inp, outs, a, b, weight in layers.linear:
            torch.mm(xs[inp], weight.t(), out=xs[("y", sum(outs))])
            wrapper.add_lora_linear(xs[("y", sum(outs))], xs[inp], a, b, 1.0, outs)

    lora()  # packs every layer's slots
    index = wrapper.token_plan.kernel
    calls = [
        (xs[("y", sum(outs))], xs[inp], wrapper.cache.get_packed(a, b, torch.int8))
        for inp, outs, a, b, _ in layers.linear
    ]

    def kernel_only() -> None:
        for y, x, f in calls:
            torch.ops.persona_lora_kernels.add_lora_packed(
                y, x, f.a, f.b, f.row_scales, f.ends, index.groups, index.rows, 1.0
            )

    cases = (("base", partial(step_base, layers, xs)), ("lora", lora), ("both", both), ("kernel", kernel_only))
    times: dict[str, list[float]] = {key: [] for key, _ in cases}
    for _ in range(2):
        for key, run in cases:
            times[key].append(median_ms(run, rounds, inner))
    return min(times["base"]), min(times["lora"]), min(times["both"]), min(times["kernel"])


def refresh_ms(layers: Layers, packed, rounds: int) -> float:
    """Milliseconds to pack one slot's new adapter for the kernel (``packed``: int8 or float16) in every
    linear layer, from stacked weights in bfloat16 as the engine keeps them: what each adapter that
    enters a batch slot costs the step that first uses it."""
    from service.lora_cpu.ops import fuse_packed_slot, new_packed_fused

    stacked = [([w.bfloat16() for w in a], [w.bfloat16() for w in b]) for _, _, a, b, _ in layers.linear]
    fused = [new_packed_fused(a, b, packed) for a, b in stacked]

    def run() -> None:
        for (a, b), into in zip(stacked, fused):
            fuse_packed_slot(into, 0, a, b)

    return median_ms(run, rounds, 1)


def measure(shapes: Shapes, dtype_name: str, rounds: int, inner: int) -> list[tuple[str, float, ...]]:
    import torch

    dtype = getattr(torch, dtype_name)
    layers = Layers(shapes, slots=9, rank=16, dtype=dtype)
    rows = []
    for label, tokens, ids in BATCHES:
        times = measure_batch(layers, tokens, ids, dtype, rounds, inner)
        print(f"  {label}: " + ", ".join(f"{t:.2f} ms" for t in times), flush=True)
        rows.append((label, *times))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--layers", type=int, default=None, help="decoder layers (default: the base model's)")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds per case; the median is kept")
    parser.add_argument("--inner", type=int, default=3, help="steps per timed round")
    parser.add_argument("--print-only", action="store_true", help="do not append to the results file")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    import torch

    from store.base_model import resolve_base_model

    cache = Path(os.environ.get("PERSONA_CACHE_DIR", REPO / ".cache"))
    shapes = Shapes.from_config(resolve_base_model("bundled", cache).path, args.layers)
    torch.set_num_threads(os.cpu_count() or 1)
    print(f"LoRA ops per step, {args.dtype}, {shapes}", flush=True)
    rows = measure(shapes, args.dtype, args.rounds, args.inner)
    lines = [
        f"\n## LoRA ops per engine step, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        f"`bench/lora_ops.py --dtype {args.dtype}`: {shapes.layers} layers of the base model's shapes "
        f"(hidden {shapes.hidden}, MLP {shapes.intermediate}, vocabulary {shapes.vocab}), 8 rank-16 adapters "
        f"in 9 slots; {os.cpu_count()} cores, {torch.get_num_threads()} threads; milliseconds per step, "
        "best of 2 interleaved medians.",
        "",
        "| batch | base matmuls | vLLM's LoRA ops | grouped LoRA ops | speed-up |"
        + (" float16 kernel | speed-up | int8 kernel | speed-up |" if len(rows[0]) > 4 else ""),
        "| --- | --- | --- | --- | --- |" + (" --- | --- | --- | --- |" if len(rows[0]) > 4 else ""),
    ]
    for label, base, vllm, ours, *packed in rows:
        line = f"| {label} | {base:.2f} | {vllm:.2f} | {ours:.2f} | {vllm / ours:.1f}x |"
        lines.append(line + "".join(f" {h:.2f} | {vllm / h:.1f}x |" for h in packed))
    mb = weight_megabytes(shapes, rank=16, item_size=torch.tensor([], dtype=getattr(torch, args.dtype)).element_size())
    half_mb = weight_megabytes(shapes, rank=16, item_size=2)["adapter"]
    int8_mb = weight_megabytes(shapes, rank=16, item_size=1)["adapter"]
    model = mb["base"] + mb["logits"]

    def bound(adapter_mb: float) -> str:
        return f"{model / (model + 8 * adapter_mb):.2f}x"

    lines += [
        "",
        f"Weights a decoding step reads: {mb['base']:.0f} MB of linear layers and {mb['logits']:.0f} MB of "
        f"logits for the base model; {mb['adapter']:.1f} MB per adapter in use ({mb['grouped']:.1f} MB in the "
        f"grouped layout, {half_mb:.1f} MB in float16 and {int8_mb:.1f} MB in int8 for the kernel). Where a step's "
        f"time is its reads, 8 users on 8 adapters get at most {bound(mb['adapter'])} the speed of 8 users of the "
        f"base model with the adapters' bytes alone ({bound(mb['grouped'])} in the grouped layout, "
        f"{bound(half_mb)} with float16 weights, {bound(int8_mb)} with int8).",
    ]
    if len(rows[0]) > 4:  # the kernel was built
        layers = Layers(shapes, slots=9, rank=16, dtype=torch.float32)
        half, int8 = (refresh_ms(layers, packed, args.rounds) for packed in (torch.float16, torch.int8))
        base, lora, both, kernel_alone = interleaved_ms(layers, args.rounds, args.inner)
        lines += [
            "",
            f"An adapter entering a batch slot, packed for the kernel in every linear layer from the engine's "
            f"bfloat16 copy: {int8:.1f} ms in int8, {half:.1f} ms in float16.",
            "",
            f"8 users decoding on 8 personas, linear layers only: base matmuls {base:.2f} ms and int8 LoRA "
            f"{lora:.2f} ms a step apart ({base + lora:.2f} ms together), {both:.2f} ms layer by layer as the "
            f"engine runs them ({both / base:.2f}x the base matmuls', where apart they make "
            f"{(base + lora) / base:.2f}x). Of the LoRA's {lora:.2f} ms, the kernel's own calls take "
            f"{kernel_alone:.2f} ms; the rest is reaching it: op dispatch and lookups, "
            f"{len(layers.linear)} calls a step.",
        ]
    text = "\n".join(lines) + "\n"
    if args.print_only:
        print(text)
    else:
        append_section(text, args.out)


if __name__ == "__main__":
    main()
