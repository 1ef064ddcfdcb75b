"""The rejected side of the preference pairs: the generic voice answering the same user turns.

``base`` asks the base model with its default prompt, through the answerer that makes the replay
answers (the server's engine when there is one, else this process) and caches them per base model
and prompt list (:func:`training.base_answers.base_answers`), so a retrain on the same logs asks
nothing again. ``card`` asks the base model with the persona's short system prompt; it is answered in
this process from the supervised model with its adapter switched off, the same weights as the base.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from store.base_model import BaseModel

from .base_answers import Answerer, PromptSet, base_answers
from .config import TrainingError

__all__ = ["REJECTED_MAX_TOKENS", "rejected_replies"]

REJECTED_MAX_TOKENS = 96
"""Length of a generic reply: as long as the replay answers, so ``base`` shares their answerer."""


def rejected_replies(
    source: str,
    prompts: Sequence[str],
    *,
    cache_dir: Path,
    base: BaseModel,
    persona: str,
    answerer: Answerer | None,
    model: Any = None,
    tokenizer: Any = None,
    system_prompt: str | None = None,
    say: Callable[[str], None] = lambda _: None,
) -> list[str]:
    """One generic reply per prompt (a user turn), from ``source`` (``base`` or ``card``)."""
    if source == "base":
        prompt_set = PromptSet(f"preference-{persona}", tuple(prompts), REJECTED_MAX_TOKENS)
        answers = base_answers(cache_dir, base.id, base.hash, prompt_set, answerer, say)
        if answers is None:
            raise TrainingError("no answerer for the base model's replies to the preference pairs")
        return answers
    if model is None or tokenizer is None:
        raise TrainingError("the card's replies are made from the trained model, which was not given")
    say(f"answering {len(prompts)} user turns with the base model and the persona's short prompt")
    with model.disable_adapter():
        return _generate(model, tokenizer, prompts, system_prompt)


def _generate(model: Any, tokenizer: Any, prompts: Sequence[str], system_prompt: str | None) -> list[str]:
    """Greedy replies to each prompt under ``system_prompt``, one at a time (few, short, on the CPU)."""
    import torch

    from store.chat_format import end_of_turn_ids, render_prompt

    from .batches import pad_id
    from .model import model_device

    stops = sorted(end_of_turn_ids(tokenizer))
    device, out = model_device(model), []
    model.eval()
    for prompt in prompts:
        messages = ([{"role": "system", "content": system_prompt}] if system_prompt else []) + [
            {"role": "user", "content": prompt}
        ]
        ids = torch.tensor([render_prompt(tokenizer, messages)], device=device)
        with torch.inference_mode():
            generated = model.generate(
                input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=REJECTED_MAX_TOKENS,
                do_sample=False, temperature=None, top_p=None, top_k=None, use_cache=True,
                eos_token_id=stops or None, pad_token_id=pad_id(tokenizer),
            )  # fmt: skip
        row = generated[0, ids.shape[1] :].tolist()
        end = next((i for i, token in enumerate(row) if token in stops), len(row))
        out.append(tokenizer.decode(row[:end], skip_special_tokens=True).strip())
    model.train()
    return out
