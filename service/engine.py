"""The inference engine behind the API: an interface, and vLLM's async engine implementing it.

The serving logic (:mod:`service.chat`) only sees :class:`Engine`, so the fast tests drive it with a
fake engine and the real tier with vLLM.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import AsyncIterator, Protocol

from .settings import ServeSettings


@dataclass(frozen=True)
class GenerationParams:
    """Sampling for one request, after request values and persona defaults are merged."""

    max_tokens: int
    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0


@dataclass(frozen=True)
class AdapterRef:
    """A LoRA adapter for one request; ``lora_id`` is never reused for other weights."""

    lora_id: int
    name: str
    path: Path


@dataclass(frozen=True)
class Chunk:
    """New text for one of the ``n`` choices."""

    index: int
    text: str
    new_tokens: int
    finish_reason: str | None = None


class Engine(Protocol):
    max_model_len: int

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def generate(
        self, prompt_ids: list[int], params: GenerationParams, request_id: str, adapter: AdapterRef | None
    ) -> AsyncIterator[Chunk]: ...


def cpu_environment(settings: ServeSettings) -> dict[str, str]:
    """Environment for vLLM's CPU engine, measured on 2-core machines (see bench/RESULTS.md).

    The engine runs in a spawned process, so these must be in ``os.environ`` before it starts.
    """
    cores = settings.cpu_threads or os.cpu_count() or 1
    env = {
        "VLLM_CPU_KVCACHE_SPACE": str(int(settings.kv_cache_gb)) if settings.kv_cache_gb >= 1 else "1",
        "VLLM_CPU_OMP_THREADS_BIND": f"0-{cores - 1}",
        "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
        "OMP_NUM_THREADS": str(cores),
    }
    return env


def has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


class VllmEngine:
    """vLLM's ``AsyncLLM`` in this process (its core runs in a child process it spawns)."""

    def __init__(self, settings: ServeSettings, model_path: Path, served_name: str) -> None:
        self.settings = settings
        self.model_path = model_path
        self.served_name = served_name
        self.max_model_len = settings.max_model_len
        self._engine = None

    async def start(self) -> None:
        from vllm import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        cuda = has_cuda()
        if not cuda:
            for key, value in cpu_environment(self.settings).items():
                os.environ.setdefault(key, value)
        dtype = self.settings.dtype
        if dtype == "auto":
            dtype = "bfloat16" if cuda else "float32"
        args = AsyncEngineArgs(
            model=str(self.model_path),
            served_model_name=[self.served_name],
            dtype=dtype,
            max_model_len=self.settings.max_model_len,
            enable_lora=True,
            max_loras=self.settings.max_loras,
            max_cpu_loras=max(self.settings.max_cpu_loras, self.settings.max_loras),
            max_lora_rank=self.settings.max_lora_rank,
            max_num_seqs=self.settings.max_num_seqs,
            tensor_parallel_size=self.settings.tensor_parallel_size,
            gpu_memory_utilization=self.settings.gpu_memory_utilization,
            disable_log_stats=True,
        )
        self._engine = AsyncLLM.from_engine_args(args)

    async def stop(self) -> None:
        if self._engine is not None:
            self._engine.shutdown()
            self._engine = None

    async def generate(
        self, prompt_ids: list[int], params: GenerationParams, request_id: str, adapter: AdapterRef | None
    ) -> AsyncIterator[Chunk]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt
        from vllm.lora.request import LoRARequest
        from vllm.sampling_params import RequestOutputKind

        if self._engine is None:
            raise RuntimeError("engine not started")
        sampling = SamplingParams(
            n=params.n,
            temperature=params.temperature,
            top_p=params.top_p,
            max_tokens=params.max_tokens,
            stop=list(params.stop) or None,
            seed=params.seed,
            presence_penalty=params.presence_penalty,
            frequency_penalty=params.frequency_penalty,
            output_kind=RequestOutputKind.DELTA,
        )
        lora = LoRARequest(adapter.name, adapter.lora_id, str(adapter.path)) if adapter else None
        stream = self._engine.generate(TokensPrompt(prompt_token_ids=prompt_ids), sampling, request_id, lora_request=lora)
        finished = False
        try:
            async for output in stream:
                for choice in output.outputs:
                    yield Chunk(choice.index, choice.text, len(choice.token_ids), choice.finish_reason)
                finished = output.finished
        finally:
            if not finished:  # the client went away: free the slot at once
                await self._engine.abort(request_id)
