"""Greedy decoding with transformers: the uncompiled reference the served replies are compared with."""

from __future__ import annotations


def greedy_ids(model, prompt_ids: list[int], count: int) -> tuple[list[int], list[float]]:
    """``model``'s greedy continuation of ``prompt_ids`` and each token's log probability."""
    import torch

    ids, logprobs = list(prompt_ids), []
    with torch.no_grad():
        for _ in range(count):
            step = torch.log_softmax(model(torch.tensor([ids])).logits[0, -1].float(), dim=-1)
            ids.append(int(step.argmax()))
            logprobs.append(float(step[ids[-1]]))
    return ids[len(prompt_ids) :], logprobs


def opening(text: str, words: int = 6) -> str:
    """A reply's first words: what two greedy replies of one adapter share even where a batch's
    arithmetic makes their later tokens drift apart."""
    return " ".join(text.split()[:words])
