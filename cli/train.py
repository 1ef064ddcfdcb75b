"""``persona ingest``, ``persona train`` and ``persona import-card``: the training side."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .common import build_settings, fail, given

app = typer.Typer()


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

    settings = build_settings(StoreSettings, personas_dir=personas_dir, base_model=base_model)
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
        fail(str(exc))
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
        fail("name one persona or pass --all")
    settings = build_settings(StoreSettings, personas_dir=personas_dir, base_model=base_model)
    store = PersonaStore(settings.personas_dir)
    flags = given(qlora=qlora, epochs=epochs, max_steps=max_steps, learning_rate=learning_rate, lora_r=lora_r, seed=seed)
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
        fail(str(exc))
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

    settings = build_settings(StoreSettings, personas_dir=personas_dir)
    try:
        imported = read_card(card)
        persona = PersonaStore(settings.personas_dir).create(name)
        if (persona.path / CARD_FILE).exists() and not force:
            fail(f"{persona.path / CARD_FILE} exists; pass --force to replace it")
        path = write_card(persona.path, imported)
    except (StoreError, ValueError) as exc:
        fail(str(exc))
    typer.echo(f"wrote {path}; drop the character's chat logs into {persona.logs_dir}")
