"""Top-k and top-p on the CPU without sorting the vocabulary.

vLLM's CPU sampler sorts every row's whole vocabulary whenever a request in the batch sets top_p (most
cards do), which costs a large share of a decoding step for a small model. The tokens top-p keeps are
nearly always among the few likeliest: this takes the ``CANDIDATES`` likeliest tokens of each row
(``topk``, no full sort) and applies vLLM's rule to them, a token kept when the probability of the
tokens likelier than it is below ``p``. A row whose kept set does not end inside the candidates, or
whose top-k is wider than them, goes through vLLM's own function, so the kept tokens are the same as
vLLM's (up to float rounding at the boundary) and so is the distribution sampled from.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

CANDIDATES = 256
"""Likeliest tokens per row looked at before falling back to vLLM's full sort."""

Filter = Callable[[torch.Tensor, torch.Tensor | None, torch.Tensor | None], torch.Tensor]


def top_k_top_p(
    logits: torch.Tensor,
    k: torch.Tensor | None,
    p: torch.Tensor | None,
    fallback: Filter,
    candidates: int = CANDIDATES,
) -> torch.Tensor:
    """``logits`` with the tokens outside each row's top-k and top-p set to -inf (in place for the rows
    that filter anything); ``fallback`` is vLLM's function, used for the rows the candidates cannot decide."""
    if k is None and p is None:
        return logits
    rows, vocab = logits.shape
    width = min(candidates, vocab)
    k_row = k.to(torch.long).clamp(1, vocab) if k is not None else torch.full((rows,), vocab, dtype=torch.long)
    p_row = p.to(torch.float32) if p is not None else torch.ones(rows, dtype=torch.float32)
    filtered = (k_row < vocab) | (p_row < 1.0)
    if not bool(filtered.any()):
        return logits
    index = filtered.nonzero().squeeze(1)
    chosen, ks, ps = logits.index_select(0, index), k_row.index_select(0, index), p_row.index_select(0, index)

    values, ids = chosen.topk(width, dim=-1)  # descending
    ranks = torch.arange(width).unsqueeze(0)
    topped = ks < vocab
    values = values.masked_fill(ranks >= ks.unsqueeze(1), -float("inf"))
    # Top-p renormalises over what top-k left: the candidates when top-k is within them, else every token.
    whole = torch.logsumexp(chosen.float(), dim=-1, keepdim=True)
    within = torch.logsumexp(values.float(), dim=-1, keepdim=True)
    probs = torch.exp(values.float() - torch.where(topped.unsqueeze(1), within, whole))
    total = probs.cumsum(dim=-1)
    keep = ((total - probs) < ps.unsqueeze(1)) | (ps >= 1.0).unsqueeze(1)
    keep[:, 0] = True
    decided = (ks <= width) | (~topped & (total[:, -1] >= ps))

    out = torch.full_like(chosen, -float("inf"))
    out.scatter_(1, ids, values.masked_fill(~keep, -float("inf")))
    if not bool(decided.all()):
        hard = (~decided).nonzero().squeeze(1)
        out[hard] = fallback(chosen[hard], ks[hard] if k is not None else None, ps[hard] if p is not None else None)
    logits[index] = out
    return logits


def install() -> bool:
    """Route vLLM's CPU sampler through :func:`top_k_top_p` (once per process); whether it did."""
    from vllm.v1.sample.ops import topk_topp_sampler as sampler

    if getattr(sampler, "_persona_top_p", False):
        return False
    original = sampler.apply_top_k_top_p

    def apply_top_k_top_p(logits: torch.Tensor, k: torch.Tensor | None, p: torch.Tensor | None) -> torch.Tensor:
        return top_k_top_p(logits, k, p, original)

    sampler.apply_top_k_top_p = apply_top_k_top_p
    sampler._persona_top_p = True
    return True
