"""One training job in its own process: ``python -m training.job <job id>`` (started by the worker).

It trains the job's persona from its logs, publishes the new version (or keeps the live one when the
logs did not change, or when a pinned persona was changed automatically), and writes the outcome and
progress into the job record, with a metrics event per reported step. Errors in the data or settings
end the job ``failed`` with the reason; anything else ends the process and the worker records how it
died. A cancel reaches it as SIGTERM from the worker: the run stops where it is and the persona's live
version stays what it was.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

from store.adapters import is_pinned, list_versions, read_live, set_live
from store.errors import BaseModelMismatch, StoreError
from store.fingerprint import logs_fingerprint, write_seen
from store.jobs import Job, JobError, JobStore, this_process
from store.progress import TrainingProgress, write_progress
from store.registry import LOGS_DIR, PersonaStore
from store.settings import StoreSettings, WorkerSettings

from .config import TrainingError
from .ingest import IngestError


JobSettings = WorkerSettings
"""What a training process receives from the worker (its ``to_env``), read back from ``PERSONA_*``."""


def _progress_writer(jobs: JobStore, job_id: str):
    """An ``on_step`` callback that keeps the job's progress and heartbeat current (at most 1/s), and
    adds a metrics event per reported step, as OpenAI's jobs list them."""
    last = {"at": 0.0, "step": 0}

    def on_step(info: TrainingProgress) -> None:
        now = time.monotonic()
        if now - last["at"] < 1.0 and info.step < info.total_steps:
            return
        last["at"] = now
        jobs.update(job_id, progress=info, **this_process())
        if info.step > last["step"]:
            last["step"] = info.step
            jobs.log(job_id, _step_message(info), data=_step_metrics(info))

    return on_step


def _step_message(info: TrainingProgress) -> str:
    losses = [f"training loss={info.train_loss:.4f}"] if info.train_loss is not None else []
    if info.eval_loss is not None:
        losses.append(f"validation loss={info.eval_loss:.4f}")
    return f"Step {info.step}/{info.total_steps}" + (": " + ", ".join(losses) if losses else "")


def _step_metrics(info: TrainingProgress) -> dict[str, float | int]:
    metrics: dict[str, float | int] = {"step": info.step, "total_steps": info.total_steps}
    if info.train_loss is not None:
        metrics["train_loss"] = info.train_loss
    if info.eval_loss is not None:
        metrics["valid_loss"] = info.eval_loss
    return metrics


class Stopped(BaseException):
    """SIGTERM reached the training process: the worker stops it after a cancel, or is itself ending.

    A ``BaseException``, so no handler for errors in the data or settings takes it for one of those.
    """


def _raise_stopped(signum: int, frame: object) -> None:
    raise Stopped()


def _end_stopped(
    jobs: JobStore, job_id: str, persona_path: Path, live_before: int | None, versions_before: list[int]
) -> Job:
    """End a run that a cancel stopped, with the persona's live version as it was before the run.

    SIGTERM without a cancel (the worker itself ending) ends the process by that signal, so the
    worker's record of how it ended stays the same.
    """
    if not jobs.get(job_id).cancel_requested:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
    message = "Training stopped by the cancel"
    live = read_live(persona_path)
    if live != live_before and live_before is not None:
        set_live(persona_path, live_before)
    elif live != live_before:
        message += f"; v{live} went live before the cancel reached it"
    written = [v for v in list_versions(persona_path) if v not in versions_before]
    if written:
        message += f"; v{written[0]} was written before the cancel reached it and is not the job's result"
    write_progress(persona_path, TrainingProgress(state="failed", message="cancelled"))
    jobs.log(job_id, message)
    return jobs.cancel(job_id)


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


BATCH_TOKENS_PER_EXAMPLE = 256
"""The fine-tuning API's ``batch_size`` counts examples; batches here are packed by tokens, so a batch
of N examples becomes a budget of N x this many tokens."""


def _config(settings: JobSettings, persona, job: Job):
    """The run's settings: card, the job's overrides, the fine-tuning API's hyperparameters, threads."""
    from .run import config_for

    config = config_for(persona, job.overrides)
    hyper = job.extra.get("hyperparameters") or {}
    changes = {}
    if isinstance(hyper.get("learning_rate_multiplier"), (int, float)):
        changes["learning_rate"] = config.learning_rate * hyper["learning_rate_multiplier"]
    if isinstance(hyper.get("batch_size"), int):
        changes["batch_tokens"] = hyper["batch_size"] * BATCH_TOKENS_PER_EXAMPLE
    if settings.train_threads and "threads" not in job.overrides:
        changes["threads"] = settings.train_threads
    return config.replace(**changes) if changes else config


def _train(settings: JobSettings, jobs: JobStore, job: Job, persona, config):
    """Train, resuming an interrupted run's checkpoint when it was made from the same data and settings."""
    from .checkpoint import CheckpointMismatch
    from .run import train_persona

    def attempt(resume: bool):
        return train_persona(
            settings,
            job.persona,
            config,
            max_lora_rank=settings.max_lora_rank,
            resume=resume,
            progress=False,
            on_step=_progress_writer(jobs, job.id),
            make_live=not is_pinned(persona.path),
            eval_url=settings.eval_url,
            force=job.force,
        )

    try:
        return attempt(resume=True)
    except (CheckpointMismatch, BaseModelMismatch) as exc:
        jobs.log(job.id, f"Starting over: {exc}", level="warn")
        return attempt(resume=False)


def run(settings: JobSettings, job_id: str) -> Job:
    jobs = JobStore(settings.personas_dir)
    job = jobs.update(job_id, **this_process())
    persona_path = PersonaStore(settings.personas_dir).get(job.persona).path
    # What this run sees; a change after this point queues another job.
    write_seen(persona_path, logs_fingerprint(persona_path / LOGS_DIR))
    live_before, versions_before = read_live(persona_path), list_versions(persona_path)
    try:
        skip = _skip_reason(settings, job)
        if skip:
            jobs.log(job_id, skip)
            return jobs.update(job_id, status="succeeded", outcome="unchanged", finished_at=time.time())
        persona = PersonaStore(settings.personas_dir).get(job.persona)
        config = _config(settings, persona, job)
        result = _train(settings, jobs, job, persona, config)
    except (TrainingError, IngestError, StoreError) as exc:
        jobs.log(job_id, str(exc), level="error")
        return jobs.update(
            job_id,
            status="failed",
            finished_at=time.time(),
            error=JobError(
                code="invalid_training_data" if isinstance(exc, IngestError) else "training_failed", message=str(exc)
            ),
        )
    except Stopped:
        return _end_stopped(jobs, job_id, persona_path, live_before, versions_before)
    if jobs.get(job_id).cancel_requested:  # the cancel came while the version was being published
        return _end_stopped(jobs, job_id, persona_path, live_before, versions_before)
    _log_result(jobs, job_id, result)
    outcome = "held back" if result.held_back else "published"
    return jobs.update(
        job_id,
        status="succeeded",
        outcome=outcome,
        version=result.version,
        finished_at=time.time(),
        trained_tokens=int(result.tokens.get("seen_tokens", 0)),
    )


def _log_result(jobs: JobStore, job_id: str, result) -> None:
    """The job's last events: the held-out loss before and after training, and what was published."""
    if result.eval_loss_before is not None and result.eval_loss_after is not None:
        jobs.log(
            job_id,
            f"Held-out loss {result.eval_loss_before:.4f} before training, {result.eval_loss_after:.4f} after",
            data={
                "step": result.steps,
                "valid_loss": result.eval_loss_after,
                "valid_loss_before": result.eval_loss_before,
            },
        )
    outcome = "held back" if result.held_back else "published"
    jobs.log(
        job_id,
        f"{outcome} v{result.version}" + (f": {'; '.join(result.gate_reasons)}" if result.gate_reasons else ""),
        data={"step": result.steps, "train_loss": result.train_loss, "valid_loss": result.eval_loss_after},
    )


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m training.job <job id>", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _raise_stopped)
    job = run(JobSettings(), args[0])
    return 0 if job.status in ("succeeded", "cancelled") else 1


if __name__ == "__main__":
    sys.exit(main())
