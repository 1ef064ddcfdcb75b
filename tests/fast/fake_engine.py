"""An engine that answers without a model: which adapter ran, then the words of a fixed reply.

It lets the fast tier check request mapping, streaming and errors without vLLM. Like vLLM, it
refuses sampling values the engine cannot take (an exception, which the server must never let a
client's request reach).
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from service.engine import AdapterRef, Chunk, GenerationParams, TokenLogprob

SERVE_ONLY = {"train": False, "auto_train": False}
"""Settings for a server over the fake engine: no training worker and no folder watcher beside it."""

VOCAB_SIZE = 49152
"""The bundled model's vocabulary: vLLM refuses token ids outside it."""

MAX_LOGPROBS = 20
"""vLLM's default ``max_logprobs``."""

SEED_RANGE = (0, 2**63 - 1)
"""Seeds vLLM's engine takes: it cannot serialise larger ones, and reads -1 as "no seed"."""


def check_like_vllm(params: GenerationParams) -> None:
    """Raise ``ValueError`` for what ``vllm.SamplingParams`` refuses (or silently changes)."""
    problems = []
    if params.seed is not None and not SEED_RANGE[0] <= params.seed <= SEED_RANGE[1]:
        problems.append(f"seed {params.seed}")
    if not (math.isfinite(params.temperature) and 0.0 <= params.temperature <= 2.0):
        problems.append(f"temperature {params.temperature}")
    if not 0.0 < params.top_p <= 1.0:
        problems.append(f"top_p {params.top_p}")
    for name in ("presence_penalty", "frequency_penalty"):
        if not -2.0 <= getattr(params, name) <= 2.0:
            problems.append(f"{name} {getattr(params, name)}")
    if params.max_tokens < 1 or params.n < 1:
        problems.append(f"max_tokens {params.max_tokens}, n {params.n}")
    if any(not stop for stop in params.stop):
        problems.append("an empty stop string")
    if params.top_k < -1 or not 0.0 <= params.min_p <= 1.0 or params.repetition_penalty <= 0.0:
        problems.append(f"top_k {params.top_k}, min_p {params.min_p}, repetition_penalty {params.repetition_penalty}")
    if not 0 <= params.min_tokens <= params.max_tokens:
        problems.append(f"min_tokens {params.min_tokens}")
    if params.logprobs is not None and not 0 <= params.logprobs <= MAX_LOGPROBS:
        problems.append(f"logprobs {params.logprobs}")
    outside = [t for t, _ in params.logit_bias if not 0 <= t < VOCAB_SIZE] + [
        t for t in params.stop_token_ids if not 0 <= t < VOCAB_SIZE
    ]
    if outside or any(not -100 <= bias <= 100 for _, bias in params.logit_bias):
        problems.append(f"token ids {outside} or a bias outside -100..100")
    if params.json_schema is not None:
        json.loads(params.json_schema)
    if problems:
        raise ValueError("the engine refuses " + ", ".join(problems))


def fake_logprobs(piece: str, position: int, top: int | None) -> tuple[TokenLogprob, ...]:
    """One token per word, log probability -0.1 per position, the word itself first among ``top``."""
    if top is None:
        return ()
    logprob = -0.1 * position
    ranked = [(piece, logprob)] + [(f" alt{k}", logprob - k) for k in range(1, top)]
    return (TokenLogprob(token_id=position, token=piece, logprob=logprob, top=tuple(ranked[:top])),)


@dataclass
class FakeEngine:
    max_model_len: int = 512
    calls: list[tuple[list[int], GenerationParams, AdapterRef | None]] = field(default_factory=list)
    started: bool = False

    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        self.started = False

    async def generate(
        self, prompt_ids: list[int], params: GenerationParams, request_id: str, adapter: AdapterRef | None
    ) -> AsyncIterator[Chunk]:
        check_like_vllm(params)
        if len(prompt_ids) + params.max_tokens > self.max_model_len:
            raise ValueError(f"{len(prompt_ids)} prompt tokens + max_tokens {params.max_tokens} > {self.max_model_len}")
        self.calls.append((prompt_ids, params, adapter))
        who = adapter.name if adapter else "base"
        words = [f"[{who}]"] + ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]
        for index in range(params.n):
            text = ""
            for count, word in enumerate(words[: params.max_tokens], start=1):
                piece = word if count == 1 else " " + word
                for stop in params.stop:
                    if stop in text + piece:
                        cut = (text + piece).split(stop)[0][len(text) :]
                        yield Chunk(index, cut, 1, "stop", fake_logprobs(cut, count, params.logprobs))
                        break
                else:
                    text += piece
                    last = count == min(len(words), params.max_tokens)
                    reason = ("length" if params.max_tokens < len(words) else "stop") if last else None
                    yield Chunk(index, piece, 1, reason, fake_logprobs(piece, count, params.logprobs))
                    await asyncio.sleep(0)
                    continue
                break
