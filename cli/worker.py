"""``persona worker``: the training worker, on this machine or any other that sees the store."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import typer

from .common import build_settings

app = typer.Typer()


@app.command()
def worker(
    personas_dir: Optional[Path] = typer.Option(None, help="Personas folder [PERSONA_PERSONAS_DIR]."),
    queue_url: Optional[str] = typer.Option(None, help="'sqlite' or a redis:// address [PERSONA_QUEUE_URL]."),
    base_model: Optional[str] = typer.Option(
        None, help="'bundled', a folder or a Hugging Face id [PERSONA_BASE_MODEL]."
    ),
    train_threads: Optional[int] = typer.Option(None, help="Torch threads per training run, 0 = every core."),
) -> None:
    """Take training jobs from the queue, one at a time, until stopped."""
    from training.worker import Worker, WorkerSettings

    settings = build_settings(
        WorkerSettings,
        personas_dir=personas_dir,
        queue_url=queue_url,
        base_model=base_model,
        train_threads=train_threads,
    )
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    Worker(settings).run()
