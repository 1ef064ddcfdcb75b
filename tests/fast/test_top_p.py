"""The plugin's top-k/top-p filter keeps exactly the tokens vLLM's own CPU filter keeps, whatever the
mix of rows in a batch, and leaves rows that filter nothing as they were."""

from __future__ import annotations

import pytest
import torch
from vllm.v1.sample.ops.topk_topp_sampler import apply_top_k_top_p_pytorch

from service.lora_cpu.top_p import CANDIDATES, top_k_top_p

VOCAB = 49152


def vllm_filter(logits: torch.Tensor, k: torch.Tensor | None, p: torch.Tensor | None) -> torch.Tensor:
    return apply_top_k_top_p_pytorch(logits, k, p, allow_cpu_sync=True)


def batch(rows: int, seed: int) -> torch.Tensor:
    """Rows from peaked (a few likely tokens) to flat (the kept set reaches past the candidates)."""
    generator = torch.Generator().manual_seed(seed)
    scales = torch.linspace(0.2, 12.0, rows).unsqueeze(1)
    return torch.randn(rows, VOCAB, generator=generator) * scales


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize(
    "ks, ps",
    [
        (None, [0.9]),
        (None, [0.5, 0.9, 0.95, 0.999, 1.0, 0.1]),
        ([VOCAB, 5, 40, CANDIDATES, CANDIDATES + 50, VOCAB], None),
        ([VOCAB, 5, 1, 600, VOCAB, 20], [0.9, 0.9, 0.5, 0.8, 1.0, 0.7]),
    ],
)
def test_the_same_tokens_are_kept_as_by_vllm(seed: int, ks, ps) -> None:
    rows = 12
    logits = batch(rows, seed)
    k = torch.tensor((ks * rows)[:rows], dtype=torch.long) if ks else None
    p = torch.tensor((ps * rows)[:rows], dtype=torch.float32) if ps else None
    want = vllm_filter(logits.clone(), k, p)
    calls: list[int] = []

    def counted(lg, kk, pp):
        calls.append(lg.shape[0])
        return vllm_filter(lg, kk, pp)

    got = top_k_top_p(logits.clone(), k, p, counted)
    sampled, wanted = got.softmax(dim=-1), want.softmax(dim=-1)
    assert torch.equal(sampled > 0, wanted > 0), "the tokens that can be drawn differ"
    assert torch.allclose(sampled, wanted, rtol=1e-4, atol=1e-7), "the distributions differ"
    assert sum(calls) < rows, "every row went through the full sort"


def test_rows_that_filter_nothing_are_untouched_and_a_batch_without_filters_is_free() -> None:
    logits = batch(3, 7)
    before = logits.clone()
    out = top_k_top_p(logits, torch.tensor([VOCAB, 3, VOCAB]), torch.tensor([1.0, 1.0, 1.0]), vllm_filter)
    assert torch.equal(out[0], before[0]) and torch.equal(out[2], before[2])
    assert int(torch.isfinite(out[1]).sum()) == 3
    assert top_k_top_p(before, None, None, vllm_filter) is before
