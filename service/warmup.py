"""Starting the engine once ahead of serving, so the first ``persona serve`` answers soon after set-up.

The engine's first start on a CPU compiles the model around the LoRA plugin's ops; torch keeps that
compilation in its cache, and every later start with the same settings reuses it. ``make run`` warms
the engine this way as part of its set-up (once per install), so the wait moves out of the first start.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from store.base_model import resolve_base_model
from store.chat_format import prompt_messages, render_prompt

from .engine import Engine, GenerationParams, VllmEngine
from .settings import ServeSettings


@dataclass(frozen=True)
class Warmed:
    """What warming took: engine start-up and its first reply, in seconds."""

    start_s: float
    first_reply_s: float
    reply: str


async def warm_engine(
    settings: ServeSettings, engine_factory: Callable[[ServeSettings, object], Engine] | None = None
) -> Warmed:
    """Start the engine as ``persona serve`` would, generate a few greedy tokens, and stop it."""
    from transformers import AutoTokenizer

    base = resolve_base_model(settings.base_model, settings.cache_dir, settings.allow_download)
    engine = engine_factory(settings, base) if engine_factory else VllmEngine(settings, base.path, base.id)
    tokenizer = AutoTokenizer.from_pretrained(base.path)
    prompt = render_prompt(tokenizer, prompt_messages([{"role": "user", "content": "Hello!"}], None))
    started = time.perf_counter()
    await engine.start()
    try:
        ready = time.perf_counter()
        text = ""
        params = GenerationParams(max_tokens=4, temperature=0.0)
        async for chunk in engine.generate(list(prompt), params, f"warm-{uuid.uuid4().hex}", None):
            text += chunk.text
        return Warmed(ready - started, time.perf_counter() - ready, text)
    finally:
        await engine.stop()
