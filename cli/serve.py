"""``persona serve``: the API and the chat page over one engine."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .common import build_settings

app = typer.Typer()


@app.command()
def serve(
    host: Optional[str] = typer.Option(None, help="Address to listen on [PERSONA_HOST, 127.0.0.1]."),
    port: Optional[int] = typer.Option(None, help="Port [PERSONA_PORT, 8000]."),
    personas_dir: Optional[Path] = typer.Option(None, help="Personas folder [PERSONA_PERSONAS_DIR, ./personas]."),
    base_model: Optional[str] = typer.Option(None, help="'bundled', a folder or a Hugging Face id [PERSONA_BASE_MODEL]."),
    max_loras: Optional[int] = typer.Option(None, help="Adapters in one batch [PERSONA_MAX_LORAS, 8]."),
    max_cpu_loras: Optional[int] = typer.Option(None, help="Adapters kept in memory [PERSONA_MAX_CPU_LORAS, 32]."),
    max_lora_rank: Optional[int] = typer.Option(None, help="Highest LoRA rank [PERSONA_MAX_LORA_RANK, 16]."),
    max_model_len: Optional[int] = typer.Option(None, help="Context length [PERSONA_MAX_MODEL_LEN, 2048]."),
    kv_cache_gb: Optional[float] = typer.Option(None, help="KV cache GiB on CPU [PERSONA_KV_CACHE_GB, 2]."),
    gpu_memory_utilization: Optional[float] = typer.Option(None, help="GPU memory fraction [0.85]."),
    dtype: Optional[str] = typer.Option(None, help="auto, float32, bfloat16 [PERSONA_DTYPE, auto]."),
    tensor_parallel_size: Optional[int] = typer.Option(None, help="GPUs per replica [1]."),
    max_num_seqs: Optional[int] = typer.Option(None, help="Requests in one batch [PERSONA_MAX_NUM_SEQS, 64]."),
    cpu_threads: Optional[int] = typer.Option(None, help="CPU engine threads, 0 = every core [PERSONA_CPU_THREADS, 0]."),
    cpu_preload: Optional[bool] = typer.Option(
        None, "--cpu-preload/--no-cpu-preload", help="Preload tcmalloc and Intel OpenMP into the CPU engine [PERSONA_CPU_PRELOAD, on]."),
    ui: Optional[bool] = typer.Option(None, "--ui/--no-ui", help="Mount the chat page at /ui."),
) -> None:
    """Serve every persona through the OpenAI-compatible API and the chat page."""
    import uvicorn

    from service.app import create_app
    from service.settings import ServeSettings

    settings = build_settings(
        ServeSettings,
        host=host, port=port, personas_dir=personas_dir, base_model=base_model, max_loras=max_loras,
        max_cpu_loras=max_cpu_loras, max_lora_rank=max_lora_rank, max_model_len=max_model_len,
        kv_cache_gb=kv_cache_gb, gpu_memory_utilization=gpu_memory_utilization, dtype=dtype,
        tensor_parallel_size=tensor_parallel_size, max_num_seqs=max_num_seqs, cpu_threads=cpu_threads,
        cpu_preload=cpu_preload, ui=ui,
    )
    typer.echo(f"API:       http://{settings.host}:{settings.port}/v1")
    if settings.ui:
        typer.echo(f"Chat page: http://{settings.host}:{settings.port}/ui")
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="info")
