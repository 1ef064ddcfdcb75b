"""An engine that answers without a model: which adapter ran, then the words of a fixed reply.

It lets the fast tier check request mapping, streaming and errors without vLLM.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import AsyncIterator

from service.engine import AdapterRef, Chunk, GenerationParams


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
        self.calls.append((prompt_ids, params, adapter))
        who = adapter.name if adapter else "base"
        words = [f"[{who}]"] + "one two three four five six seven eight nine ten".split()
        for index in range(params.n):
            text = ""
            for count, word in enumerate(words[: params.max_tokens], start=1):
                piece = word if count == 1 else " " + word
                for stop in params.stop:
                    if stop in text + piece:
                        yield Chunk(index, (text + piece).split(stop)[0][len(text):], 1, "stop")
                        break
                else:
                    text += piece
                    last = count == min(len(words), params.max_tokens)
                    reason = ("length" if params.max_tokens < len(words) else "stop") if last else None
                    yield Chunk(index, piece, 1, reason)
                    await asyncio.sleep(0)
                    continue
                break
