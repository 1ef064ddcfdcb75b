"""``persona``: the one command-line entry point.

It is the only module that reaches both sides; each subcommand imports its side lazily so that
``persona ingest`` never loads vLLM and ``persona serve`` never loads the trainer.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Optional

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Fine-tune and serve chat personas.")


def _given(**values: Any) -> dict[str, Any]:
    """Only the flags the user set, so environment variables and defaults fill the rest."""
    return {key: value for key, value in values.items() if value is not None}


def _fail(message: str) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(1)


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
    ui: Optional[bool] = typer.Option(None, "--ui/--no-ui", help="Mount the chat page at /ui."),
) -> None:
    """Serve every persona through the OpenAI-compatible API and the chat page."""
    import uvicorn

    from service.app import create_app
    from service.settings import ServeSettings

    settings = ServeSettings(**_given(
        host=host, port=port, personas_dir=personas_dir, base_model=base_model, max_loras=max_loras,
        max_cpu_loras=max_cpu_loras, max_lora_rank=max_lora_rank, max_model_len=max_model_len,
        kv_cache_gb=kv_cache_gb, gpu_memory_utilization=gpu_memory_utilization, dtype=dtype,
        tensor_parallel_size=tensor_parallel_size, ui=ui,
    ))
    typer.echo(f"API:       http://{settings.host}:{settings.port}/v1")
    if settings.ui:
        typer.echo(f"Chat page: http://{settings.host}:{settings.port}/ui")
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="info")


@app.command("list")
def list_personas(personas_dir: Optional[Path] = typer.Option(None, help="Personas folder.")) -> None:
    """List personas with their live version."""
    from store.registry import PersonaStore
    from store.settings import StoreSettings

    settings = StoreSettings(**_given(personas_dir=personas_dir))
    personas, problems = PersonaStore(settings.personas_dir).scan()
    for persona in personas:
        live = f"v{persona.live}" if persona.live else "card only"
        versions = ", ".join(f"v{v}" for v in persona.versions) or "-"
        typer.echo(f"{persona.name:20} {persona.title:24} live: {live:10} versions: {versions}")
    for name, message in problems.items():
        typer.secho(f"{name:20} problem: {message}", fg=typer.colors.YELLOW)


@app.command()
def rollback(
    name: str,
    version: str = typer.Argument(..., help="The version to make live, e.g. v1."),
    personas_dir: Optional[Path] = typer.Option(None, help="Personas folder."),
) -> None:
    """Make an earlier version live again (the server picks it up on the next request)."""
    from store.adapters import set_live
    from store.errors import StoreError
    from store.names import check_version
    from store.registry import PersonaStore
    from store.settings import StoreSettings

    settings = StoreSettings(**_given(personas_dir=personas_dir))
    try:
        persona = PersonaStore(settings.personas_dir).get(name)
        set_live(persona.path, check_version(version))
    except StoreError as exc:
        _fail(str(exc))
    typer.echo(f"{name}: {version} is live")


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
