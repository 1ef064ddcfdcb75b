"""``persona list`` and ``persona rollback``: the store as it is on disk."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .common import build_settings, fail

app = typer.Typer()


@app.command("list")
def list_personas(personas_dir: Optional[Path] = typer.Option(None, help="Personas folder.")) -> None:
    """List personas with their live version."""
    from store.registry import PersonaStore
    from store.settings import StoreSettings

    settings = build_settings(StoreSettings, personas_dir=personas_dir)
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

    settings = build_settings(StoreSettings, personas_dir=personas_dir)
    try:
        persona = PersonaStore(settings.personas_dir).get(name)
        set_live(persona.path, check_version(version))
    except StoreError as exc:
        fail(str(exc))
    typer.echo(f"{name}: {version} is live")
