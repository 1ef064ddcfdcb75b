"""Server settings, from ``persona serve`` flags or ``PERSONA_*`` environment variables.

This model is their one source: each field's description is its documentation and the help of the
``persona serve`` flag generated from it (:mod:`cli.serve`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from store.settings import StoreSettings, WorkerSettings

from .lora_cpu import AdapterWeights


class ServeSettings(StoreSettings):
    """Everything the server needs; built once at start-up and passed to :func:`service.app.create_app`."""

    model_config = SettingsConfigDict(env_prefix="PERSONA_", extra="ignore")

    host: str = Field(default="127.0.0.1", description="Address to listen on.")
    port: int = Field(default=8000, ge=1, le=65535, description="Port to listen on.")
    api_keys: list[str] = Field(
        default_factory=list, description="If set, requests need 'Authorization: Bearer <key>'."
    )
    ui: bool = Field(default=True, description="Mount the Gradio chat page at /ui.")
    strict_parameters: bool = Field(
        default=False,
        description="Refuse (400) request fields the server ignores (other servers' fields such as num_ctx, "
        "unused ones such as user), as OpenAI's API does; off: they are ignored and named in a Warning header.",
    )

    # vLLM engine
    max_loras: int = Field(
        default=16,
        ge=1,
        description="Adapters active in one batch: a request whose adapter finds no free slot waits, so with "
        "many personas in use this, not the memory, holds users back.",
    )
    max_cpu_loras: int = Field(
        default=0,
        ge=0,
        description="Adapters kept loaded in memory; 0 = as many as fit in a quarter of the memory free at start-up.",
    )
    max_model_len: int = Field(default=2048, ge=64, description="Context length (prompt + reply) in tokens.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        default="auto",
        description="'auto' picks bfloat16 on GPUs and float32 on CPUs (replies that do not change with the load).",
    )
    kv_cache_gb: float = Field(default=2.0, gt=0, description="KV cache size on CPU (VLLM_CPU_KVCACHE_SPACE).")
    gpu_memory_utilization: float = Field(default=0.85, gt=0, le=1, description="Fraction of GPU memory vLLM may take.")
    cpu_threads: int = Field(default=0, ge=0, description="Threads for the CPU engine; 0 = every core.")
    cpu_preload: bool = Field(
        default=True, description="Preload tcmalloc and Intel OpenMP into the CPU engine where installed (LD_PRELOAD)."
    )
    tensor_parallel_size: int = Field(default=1, ge=1, description="GPUs one replica spreads the model over.")
    max_num_seqs: int = Field(default=64, ge=1, description="Requests decoded in one batch.")
    fast_lora: bool = Field(
        default=True,
        description="Grouped LoRA ops and a compiled model on vLLM's CPU engine (this project's vLLM plugin).",
    )
    adapter_weights: AdapterWeights = Field(
        default="int8",
        description="With fast_lora and a float32 engine: how adapters are kept for the LoRA kernel built with "
        "the C++ compiler at the first start, widened in the CPU's registers; int8 (a scale per row: a quarter "
        "of the bytes a decoding step reads in float32), float16 (half), or float32 copies without the kernel.",
    )

    # Background training (the job queue is StoreSettings.queue_url)
    train: bool = Field(
        default=True,
        description="Start a training worker beside the server; off (--no-train) for a replica that only serves "
        "while `persona worker` processes elsewhere take the jobs.",
    )
    auto_train: bool = Field(
        default=True,
        description="Train a persona by itself when its logs appear or change (watched folder, start-up); off: "
        "only `persona train`, the page's Train button or the API queue a run.",
    )
    train_threads: int = Field(
        default=0,
        ge=0,
        description="Torch threads of the worker's training runs; 0 = every core, as for `persona worker` "
        "(serving is kept fast by pausing training while the server generates, not by idle cores).",
    )
    train_yield_share: float = Field(
        default=0.1,
        ge=0.0,
        le=1.0,
        description="While this server is generating, the share of the time its worker's training runs "
        "(0: training waits until nobody is chatting; 1: training never pauses).",
    )
    watch_settle_s: float = Field(
        default=3.0,
        gt=0,
        le=600,
        description="Seconds a persona folder must stay unchanged before a change starts training.",
    )
    max_upload_mb: int = Field(default=512, ge=1, description="Largest file accepted by POST /v1/files, in MiB.")

    def worker_settings(self) -> WorkerSettings:
        """What the worker this server starts receives (handed on with ``to_env``): the store, its thread
        count and yield share, and this server's address, through which new versions are evaluated."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        return WorkerSettings(
            **{name: getattr(self, name) for name in StoreSettings.model_fields},
            train_threads=self.train_threads,
            yield_share=self.train_yield_share,
            eval_url=f"http://{host}:{self.port}/v1",
            eval_api_key=(self.api_keys or [None])[0],
        )
