"""``persona warm``: start the engine once and stop it, so later starts reuse its compiled model."""

from __future__ import annotations

import asyncio
from typing import Any

import typer

from service.settings import ServeSettings

from .common import build_settings, settings_flags

app = typer.Typer()


@app.command()
@settings_flags(ServeSettings)
def warm(**flags: Any) -> None:
    """Start the engine with these serving settings, answer one greedy request, and stop.

    The first start on a CPU compiles the model; every later ``persona serve`` with the same settings
    reuses that compilation. ``make run`` runs this once per install."""
    from service.warmup import warm_engine

    settings = build_settings(ServeSettings, **flags)
    typer.echo("starting the engine once (the first start compiles the model; later starts reuse it)")
    warmed = asyncio.run(warm_engine(settings))
    typer.echo(f"engine ready in {warmed.start_s:.0f} s, first reply in {warmed.first_reply_s:.1f} s")
