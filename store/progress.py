"""Training progress of a persona, written by the trainer and read by the server's status endpoint.

One small JSON file, ``adapters/.work/progress.json``, replaced atomically on every update.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from .adapters import adapters_root
from .files import atomic_write, pid_alive

WORK_DIR = ".work"
PROGRESS_FILE = "progress.json"


class TrainingProgress(BaseModel):
    """Where a run stands: what the training loop reports after each step, as the server shows it."""

    state: Literal["running", "done", "failed"]
    step: int = 0
    total_steps: int = 0
    epoch: float = 0.0
    train_loss: float | None = None
    eval_loss: float | None = None
    best_eval_loss: float | None = None
    tokens_per_s: float | None = None
    elapsed_s: float | None = None
    eta_s: float | None = None
    message: str = ""
    pid: int = Field(default_factory=os.getpid)
    updated_at: float = Field(default_factory=time.time)

    @property
    def fraction(self) -> float:
        return self.step / self.total_steps if self.total_steps else 0.0


def work_dir(persona_path: Path) -> Path:
    return adapters_root(persona_path) / WORK_DIR


def write_progress(persona_path: Path, progress: TrainingProgress) -> None:
    folder = work_dir(persona_path)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(folder / PROGRESS_FILE, progress.model_dump_json())


def read_progress(persona_path: Path) -> TrainingProgress | None:
    """The last progress written; a 'running' record whose process died reads as 'failed'."""
    path = work_dir(persona_path) / PROGRESS_FILE
    try:
        progress = TrainingProgress.model_validate_json(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if progress.state == "running" and not pid_alive(progress.pid):
        progress = progress.model_copy(update={"state": "failed", "message": "the training process stopped"})
    return progress
