"""The base model's own answers to a set of prompts, made once per base model and prompt set, then cached.

Two things need what the base model says without a persona: the fidelity report's forgetting figure
(:mod:`training.fidelity.general`) and replay, the general conversation mixed into training
(:mod:`training.replay`). Each has its own prompt set, kept apart so that training never sees the
conversations the forgetting figure is measured on. Answers are greedy (the base model's most likely
answer) to a lone user message, so the chat template's default system prompt applies.

They come from an *answerer*: through a running server (:func:`server_answerer`, the fidelity
report's request code) or in this process with transformers (:func:`local_answerer`, for a training
run with no server). The cache file is keyed by the base model's hash and the prompt set, so a new
base model or an edited prompt list makes a new set, and nothing else does.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from store.base_model import BaseModel
from store.files import atomic_write

from .server_client import Ask, Sampling, System, generate

__all__ = [
    "Answerer",
    "PromptSet",
    "base_answers",
    "cache_file",
    "conversations",
    "local_answerer",
    "server_answerer",
]

CACHE_FOLDER = "base-answers"

Answerer = Callable[[Sequence[str]], list[str]]
"""Greedy answers of the base model to each prompt (a lone user message), in order."""


@dataclass(frozen=True)
class PromptSet:
    """A named list of prompts and the answer length they are generated with."""

    name: str
    prompts: tuple[str, ...]
    max_tokens: int

    def key(self) -> str:
        """Changes whenever the prompts or the answer length change."""
        text = json.dumps({"prompts": list(self.prompts), "max_tokens": self.max_tokens}, ensure_ascii=False)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def cache_file(cache_dir: Path, base_hash: str, prompt_set: PromptSet) -> Path:
    return Path(cache_dir) / CACHE_FOLDER / f"{prompt_set.name}-{base_hash[:16]}-{prompt_set.key()}.json"


def _cached(path: Path, prompt_set: PromptSet) -> list[str] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    answers = data.get("answers")
    if data.get("prompts") != list(prompt_set.prompts) or not isinstance(answers, list):
        return None
    if len(answers) != len(prompt_set.prompts) or not all(isinstance(a, str) for a in answers):
        return None
    return answers


def base_answers(
    cache_dir: Path,
    base_id: str,
    base_hash: str,
    prompt_set: PromptSet,
    answer: Answerer | None,
    say: Callable[[str], None] = lambda _: None,
) -> list[str] | None:
    """The answers to ``prompt_set`` from the cache, else from ``answer`` (then cached).

    ``None`` when nothing is cached and there is no answerer.
    """
    path = cache_file(cache_dir, base_hash, prompt_set)
    answers = _cached(path, prompt_set)
    if answers is not None or answer is None:
        return answers
    say(
        f"answering {len(prompt_set.prompts)} {prompt_set.name} prompts with {base_id}, once for this base model "
        f"(cached in {path})"
    )
    answers = [text.strip() for text in answer(prompt_set.prompts)]
    if len(answers) != len(prompt_set.prompts):
        raise ValueError(f"{len(answers)} answers to {len(prompt_set.prompts)} {prompt_set.name} prompts")
    record = {"prompt_set": prompt_set.name, "base_model": base_id, "base_hash": base_hash}
    record |= {"max_tokens": prompt_set.max_tokens, "prompts": list(prompt_set.prompts), "answers": answers}
    atomic_write(path, json.dumps(record, indent=1, ensure_ascii=False))
    return answers


def conversations(prompt_set: PromptSet, answers: Sequence[str]) -> list[list[dict[str, str]]]:
    """``[user prompt, base answer]`` conversations, leaving out empty answers."""
    return [
        [{"role": "user", "content": prompt}, {"role": "assistant", "content": text}]
        for prompt, text in zip(prompt_set.prompts, answers)
        if text.strip()
    ]


def server_answerer(url: str, base_id: str, max_tokens: int, *, concurrency: int = 24) -> Answerer:
    """Answers through the OpenAI-compatible server at ``url`` (``.../v1``), all requests in flight at once."""

    def answer(prompts: Sequence[str]) -> list[str]:
        asks = [Ask(conversation=({"role": "user", "content": p},), seed=i) for i, p in enumerate(prompts)]
        [replies] = generate(
            url, [(System("base", base_id), asks)], Sampling(0.0, 1.0, max_tokens), concurrency=concurrency
        )
        return [reply.text for reply in replies]

    return answer


def local_answerer(base: BaseModel, max_tokens: int, *, batch_size: int = 16, progress: bool = True) -> Answerer:
    """Answers from the base model loaded in this process (transformers, greedy, ``batch_size`` prompts
    decoded together, which a CPU does far faster per answer than one at a time), with a progress bar
    by decoding step: the first training run on a new base model pays for it once."""

    def answer(prompts: Sequence[str]) -> list[str]:
        from tqdm.auto import tqdm

        from .model import load_base_model, load_tokenizer

        tokenizer = load_tokenizer(base)
        model = load_base_model(base).eval()
        batches = [prompts[start : start + batch_size] for start in range(0, len(prompts), batch_size)]
        out: list[str] = []
        with tqdm(total=len(batches) * max_tokens, desc="base answers", unit="step", disable=not progress) as bar:
            for number, batch in enumerate(batches, start=1):
                out += _generate(model, tokenizer, batch, max_tokens, on_step=lambda: bar.update(1))
                bar.update(number * max_tokens - bar.n)  # a batch that stopped early
                bar.set_postfix(answers=len(out), refresh=True)
        del model
        return out

    return answer


def _generate(
    model: Any, tokenizer: Any, prompts: Sequence[str], max_tokens: int, on_step: Callable[[], Any] = lambda: None
) -> list[str]:
    """Greedy answers to one batch of prompts, left-padded, each cut at its first end-of-turn token;
    ``on_step`` is called at every decoding step."""
    import torch
    from transformers import LogitsProcessor, LogitsProcessorList

    from store.chat_format import end_of_turn_ids, render_prompt

    from .batches import pad_id
    from .model import model_device

    encoded = [render_prompt(tokenizer, [{"role": "user", "content": p}]) for p in prompts]
    width = max(len(ids) for ids in encoded)
    pad = pad_id(tokenizer)
    input_ids = torch.full((len(encoded), width), pad, dtype=torch.long)
    attention = torch.zeros((len(encoded), width), dtype=torch.long)
    for row, ids in enumerate(encoded):
        input_ids[row, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
        attention[row, width - len(ids) :] = 1
    device = model_device(model)
    stops = sorted(end_of_turn_ids(tokenizer))

    class EachStep(LogitsProcessor):
        def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
            on_step()
            return scores

    with torch.inference_mode():
        generated = model.generate(
            input_ids=input_ids.to(device),
            attention_mask=attention.to(device),
            max_new_tokens=max_tokens,
            do_sample=False,
            temperature=None,
            top_p=None,
            top_k=None,
            use_cache=True,
            eos_token_id=stops or None,
            pad_token_id=pad,
            logits_processor=LogitsProcessorList([EachStep()]),
        )
    texts = []
    for row in generated[:, width:].tolist():
        end = next((i for i, token in enumerate(row) if token in stops), len(row))
        texts.append(tokenizer.decode(row[:end], skip_special_tokens=True).strip())
    return texts
