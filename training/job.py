"""One training job in its own process: ``python -m training.job <job id>`` (started by the worker).

It trains the job's persona from its logs, publishes the new version (or keeps the live one when the
logs did not change, or when a pinned persona was changed automatically), and writes the outcome and
progress into the job record. Errors in the data or settings end the job ``failed`` with the reason;
anything else ends the process and the worker records how it died.
"""

from __future__ import annotations

import sys
import time

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from store.adapters import is_pinned
from store.errors import StoreError
from store.fingerprint import logs_fingerprint, write_seen
from store.jobs import Job, JobError, JobProgress, JobStore, this_process
from store.registry import LOGS_DIR, PersonaStore
from store.settings import StoreSettings

from .config import TrainingError
from .ingest import IngestError


class JobSettings(StoreSettings):
    """What the worker passes to a training process through ``PERSONA_*`` variables."""

    model_config = SettingsConfigDict(env_prefix="PERSONA_", extra="ignore", use_attribute_docstrings=True)

    train_threads: int = Field(default=0, ge=0)
    """Torch threads; 0 = every core."""


def _progress_writer(jobs: JobStore, job_id: str):
    """An ``on_step`` callback that keeps the job's progress and heartbeat current (at most 1/s)."""
    last = [0.0]

    def on_step(info) -> None:
        now = time.monotonic()
        if now - last[0] < 1.0 and info.step < info.total_steps:
            return
        last[0] = now
        progress = JobProgress(step=info.step, total_steps=info.total_steps, train_loss=info.train_loss,
                               eval_loss=info.eval_loss, tokens_per_s=info.tokens_per_s, eta_s=info.eta_s)
        jobs.update(job_id, progress=progress, **this_process())

    return on_step


def _skip_reason(settings: StoreSettings, job: Job) -> str | None:
    """Why an automatic job need not train: the persona is pinned, or its examples did not change."""
    from .run import needs_training

    persona = PersonaStore(settings.personas_dir).get(job.persona)
    if not job.automatic:
        return None
    if is_pinned(persona.path):
        return "unchanged: the persona is pinned to its live version"
    if not needs_training(settings, persona):
        return "unchanged: the live version was trained on these examples"
    return None


def run(settings: JobSettings, job_id: str) -> Job:
    from .run import config_for, train_persona

    jobs = JobStore(settings.personas_dir)
    job = jobs.update(job_id, **this_process())
    persona_path = PersonaStore(settings.personas_dir).get(job.persona).path
    # What this run sees; a change after this point queues another job.
    write_seen(persona_path, logs_fingerprint(persona_path / LOGS_DIR))
    try:
        skip = _skip_reason(settings, job)
        if skip:
            jobs.log(job_id, skip)
            return jobs.update(job_id, status="succeeded", outcome="unchanged", finished_at=time.time())
        persona = PersonaStore(settings.personas_dir).get(job.persona)
        config = config_for(persona, job.overrides)
        if settings.train_threads and "threads" not in job.overrides:
            config = config.replace(threads=settings.train_threads)
        result = train_persona(
            settings, job.persona, config, max_lora_rank=settings.max_lora_rank, resume=True, progress=False,
            on_step=_progress_writer(jobs, job_id), make_live=not is_pinned(persona.path), force=job.force,
        )
    except (TrainingError, IngestError, StoreError) as exc:
        jobs.log(job_id, str(exc), level="error")
        return jobs.update(job_id, status="failed", finished_at=time.time(),
                           error=JobError(code="invalid_training_data" if isinstance(exc, IngestError) else "training_failed",
                                          message=str(exc)))
    outcome = "held back" if result.held_back else "published"
    jobs.log(job_id, f"{outcome} v{result.version}", data={"eval_loss": result.eval_loss_after,
                                                           "train_loss": result.train_loss})
    return jobs.update(job_id, status="succeeded", outcome=outcome, version=result.version, finished_at=time.time(),
                       trained_tokens=int(result.tokens.get("seen_tokens", 0)))


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m training.job <job id>", file=sys.stderr)
        return 2
    job = run(JobSettings(), args[0])
    return 0 if job.status == "succeeded" else 1


if __name__ == "__main__":
    sys.exit(main())
