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


def _settings(cls: type, **flags: Any) -> Any:
    """Build a settings object from the flags given (environment and defaults fill the rest); a bad
    value ends the command with a message naming the flag and its environment variable."""
    from pydantic import ValidationError

    try:
        return cls(**_given(**flags))
    except ValidationError as error:
        problems = []
        for item in error.errors():
            field = str(item["loc"][0]) if item["loc"] else "?"
            problems.append(f"--{field.replace('_', '-')} / PERSONA_{field.upper()}: {item['msg']}, got {item['input']!r}")
        _fail("; ".join(problems))


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

    settings = _settings(
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


@app.command("list")
def list_personas(personas_dir: Optional[Path] = typer.Option(None, help="Personas folder.")) -> None:
    """List personas with their live version."""
    from store.registry import PersonaStore
    from store.settings import StoreSettings

    settings = _settings(StoreSettings, personas_dir=personas_dir)
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

    settings = _settings(StoreSettings, personas_dir=personas_dir)
    try:
        persona = PersonaStore(settings.personas_dir).get(name)
        set_live(persona.path, check_version(version))
    except StoreError as exc:
        _fail(str(exc))
    typer.echo(f"{name}: {version} is live")


@app.command()
def ingest(
    name: str,
    personas_dir: Optional[Path] = typer.Option(None, help="Personas folder."),
    base_model: Optional[str] = typer.Option(None, help="Base model whose tokenizer counts the tokens."),
) -> None:
    """Report what the persona's logs give: formats, speakers, turns, sessions, examples, tokens. Changes nothing."""
    from store.errors import StoreError
    from store.registry import PersonaStore
    from store.settings import StoreSettings
    from training.ingest import ExampleSettings, IngestError, TooFewExamples, build_examples, format_report, load_logs
    from training.tokens import count_tokens

    settings = _settings(StoreSettings, personas_dir=personas_dir, base_model=base_model)
    try:
        persona = PersonaStore(settings.personas_dir).get(name)
        result = load_logs(persona.logs_dir)
        examples = build_examples(result, persona.name, persona.card, ExampleSettings.from_overrides(persona.card.training))
    except TooFewExamples as exc:
        typer.echo(format_report(result, exc.examples, error=str(exc)))
        raise typer.Exit(1)
    except IngestError as exc:
        typer.echo(format_report(result, None, error=str(exc)))
        raise typer.Exit(1)
    except (StoreError, ValueError) as exc:
        _fail(str(exc))
    typer.echo(format_report(result, examples, tokens=count_tokens(settings, examples)))


@app.command()
def train(
    name: Optional[str] = typer.Argument(None, help="The persona to train."),
    all_: bool = typer.Option(False, "--all", help="Every persona whose logs changed since its live version."),
    qlora: Optional[bool] = typer.Option(None, "--qlora/--no-qlora", help="Train on a 4-bit base (bitsandbytes)."),
    resume: bool = typer.Option(False, help="Continue from the last checkpoint of an interrupted run."),
    epochs: Optional[int] = typer.Option(None, help="Passes over the data (default: chosen from its size)."),
    max_steps: Optional[int] = typer.Option(None, help="Stop after this many optimizer steps."),
    learning_rate: Optional[float] = typer.Option(None, help="Peak learning rate."),
    lora_r: Optional[int] = typer.Option(None, help="LoRA rank."),
    seed: Optional[int] = typer.Option(None, help="Random seed."),
    personas_dir: Optional[Path] = typer.Option(None, help="Personas folder."),
    base_model: Optional[str] = typer.Option(None, help="'bundled', a folder or a Hugging Face id."),
) -> None:
    """Train a persona's adapter from its logs and publish it as the next live version."""
    from store.errors import StoreError
    from store.registry import PersonaStore
    from store.settings import StoreSettings
    from training.config import TrainingError
    from training.ingest import IngestError
    from training.run import config_for, needs_training, train_persona

    if bool(name) == all_:
        _fail("name one persona or pass --all")
    settings = _settings(StoreSettings, personas_dir=personas_dir, base_model=base_model)
    store = PersonaStore(settings.personas_dir)
    flags = _given(qlora=qlora, epochs=epochs, max_steps=max_steps, learning_rate=learning_rate, lora_r=lora_r, seed=seed)
    failures = 0
    try:
        if all_:
            personas, problems = store.scan()
            for bad, message in problems.items():
                typer.secho(f"{bad}: skipped: {message}", fg=typer.colors.YELLOW, err=True)
            names = [p.name for p in personas if needs_training(settings, p)]
            typer.echo(f"to train: {', '.join(names) or 'none (every live version matches its logs)'}")
        else:
            names = [name]
    except (StoreError, TrainingError, IngestError) as exc:
        _fail(str(exc))
    for persona_name in names:
        try:
            config = config_for(store.get(persona_name), flags)
            result = train_persona(settings, persona_name, config, max_lora_rank=settings.max_lora_rank, resume=resume)
        except (StoreError, TrainingError, IngestError) as exc:
            typer.secho(f"{persona_name}: {exc}", fg=typer.colors.RED, err=True)
            failures += 1
            continue
        typer.echo(
            f"{persona_name}: published v{result.version} ({result.steps} steps, {result.duration_s:.0f} s, "
            f"{result.tokens_per_s:.0f} tokens/s); held-out loss {_fmt(result.eval_loss_before)} -> "
            f"{_fmt(result.eval_loss_after)}"
        )
    if failures:
        raise typer.Exit(1)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


@app.command("import-card")
def import_card(
    name: str,
    card: Path = typer.Argument(..., help="A SillyTavern character card: V2 JSON or PNG."),
    personas_dir: Optional[Path] = typer.Option(None, help="Personas folder."),
    force: bool = typer.Option(False, help="Replace an existing persona.yaml."),
) -> None:
    """Seed a persona's persona.yaml from a SillyTavern character card."""
    from store.card import CARD_FILE, write_card
    from store.errors import StoreError
    from store.registry import PersonaStore
    from store.settings import StoreSettings
    from training.ingest import import_card as read_card

    settings = _settings(StoreSettings, personas_dir=personas_dir)
    try:
        imported = read_card(card)
        persona = PersonaStore(settings.personas_dir).create(name)
        if (persona.path / CARD_FILE).exists() and not force:
            _fail(f"{persona.path / CARD_FILE} exists; pass --force to replace it")
        path = write_card(persona.path, imported)
    except (StoreError, ValueError) as exc:
        _fail(str(exc))
    typer.echo(f"wrote {path}; drop the character's chat logs into {persona.logs_dir}")


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
