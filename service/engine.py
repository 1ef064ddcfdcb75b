"""The inference engine behind the API: an interface, and vLLM's async engine implementing it.

The serving logic (:mod:`service.chat`) only sees :class:`Engine`, so the fast tests drive it with a
fake engine and the real tier with vLLM.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from .engine_worker import PersonaWorkerCalls
from .lora_cpu import SWITCH as FAST_LORA_SWITCH
from .lora_cpu import WEIGHTS_SWITCH
from .lora_memory import cpu_lora_capacity
from .settings import ServeSettings

log = logging.getLogger("persona.service")


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
    repetition_penalty: float = 1.0
    top_k: int = 0
    """0: every token (vLLM's "off")."""
    min_p: float = 0.0
    min_tokens: int = 0
    stop_token_ids: tuple[int, ...] = ()
    logit_bias: tuple[tuple[int, float], ...] = ()
    """Token id and bias, added to the logits before sampling."""
    logprobs: int | None = None
    """None: no log probabilities; k: the sampled token's and the k likeliest at each step."""
    json_schema: str | None = None
    """A JSON schema the reply must follow (vLLM's structured outputs)."""
    json_object: bool = False
    """The reply is one JSON object, of any shape."""


@dataclass(frozen=True)
class TokenLogprob:
    """One reply token's log probability under the model (before sampling's changes), with the likeliest."""

    token_id: int
    token: str
    logprob: float
    top: tuple[tuple[str, float], ...] = ()


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
    logprobs: tuple[TokenLogprob, ...] = ()


class Engine(Protocol):
    max_model_len: int

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def generate(
        self, prompt_ids: list[int], params: GenerationParams, request_id: str, adapter: AdapterRef | None
    ) -> AsyncIterator[Chunk]: ...


LIBRARY_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib")
"""Where Debian and other distributions put shared libraries such as tcmalloc."""


def preload_libraries(prefix: Path = Path(sys.prefix), library_dirs: Sequence[str] = LIBRARY_DIRS) -> list[str]:
    """tcmalloc (Debian's ``libtcmalloc-minimal4``) and Intel OpenMP (``intel-openmp``, a vLLM
    dependency) where installed: preloaded, they make the CPU engine about 1.25x faster here."""
    found = []
    tcmalloc = [hit for folder in library_dirs for hit in sorted(Path(folder).glob("libtcmalloc_minimal.so*"))]
    if tcmalloc:
        found.append(str(tcmalloc[0]))
    iomp = prefix / "lib" / "libiomp5.so"
    if iomp.exists():
        found.append(str(iomp))
    return found


def cpu_environment(settings: ServeSettings, current: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment for vLLM's CPU engine, measured on 2-core machines (see bench/RESULTS.md).

    vLLM by default reserves one core of two and binds to the other; this binds the engine's OpenMP
    threads to every core. The engine runs in a spawned process, so these must be in ``os.environ``
    before it starts. ``LD_PRELOAD`` keeps what ``current`` (the environment) already preloads.
    """
    cores = settings.cpu_threads or os.cpu_count() or 1
    env = {
        "VLLM_CPU_KVCACHE_SPACE": str(int(settings.kv_cache_gb)) if settings.kv_cache_gb >= 1 else "1",
        "VLLM_CPU_OMP_THREADS_BIND": f"0-{cores - 1}",
        "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
        "OMP_NUM_THREADS": str(cores),
    }
    if settings.cpu_preload:
        current = os.environ if current is None else current
        preloaded = [part for part in current.get("LD_PRELOAD", "").split(":") if part]
        names = {Path(part).name for part in preloaded}
        added = [lib for lib in preload_libraries() if Path(lib).name not in names]
        if added:
            env["LD_PRELOAD"] = ":".join(added + preloaded)
    return env


def lora_plugin_environment(settings: ServeSettings) -> tuple[dict[str, str], dict[str, str]]:
    """Turns this project's CPU LoRA plugin (:mod:`service.lora_cpu`) on or off in vLLM's processes:
    the variables to set, and defaults that an existing variable overrides.

    With the plugin the model is compiled at the first start and saved ahead of time in
    :func:`engine_cache_dir`; later starts load it instead of tracing and compiling again. The
    plugin's LoRA kernel is built there too, at the first start. Kept apart
    from :func:`cpu_environment`, which the benchmarks also give vLLM's own server: that server must
    run vLLM's own LoRA ops unless a benchmark asks otherwise.
    """
    if not settings.fast_lora:
        return {FAST_LORA_SWITCH: "0"}, {}
    switch = {FAST_LORA_SWITCH: "1", WEIGHTS_SWITCH: settings.adapter_weights}
    return switch, {"VLLM_USE_AOT_COMPILE": "1", "VLLM_CACHE_ROOT": str(engine_cache_dir(settings))}


def processor_fields(cpuinfo: Path = Path("/proc/cpuinfo")) -> dict[str, str]:
    """The first processor's fields in ``cpuinfo`` (model name, flags...); empty where it cannot be read."""
    try:
        first = cpuinfo.read_text().split("\n\n", 1)[0]
    except OSError:
        return {}
    return {key.strip(): value.strip() for key, _, value in (line.partition(":") for line in first.splitlines())}


def cpu_fingerprint(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """A short name for this machine's processor model and instruction set extensions."""
    import hashlib
    import platform

    fields = processor_fields(cpuinfo)
    keys = ("model name", "flags", "Features", "CPU implementer", "CPU part")
    described = [f"{key}: {fields[key]}" for key in keys if key in fields] or [platform.processor()]
    digest = hashlib.sha256("\n".join([platform.machine(), *described]).encode()).hexdigest()[:12]
    return f"{platform.machine()}-{digest}"


def engine_cache_dir(settings: ServeSettings, cpuinfo: Path = Path("/proc/cpuinfo")) -> Path:
    """Where the engine keeps the model it compiled (vLLM's cache folder), one per processor: compiled
    code uses the instructions of the CPU it was compiled on, and a copied cache must not run elsewhere."""
    return settings.cache_dir / "engine" / cpu_fingerprint(cpuinfo)


def engine_dtype(requested: str, cuda: bool) -> str:
    """The dtype the engine runs in: ``requested`` unless it is ``auto``.

    ``auto`` is bfloat16 on a GPU and float32 on a CPU. On the 2-core CPUs bfloat16 is 1.1-1.45x
    faster (bench/RESULTS.md), but its rounding depends on what else is in the batch, so a greedy or
    seeded reply changes with the server's load; in float32 it keeps (the real tier checks this).
    """
    if requested != "auto":
        return requested
    return "bfloat16" if cuda else "float32"


def adapter_dtype(settings: ServeSettings, cuda: bool) -> str:
    """vLLM's ``lora_dtype``: ``auto`` (the engine's dtype), except that a float32 CPU engine with the
    plugin's kernel keeps adapters in bfloat16. The kernel multiplies int8 or float16 copies made from
    them; bfloat16 keeps float32's range, so the small weights of a lightly trained adapter do not
    underflow, and the engine's adapter cache holds twice as many adapters, each read from disk and
    copied into a batch slot with half the bytes."""
    dtype = engine_dtype(settings.dtype, cuda)
    if not cuda and dtype == "float32" and settings.fast_lora and settings.adapter_weights != "float32":
        return "bfloat16"
    return "auto"


def whole_prompt_steps(settings: ServeSettings) -> dict[str, object]:
    """Engine arguments that keep every prompt within one engine step on the CPU.

    With chunked prefill, a prompt split across steps makes vLLM's CPU worker rewind the random
    generator of a seeded request, which CPU generators cannot do: the engine dies and every request
    after it fails. Whole prompts per step avoid that; each step may then take a full-length prompt.
    """
    return {"enable_chunked_prefill": False, "max_num_batched_tokens": max(settings.max_model_len, 2048)}


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
        self.cpu_loras: int | None = None
        """Adapters the engine keeps loaded in memory, once started."""
        self._pinned: set[int] = set()
        self._engine = None

    async def start(self) -> None:
        from vllm import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        cuda = has_cuda()
        if not cuda:
            for key, value in cpu_environment(self.settings).items():
                if key == "LD_PRELOAD":
                    os.environ[key] = value  # already merged with what was preloaded
                else:
                    os.environ.setdefault(key, value)
            switch, defaults = lora_plugin_environment(self.settings)
            os.environ.update(switch)  # the setting decides, not a stale variable
            for key, value in defaults.items():
                os.environ.setdefault(key, value)
        dtype, lora_dtype = engine_dtype(self.settings.dtype, cuda), adapter_dtype(self.settings, cuda)
        kept = dtype if lora_dtype == "auto" else lora_dtype
        self.cpu_loras = cpu_lora_capacity(self.settings, self.model_path, dtype_bytes=4 if kept == "float32" else 2)
        args = AsyncEngineArgs(
            model=str(self.model_path),
            served_model_name=[self.served_name],
            dtype=dtype,
            **({} if cuda else whole_prompt_steps(self.settings)),
            max_model_len=self.settings.max_model_len,
            enable_lora=True,
            max_loras=self.settings.max_loras,
            max_cpu_loras=self.cpu_loras,
            max_lora_rank=self.settings.max_lora_rank,
            lora_dtype=lora_dtype,
            max_num_seqs=self.settings.max_num_seqs,
            tensor_parallel_size=self.settings.tensor_parallel_size,
            gpu_memory_utilization=self.settings.gpu_memory_utilization,
            disable_log_stats=True,
            worker_extension_cls=f"{PersonaWorkerCalls.__module__}.{PersonaWorkerCalls.__qualname__}",
        )
        log.info("keeping up to %d adapters loaded in memory, in %s", args.max_cpu_loras, kept)
        self._engine = AsyncLLM.from_engine_args(args)

    async def stop(self) -> None:
        if self._engine is not None:
            self._engine.shutdown()
            self._engine = None

    async def pin(self, adapter: AdapterRef) -> bool:
        """Load the adapter now and keep it in memory for good (:mod:`.engine_worker` says why not in a
        batch slot too). False when pinning more would leave no room in memory for a full batch of
        other adapters beside the pinned ones."""
        from vllm.lora.request import LoRARequest

        if self._engine is None or self.cpu_loras is None:
            raise RuntimeError("engine not started")
        if adapter.lora_id in self._pinned:
            return True
        if len(self._pinned) >= self.cpu_loras - self.settings.max_loras:
            return False
        await self._engine.add_lora(LoRARequest(adapter.name, adapter.lora_id, str(adapter.path)))
        await self._engine.collective_rpc("pin_adapter_in_memory", args=(adapter.lora_id,))
        self._pinned.add(adapter.lora_id)
        return True

    async def loaded_adapters(self) -> set[int]:
        """The LoRA ids the engine holds now (its CPU cache of adapters)."""
        if self._engine is None:
            return set()
        return set(await self._engine.list_loras())

    async def generate(
        self, prompt_ids: list[int], params: GenerationParams, request_id: str, adapter: AdapterRef | None
    ) -> AsyncIterator[Chunk]:
        from vllm.inputs import TokensPrompt
        from vllm.lora.request import LoRARequest

        if self._engine is None:
            raise RuntimeError("engine not started")
        sampling = vllm_sampling(params)
        lora = LoRARequest(adapter.name, adapter.lora_id, str(adapter.path)) if adapter else None
        stream = self._engine.generate(
            TokensPrompt(prompt_token_ids=prompt_ids), sampling, request_id, lora_request=lora
        )
        finished = False
        try:
            async for output in stream:
                for choice in output.outputs:
                    logprobs = (
                        token_logprobs(choice.token_ids, choice.logprobs, params.logprobs)
                        if params.logprobs is not None
                        else ()
                    )
                    yield Chunk(choice.index, choice.text, len(choice.token_ids), choice.finish_reason, logprobs)
                finished = output.finished
        finally:
            if not finished:  # the client went away: free the slot at once
                await self._engine.abort(request_id)


def vllm_sampling(params: GenerationParams):
    """vLLM's ``SamplingParams`` for one request, streamed as deltas."""
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind, StructuredOutputsParams

    structured = None
    if params.json_schema is not None:
        structured = StructuredOutputsParams(json=params.json_schema)
    elif params.json_object:
        structured = StructuredOutputsParams(json_object=True)
    return SamplingParams(
        n=params.n,
        temperature=params.temperature,
        top_p=params.top_p,
        top_k=params.top_k,
        min_p=params.min_p,
        max_tokens=params.max_tokens,
        min_tokens=params.min_tokens,
        stop=list(params.stop) or None,
        stop_token_ids=list(params.stop_token_ids) or None,
        seed=params.seed,
        presence_penalty=params.presence_penalty,
        frequency_penalty=params.frequency_penalty,
        repetition_penalty=params.repetition_penalty,
        logit_bias=dict(params.logit_bias) or None,
        logprobs=params.logprobs,
        structured_outputs=structured,
        output_kind=RequestOutputKind.DELTA,
    )


def token_logprobs(
    token_ids: Sequence[int], steps: Sequence[Mapping[int, Any]] | None, top: int
) -> tuple[TokenLogprob, ...]:
    """vLLM's per-step ``{token id: Logprob}`` (the ``top`` likeliest, and the sampled token whatever
    its rank) as :class:`TokenLogprob`."""
    out = []
    for token_id, step in zip(token_ids, steps or (), strict=False):
        chosen = step.get(token_id)
        ranked = sorted(
            (entry for entry in step.values() if entry.rank is not None and entry.rank <= top),
            key=lambda entry: entry.rank,
        )
        out.append(
            TokenLogprob(
                token_id=token_id,
                token=(chosen.decoded_token or "") if chosen is not None else "",
                logprob=max(chosen.logprob, -9999.0) if chosen is not None else -9999.0,
                top=tuple((entry.decoded_token or "", max(entry.logprob, -9999.0)) for entry in ranked),
            )
        )
    return tuple(out)
