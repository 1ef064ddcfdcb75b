"""``persona augment`` and ``persona review``: generated examples for a thin persona, and their review."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .common import build_settings, fail

app = typer.Typer()


@app.command()
def augment(
    name: str,
    n: int = typer.Option(200, "--n", min=1, max=5000, help="How many examples to generate."),
    generator_url: Optional[str] = typer.Option(
        None, help="An OpenAI-compatible API root (default: this service, started for the run)."
    ),
    generator_model: Optional[str] = typer.Option(
        None, help="Model at the generator (default: the persona's live version, or the base model with the full card)."
    ),
    batch_size: int = typer.Option(20, min=1, max=100, help="Examples per batch (each batch is reviewed as one)."),
    seed: int = typer.Option(0, help="Seed for the few-shot choice and sampling."),
    personas_dir: Optional[Path] = typer.Option(None, help="Personas folder."),
    base_model: Optional[str] = typer.Option(None, help="'bundled', a folder or a Hugging Face id."),
) -> None:
    """Generate examples in the persona's voice into personas/<name>/synthetic/ for review."""
    from contextlib import nullcontext

    from store.base_model import resolve_base_model
    from store.errors import StoreError
    from store.registry import PersonaStore
    from store.settings import StoreSettings
    from training.augment import augment as run_augment
    from training.fidelity.server import served
    from training.ingest import IngestError, persona_examples

    settings = build_settings(StoreSettings, personas_dir=personas_dir, base_model=base_model)
    try:
        persona = PersonaStore(settings.personas_dir).get(name)
        examples = persona_examples(persona)
        base = resolve_base_model(settings.base_model, settings.cache_dir, settings.allow_download)
        with nullcontext(generator_url) if generator_url else served(settings) as url:
            report = run_augment(
                persona,
                examples.train,
                url,
                n=n,
                base_id=base.id,
                generator_model=generator_model,
                batch_size=batch_size,
                seed=seed,
                say=typer.echo,
            )
    except (StoreError, IngestError, ValueError) as exc:
        fail(str(exc))
    rejected = ", ".join(f"{count} {reason}" for reason, count in report.rejected.most_common()) or "none"
    typer.echo(
        f"{name}: {report.generated} generated, {report.pending} waiting for review "
        f"(`persona review {name}`), rejected automatically: {rejected}"
    )


@app.command()
def review(
    name: str,
    personas_dir: Optional[Path] = typer.Option(None, help="Personas folder."),
) -> None:
    """Accept, edit or reject pending generated examples, a batch at a time."""
    from store.errors import StoreError
    from store.registry import PersonaStore
    from store.settings import StoreSettings
    from store.synthetic import all_examples
    from store.synthetic import review as set_review

    settings = build_settings(StoreSettings, personas_dir=personas_dir)
    try:
        persona = PersonaStore(settings.personas_dir).get(name)
    except StoreError as exc:
        fail(str(exc))
    pending = [e for e in all_examples(persona.path) if e.status == "pending"]
    if not pending:
        typer.echo(f"{name}: nothing waiting for review")
        return
    typer.echo(
        f"{len(pending)} examples to review. [a]ccept [e]dit [r]eject [s]kip, [A]ccept the rest of this batch, [q]uit"
    )
    accept_batch = None
    for example in pending:
        if accept_batch == example.batch:
            set_review(persona.path, example.id, "accepted")
            continue
        typer.echo(
            f"\n--- batch {example.batch}, {example.id}\nUser: {example.prompt}\n{persona.title}: {example.reply}"
        )
        choice = typer.prompt("a/e/r/s/A/q", default="s")
        if choice == "q":
            break
        if choice == "A":
            accept_batch = example.batch
            set_review(persona.path, example.id, "accepted")
        elif choice == "a":
            set_review(persona.path, example.id, "accepted")
        elif choice == "e":
            set_review(persona.path, example.id, "accepted", reply=typer.prompt("reply", default=example.reply))
        elif choice == "r":
            set_review(persona.path, example.id, "rejected", reason=typer.prompt("reason", default="by review"))
    counts = {s: sum(e.status == s for e in all_examples(persona.path)) for s in ("accepted", "pending", "rejected")}
    typer.echo(f"{name}: " + ", ".join(f"{v} {k}" for k, v in counts.items()))
    if counts["accepted"]:
        typer.echo(
            f"The next training run (`persona train {name}`) uses the accepted ones, at a lower weight than the "
            "real lines (--synthetic-weight)."
        )
