"""``persona serve``: the API and the chat page over one engine, or (``--ray``) a fleet of engines.

Its flags are :class:`service.settings.ServeSettings`' fields, generated from the model: a setting is
added there, with its description, and becomes a flag and a ``PERSONA_*`` variable at once. The fleet's
own flags come the same way from :class:`service.fleet.settings.FleetSettings`.
"""

from __future__ import annotations

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

    typer.echo(f"API:       http://{settings.host}:{settings.port}/v1")
    if settings.ui:
        typer.echo(f"Chat page: http://{settings.host}:{settings.port}/ui")
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="info")


def serve_fleet(settings: ServeSettings, fleet: FleetSettings) -> None:
    """Deploy the fleet and keep it up until interrupted; with training on, one `persona worker` runs
    beside this command to take the queue's jobs (more can run on any machine sharing the store)."""
    import signal
    import subprocess
    import sys
    import time

    from ray import serve

    from service.fleet.app import start_fleet

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # a stop request shuts the fleet down too
    worker = None
    if settings.train:
        env = settings.worker_settings().child_env()
        worker = subprocess.Popen([sys.executable, "-m", "cli.main", "worker"], env=env)
    try:
        start_fleet(settings, fleet)
        typer.echo(f"API:       http://{settings.host}:{settings.port}/v1 ({fleet.replicas} engine replicas on Ray)")
        while True:
            time.sleep(3600)
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        if worker is not None:
            worker.terminate()
            worker.wait(timeout=30)
        serve.shutdown()
