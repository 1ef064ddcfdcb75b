"""The grouped CPU LoRA ops give vLLM's own CPU ops' results, on random shapes and batches: in
float32 and bfloat16, and with float32 layers' adapters kept in int8 or float16 for the kernel."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time

import pytest
import torch
from vllm.lora.layers import LoRAMapping
from vllm.lora.punica_wrapper.punica_cpu import PunicaWrapperCPU

from service.lora_cpu import kernel
from service.lora_cpu.ops import fuse_packed_slot, new_packed_fused
from service.lora_cpu.punica import PunicaWrapperGroupedCPU

pytestmark = pytest.mark.real

SLOTS = 5
LAYOUT = [11, 12, 13, 14, None]  # LoRA id per slot; the last slot is free, as vLLM's ops need it
TOLERANCE = {torch.float32: 1e-5, torch.bfloat16: 3e-2}
PACKED_TOLERANCE = {torch.float16: 2e-3, torch.int8: 2e-2}  # of the adapter's part of the output
# (dtype of the layer, dtype of vLLM's stacked adapters, how float32 layers keep them for the kernel)
MODES = {
    "float32": (torch.float32, torch.float32, None),
    "float16 kernel": (torch.float32, torch.float32, torch.float16),
    "int8 kernel": (torch.float32, torch.float32, torch.int8),
    "int8 kernel, adapters in bfloat16": (torch.float32, torch.bfloat16, torch.int8),
    "bfloat16": (torch.bfloat16, torch.bfloat16, None),
}

# (tokens per request, LoRA id per request; 0: the base model)
BATCHES = {
    "decode, one adapter": ([1], [12]),
    "decode, base model only": ([1, 1, 1], [0, 0, 0]),
    "decode, many adapters and the base": ([1] * 9, [11, 0, 12, 13, 11, 14, 0, 12, 13]),
    "prefill, one adapter": ([37], [13]),
    "prefill, two adapters evenly": ([8, 7], [11, 12]),
    "prefill, many adapters and the base": ([5, 17, 3, 9], [14, 0, 11, 14]),
    "prefill and decode, one busy adapter": ([30, 1, 1], [11, 14, 0]),
    "prefills of one adapter apart": ([30, 3, 30], [11, 12, 11]),
    "a long prompt beside the base model": ([70, 1], [13, 0]),
}
SLICES = {"single": (48,), "q/k/v": (64, 16, 16), "gate/up": (40, 40)}


def mapping(tokens: list[int], ids: list[int]):
    index = tuple(i for n, i in zip(tokens, ids) for _ in range(n))
    return LoRAMapping(index, tuple(ids), is_prefill=True)


def random_stacked(gen: torch.Generator, slices: tuple[int, ...], inp: int, rank: int, dtype):
    a = tuple(torch.randn(SLOTS, 1, rank, inp, generator=gen).mul_(0.2).to(dtype) for _ in slices)
    b = tuple(torch.randn(SLOTS, 1, out, rank, generator=gen).mul_(0.2).to(dtype) for out in slices)
    for weights in (*a, *b):
        weights[LAYOUT.index(None)].zero_()
    return a, b


def both_wrappers(tokens, ids, layout=LAYOUT, packed=None):
    wrappers = PunicaWrapperCPU(512, 64, "cpu"), PunicaWrapperGroupedCPU(512, 64, "cpu")
    assert wrappers[1].packed is not None, "the LoRA kernel was not built (is a C++ compiler installed?)"
    wrappers[1].packed = packed
    for wrapper in wrappers:
        wrapper.update_metadata(mapping(tokens, ids), layout, SLOTS + 1, 1000)
    return wrappers


def assert_close(got, expected, before, packed, dtype) -> None:
    """Within the tolerance of the layer's dtype, or for packed weights within a share of the largest
    change the adapter makes."""
    if packed is None:
        assert torch.allclose(got.float(), expected.float(), atol=TOLERANCE[dtype], rtol=TOLERANCE[dtype])
        return
    change = float((expected - before).abs().max())
    assert float((got - expected).abs().max()) <= PACKED_TOLERANCE[packed] * change


@pytest.mark.parametrize("mode", MODES.values(), ids=MODES.keys())
@pytest.mark.parametrize("slices", SLICES.values(), ids=SLICES.keys())
@pytest.mark.parametrize("batch", BATCHES.values(), ids=BATCHES.keys())
def test_linear_matches_vllm(batch, slices, mode) -> None:
    dtype, stacked, packed = mode
    tokens, ids = batch
    rng = random.Random(f"{tokens} {ids} {slices}")
    gen = torch.Generator().manual_seed(rng.randrange(2**31))
    inp, rank = rng.choice([36, 96]), rng.choice([8, 16])  # 36: a tail past the vector width
    a, b = random_stacked(gen, slices, inp, rank, stacked)
    x = torch.randn(sum(tokens), inp, generator=gen).to(dtype)
    y = torch.randn(sum(tokens), sum(slices), generator=gen).to(dtype)
    theirs, ours = both_wrappers(tokens, ids, packed=packed)
    expected, got = y.clone(), y.clone()
    as_layer = [[w.to(dtype) for w in weights] for weights in (a, b)]  # vLLM's ops want the layer's dtype
    theirs.add_lora_linear(expected, x, *as_layer, 0.5, slices)
    ours.add_lora_linear(got, x, a, b, 0.5, slices)
    assert_close(got, expected, y, packed, dtype)
    base_rows = [row for row, i in enumerate(i for n, i in zip(tokens, ids) for _ in range(n)) if i == 0]
    assert torch.equal(got[base_rows], y[base_rows])  # the base model's tokens are left alone
    if any(ids):
        assert not torch.equal(got, y)


@pytest.mark.parametrize("batch", BATCHES.values(), ids=BATCHES.keys())
def test_once_packed_a_layer_is_served_without_python(batch, monkeypatch) -> None:
    """The compiled model calls the kernel library's own op: the first call of a step with a new slot
    layout packs the layer's weights in the wrapper's Python; every later one, decoding or reading a
    prompt, is served in C++ with the same result."""
    tokens, ids = batch
    gen = torch.Generator().manual_seed(13)
    slices = SLICES["q/k/v"]
    a, b = random_stacked(gen, slices, 96, 16, torch.float32)
    x = torch.randn(sum(tokens), 96, generator=gen)
    y = torch.randn(sum(tokens), sum(slices), generator=gen)
    theirs, ours = both_wrappers(tokens, ids, packed=torch.int8)
    expected = y.clone()
    theirs.add_lora_linear(expected, x, a, b, 0.5, slices)
    python_calls = []
    run_linear = ours.run_linear
    monkeypatch.setattr(ours, "run_linear", lambda *args: python_calls.append(1) or run_linear(*args))
    first, second = y.clone(), y.clone()
    ours.add_lora_linear(first, x, a, b, 0.5, slices)
    calls_to_pack = len(python_calls)
    ours.add_lora_linear(second, x, a, b, 0.5, slices)
    assert_close(first, expected, y, torch.int8, torch.float32)
    assert torch.equal(second, first)
    assert calls_to_pack == (1 if any(ids) else 0)
    assert len(python_calls) == calls_to_pack


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
def test_logits_and_embeddings_match_vllm(dtype) -> None:
    gen = torch.Generator().manual_seed(3)
    tokens, ids = [4, 1, 1, 1], [12, 0, 11, 12]
    n, hidden, vocab, rank = sum(tokens), 24, 70, 8
    (a,), (b,) = random_stacked(gen, (vocab,), hidden, rank, dtype)
    (_,), (embed_b,) = random_stacked(gen, (hidden,), hidden, rank, dtype)
    theirs, ours = both_wrappers(tokens, ids)

    logits = torch.randn(len(ids), vocab + 2, generator=gen).to(dtype)  # a padded vocabulary
    states = torch.randn(len(ids), hidden, generator=gen).to(dtype)
    expected, got = logits.clone(), logits.clone()
    theirs.add_lora_logits(expected, states, a, b, 1.0)
    ours.add_lora_logits(got, states, a, b, 1.0)
    assert torch.allclose(got.float(), expected.float(), atol=TOLERANCE[dtype], rtol=TOLERANCE[dtype])
    assert torch.equal(got[1], logits[1])

    shrunk = torch.randn(n, rank, generator=gen).to(dtype)
    out = torch.randn(n, hidden, generator=gen).to(dtype)
    expected, got = out.clone(), out.clone()
    theirs.add_lora_embedding(expected, shrunk, embed_b, add_inputs=True)
    ours.add_lora_embedding(got, shrunk, embed_b, add_inputs=True)
    assert torch.allclose(got.float(), expected.float(), atol=TOLERANCE[dtype], rtol=TOLERANCE[dtype])


def test_base_model_tokens_untouched_when_every_slot_is_full() -> None:
    gen = torch.Generator().manual_seed(5)
    a = (torch.randn(SLOTS, 1, 8, 32, generator=gen),)
    b = (torch.randn(SLOTS, 1, 16, 8, generator=gen),)
    full = [11, 12, 13, 14, 15]
    _, ours = both_wrappers([1, 1, 1], [15, 0, 11], layout=full)
    x, y = torch.randn(3, 32, generator=gen), torch.zeros(3, 16)
    ours.add_lora_linear(y, x, a, b, 1.0, (16,))
    assert torch.equal(y[1], torch.zeros(16))
    assert torch.allclose(y[0], x[0] @ a[0][4, 0].t() @ b[0][4, 0].t(), atol=1e-5)


PACKINGS = {"float32": None, "float16": torch.float16, "int8": torch.int8}


@pytest.mark.parametrize("packed", PACKINGS.values(), ids=PACKINGS.keys())
def test_a_slot_given_another_adapter_uses_its_new_weights(packed) -> None:
    gen = torch.Generator().manual_seed(7)
    a, b = random_stacked(gen, (16, 16), 32, 8, torch.float32)
    x = torch.randn(2, 32, generator=gen)
    _, ours = both_wrappers([1, 1], [11, 12], packed=packed)
    before = torch.zeros(2, 32)
    ours.add_lora_linear(before, x, a, b, 1.0, (16, 16))
    for weights in (*a, *b):  # vLLM loads adapter 21 into slot 0, then announces the new layout
        weights[0].copy_(torch.randn(weights[0].shape, generator=gen))
    ours.update_metadata(mapping([1, 1], [21, 12]), [21, 12, 13, 14, None], SLOTS + 1, 1000)
    theirs = PunicaWrapperCPU(512, 64, "cpu")
    theirs.update_metadata(mapping([1, 1], [21, 12]), [21, 12, 13, 14, None], SLOTS + 1, 1000)
    after, expected = torch.zeros(2, 32), torch.zeros(2, 32)
    ours.add_lora_linear(after, x, a, b, 1.0, (16, 16))
    theirs.add_lora_linear(expected, x, a, b, 1.0, (16, 16))
    assert_close(after, expected, torch.zeros(2, 32), packed, torch.float32)
    assert not torch.allclose(after[0], before[0]) and torch.equal(after[1], before[1])


@pytest.mark.parametrize("packed", PACKINGS.values(), ids=PACKINGS.keys())
def test_an_adapter_loaded_into_a_slot_free_at_the_first_step_is_applied(packed) -> None:
    gen = torch.Generator().manual_seed(9)
    a, b = random_stacked(gen, (16,), 32, 8, torch.float32)
    free = [11, None, None, None, None]
    for weights in (*a, *b):
        weights[1:].zero_()  # vLLM's free slots hold zeros
    x = torch.randn(2, 32, generator=gen)
    _, ours = both_wrappers([1, 1], [11, 0], layout=free, packed=packed)
    ours.add_lora_linear(torch.zeros(2, 16), x, a, b, 1.0, (16,))  # the first step: only slot 0 is copied
    for weights in (*a, *b):  # vLLM loads adapter 12 into the free slot 1, then announces the new layout
        weights[1].copy_(torch.randn(weights[1].shape, generator=gen))
    layout = [11, 12, None, None, None]
    theirs = PunicaWrapperCPU(512, 64, "cpu")
    for wrapper in (ours, theirs):
        wrapper.update_metadata(mapping([1, 1], [11, 12]), layout, SLOTS + 1, 1000)
    got, expected = torch.zeros(2, 16), torch.zeros(2, 16)
    ours.add_lora_linear(got, x, a, b, 1.0, (16,))
    theirs.add_lora_linear(expected, x, a, b, 1.0, (16,))
    assert_close(got, expected, torch.zeros(2, 16), packed, torch.float32)
    assert got[1].abs().sum() > 0


@pytest.mark.parametrize("packed", [torch.float16, torch.int8], ids=["float16", "int8"])
def test_a_lightly_trained_adapter_keeps_its_precision(packed) -> None:
    """B starts at zero and is tiny after a few steps: below float16's normal numbers unscaled."""
    gen = torch.Generator().manual_seed(11)
    a, b = random_stacked(gen, (64, 16, 16), 96, 16, torch.float32)
    for weights in b:
        weights.mul_(1e-6)
    x = torch.randn(3, 96, generator=gen)
    theirs, ours = both_wrappers([1, 1, 1], [11, 12, 13], packed=packed)
    expected, got = torch.zeros(3, 96), torch.zeros(3, 96)
    theirs.add_lora_linear(expected, x, a, b, 1.0, (64, 16, 16))
    ours.add_lora_linear(got, x, a, b, 1.0, (64, 16, 16))
    assert_close(got, expected, torch.zeros(3, 96), packed, torch.float32)


def load_in_a_new_process(cache_root) -> subprocess.CompletedProcess:
    """``kernel.load()`` in a process of its own (this one may have the kernel loaded already)."""
    script = "from service.lora_cpu import kernel; print(kernel.load())"
    env = {**os.environ, "VLLM_CACHE_ROOT": str(cache_root), kernel.SWITCH: "int8"}
    return subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)


def test_a_start_stopped_mid_build_does_not_hang_the_next(tmp_path) -> None:
    lock = tmp_path / "lora-kernel" / "lock"  # what an interrupted build leaves behind
    lock.parent.mkdir()
    lock.touch()
    an_hour_ago = time.time() - 3600
    os.utime(lock, (an_hour_ago, an_hour_ago))
    done = load_in_a_new_process(tmp_path)
    assert done.stdout.strip() == "torch.int8", done.stderr[-2000:]
    assert not lock.exists()


def test_where_the_kernel_cannot_be_built_the_float32_copies_serve(tmp_path) -> None:
    blocked = tmp_path / "a file, not a folder"
    blocked.write_text("")
    done = load_in_a_new_process(blocked)
    assert done.returncode == 0 and done.stdout.strip() == "None", done.stderr[-2000:]
    assert "packed LoRA kernel not built" in done.stderr and "kept in float32" in done.stderr


def test_the_kernel_can_be_turned_off(tmp_path) -> None:
    assert kernel.load({kernel.SWITCH: "float32", "VLLM_CACHE_ROOT": str(tmp_path)}) is None
    assert not (tmp_path / "lora-kernel").exists()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
def test_an_int8_slot_keeps_each_rows_own_scale(dtype) -> None:
    """A slot refresh: every row of A and every rank row of each slice of B (a column of vLLM's B)
    quantized with a scale of its own, however far apart their magnitudes."""
    assert kernel.load({kernel.SWITCH: "int8"}) == torch.int8
    gen = torch.Generator().manual_seed(13)
    slots, rank, inputs, outs = 3, 6, 40, (70, 8)
    spread = torch.logspace(-6, 0, rank)  # rank rows 6 orders apart
    a = [(torch.randn(slots, 1, rank, inputs, generator=gen) * spread[:, None]).to(dtype) for _ in outs]
    b = [(torch.randn(slots, 1, out, rank, generator=gen) * spread).to(dtype) for out in outs]
    b[1][1, 0, :, 2] = 0  # one rank row of one slice of B is zeros
    for stacked in a:
        stacked[2] = 0  # slot 2's adapter does not touch this layer
    fused = new_packed_fused(a, b, torch.int8)
    for slot in (1, 2):
        fuse_packed_slot(fused, slot, a, b)
    assert fused.nonzero[1] and not fused.nonzero[2]
    a_wide = fused.a[1].float() * fused.row_scales[1, :, None]  # the row scales fold into A, as the kernel does
    b_wide = fused.b[1].float()
    ends = fused.ends.tolist()
    for s, (start, end) in enumerate(zip([0, *ends], ends)):
        for w in range(rank):
            want = torch.outer(b[s][1, 0, :, w].float(), a[s][1, 0, w].float())
            got = torch.outer(b_wide[w, start:end], a_wide[s * rank + w])
            if s == 1 and w == 2:
                assert fused.row_scales[1, s * rank + w] == 0 and not fused.b[1, w, start:end].any()
                continue
            assert (got - want).abs().max() <= 0.01 * want.abs().max(), (s, w)
            assert fused.b[1, w, start:end].abs().max() == 127 and fused.a[1, s * rank + w].abs().max() == 127
