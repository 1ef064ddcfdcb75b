"""``persona ingest``, ``persona train`` and ``persona import-card``: the training side."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional, TypeVar

import typer

from .common import build_settings, fail, given

Command = TypeVar("Command", bound=Callable[..., Any])

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
        examples = build_examples(
            result, persona.name, persona.card, ExampleSettings.from_overrides(persona.card.training)
        )
    except TooFewExamples as exc:
        typer.echo(format_report(result, exc.examples, error=str(exc)))
        raise typer.Exit(1) from None
    except IngestError as exc:
        typer.echo(format_report(result, None, error=str(exc)))
        raise typer.Exit(1) from None
    except (StoreError, ValueError) as exc:
        fail(str(exc))
    typer.echo(format_report(result, examples, tokens=count_tokens(settings, examples)))


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, tuple):
        return ",".join(value)
    return "unset" if value is None else str(value)


def setting_flags(command: Command) -> Command:
    """Give ``command`` one flag per training setting (:class:`training.config.TrainConfig`), passed as
    keyword arguments; the help is the setting's docstring, so a new setting is a documented flag."""
    from training.config import TrainConfig, flag_name, setting_type

    flags = []
    for name, info in TrainConfig.model_fields.items():
        kind, _ = setting_type(name)
        help_text = " ".join((info.description or "").split()) + f" [default: {_shown(info.default)}]"
        flag = flag_name(name)
        if kind is bool:
            option = typer.Option(None, f"{flag}/--no-{flag[2:]}", help=help_text, show_default=False)
        else:
            option = typer.Option(None, flag, help=help_text, show_default=False)
        flag_type = str if kind is tuple else kind  # module lists are given comma-separated
        flags.append(
            inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=Optional[flag_type])
        )
    signature = inspect.signature(command)
    own = [p for p in signature.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    command.__signature__ = signature.replace(parameters=own + flags)  # type: ignore[attr-defined]
    return command


@app.command()
@setting_flags
def train(
    name: Optional[str] = typer.Argument(None, help="The persona to train."),
    all_: bool = typer.Option(False, "--all", help="Every persona whose logs changed since its live version."),
    resume: bool = typer.Option(False, help="Continue from the last checkpoint of an interrupted run."),
    personas_dir: Optional[Path] = typer.Option(None, help="Personas folder."),
    base_model: Optional[str] = typer.Option(None, help="'bundled', a folder or a Hugging Face id."),
    **settings: Any,
) -> None:
    """Train a persona's adapter from its logs and publish it as the next live version.

    Every training setting has a flag; a flag wins over the persona's persona.yaml ``training:``.
    """
    from store.errors import StoreError
    from store.registry import PersonaStore
    from store.settings import StoreSettings
    from training.config import TrainingError
    from training.ingest import IngestError
    from training.run import config_for, needs_training, train_persona

    if bool(name) == all_:
        fail("name one persona or pass --all")
    settings_ = build_settings(StoreSettings, personas_dir=personas_dir, base_model=base_model)
    store = PersonaStore(settings_.personas_dir)
    flags = given(**settings)
    failures = 0
    try:
        if all_:
            personas, problems = store.scan()
            for bad, message in problems.items():
                typer.secho(f"{bad}: skipped: {message}", fg=typer.colors.YELLOW, err=True)
            names = [p.name for p in personas if needs_training(settings_, p)]
            typer.echo(f"to train: {', '.join(names) or 'none (every live version matches its logs)'}")
        else:
            names = [name]
    except (StoreError, TrainingError, IngestError) as exc:
        fail(str(exc))
    for persona_name in names:
        try:
            config = config_for(store.get(persona_name), flags)
            result = train_persona(
                settings_, persona_name, config, max_lora_rank=settings_.max_lora_rank, resume=resume
            )
        except (StoreError, TrainingError, IngestError) as exc:
            typer.secho(f"{persona_name}: {exc}", fg=typer.colors.RED, err=True)
            failures += 1
            continue
        typer.echo(
            f"{persona_name}: published v{result.version} ({result.steps} steps, {result.total_s:.0f} s, "
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
