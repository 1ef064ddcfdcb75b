"""``persona serve``: the API and the chat page over one engine, or (``--ray``) a fleet of engines.

Its flags are :class:`service.settings.ServeSettings`' fields, generated from the model: a setting is
added there, with its description, and becomes a flag and a ``PERSONA_*`` variable at once. The fleet's
own flags come the same way from :class:`service.fleet.settings.FleetSettings`.
"""

from __future__ import annotations

import logging
from typing import Any

import typer

from service.fleet.settings import FleetSettings
from service.settings import ServeSettings

from .common import build_settings, settings_flags

app = typer.Typer()


@app.command()
@settings_flags(ServeSettings)
@settings_flags(FleetSettings)
def serve(
    ray: bool = typer.Option(
        False,
        "--ray",
        help="Serve a fleet on Ray Serve: an ingress routing each persona to a replica that holds it, "
        "--replicas engine replicas, training left to `persona worker` processes on the queue.",
    ),
    **flags: Any,
) -> None:
    """Serve every persona through the OpenAI-compatible API and the chat page."""
    fleet_flags = {k: v for k, v in flags.items() if k in FleetSettings.model_fields}
    settings = build_settings(ServeSettings, **{k: v for k, v in flags.items() if k not in fleet_flags})
    if ray:
        serve_fleet(settings, build_settings(FleetSettings, **fleet_flags))
        return
    import uvicorn

    from service.app import create_app

    show_service_log()
    typer.echo(f"API:       http://{settings.host}:{settings.port}/v1")
    if settings.ui:
        typer.echo(f"Chat page: http://{settings.host}:{settings.port}/ui")
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="info")


def show_service_log() -> None:
    """The server's own lines (``persona.*`` loggers: the engine's adapter cache, the watcher, training
    jobs) on stderr at INFO, beside uvicorn's; other libraries keep their own levels."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s:     %(name)s: %(message)s"))
    service = logging.getLogger("persona")
    service.setLevel(logging.INFO)
    service.addHandler(handler)


def serve_fleet(settings: ServeSettings, fleet: FleetSettings) -> None:
    """Deploy the fleet and keep it up until interrupted. This process does for the fleet what a single
    server does beside its engine: it watches the personas folder and queues training for logs that
    changed, and with training on it keeps one `persona worker` running (more can run on any machine
    sharing the store and the queue)."""
    import asyncio

    from ray import serve

    from service.fleet.app import start_fleet

    try:
        start_fleet(settings, fleet)
        typer.echo(f"API:       http://{settings.host}:{settings.port}/v1 ({fleet.replicas} engine replicas on Ray)")
        asyncio.run(_train_beside(settings))
    except KeyboardInterrupt:
        pass
    finally:
        serve.shutdown()


async def _train_beside(settings: ServeSettings) -> None:
    """The folder watcher and the worker (service.background), until SIGINT or SIGTERM."""
    import asyncio
    import signal

    from service.background import BackgroundTraining
    from store.registry import PersonaStore

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    training = BackgroundTraining(settings, PersonaStore(settings.personas_dir))
    await training.start()
    try:
        await stop.wait()
    finally:
        await training.stop()
