"""``persona serve``: the API and the chat page over one engine.

Its flags are :class:`service.settings.ServeSettings`' fields, generated from the model: a setting is
added there, with its description, and becomes a flag and a ``PERSONA_*`` variable at once.
"""

from __future__ import annotations

from typing import Any

import typer

from service.settings import ServeSettings

from .common import build_settings, settings_flags

app = typer.Typer()


@app.command()
@settings_flags(ServeSettings)
def serve(**flags: Any) -> None:
    """Serve every persona through the OpenAI-compatible API and the chat page."""
    import uvicorn

    from service.app import create_app

    settings = build_settings(ServeSettings, **flags)
    typer.echo(f"API:       http://{settings.host}:{settings.port}/v1")
    if settings.ui:
        typer.echo(f"Chat page: http://{settings.host}:{settings.port}/ui")
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="info")
